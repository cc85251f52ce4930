"""Issue 12's target on the corpus, through the real CLI at the default threshold.

Every malicious or malformed file is refused (exit 1 or 2), every benign file exits 0, no payload
runs while scanning, and no traceback is ever printed. Each file is scanned by its own
``weightvault scan FILE`` (the console script users run); the whole corpus folder also goes
through ``python -m weightvault scan``. Failures are collected and reported
together, one line per sample.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from scan_corpus import Sample, build_corpus

WEIGHTVAULT = str(Path(sys.executable).with_name("weightvault"))
MODULE_SCAN = [sys.executable, "-m", "weightvault", "scan"]
_BOX = re.compile(r"[\u2500-\u257f]+")


def _scan(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env,
                          stdin=subprocess.DEVNULL, check=False)


def _summary(proc: subprocess.CompletedProcess[str]) -> str:
    """The scanner's own words, squeezed onto one line for the failure report."""
    text = _BOX.sub(" ", proc.stdout + " " + proc.stderr)
    return " ".join(text.split())[:300]


def _problem(sample: Sample, proc: subprocess.CompletedProcess[str]) -> str | None:
    if "Traceback" in proc.stdout + proc.stderr:
        return f"{sample.name}: traceback printed (exit {proc.returncode})"
    if sample.malicious and proc.returncode not in (1, 2):
        return (f"{sample.name}: exit {proc.returncode}, must be refused (1 or 2) "
                f"[{sample.category or sample.note or sample.expect}]: {_summary(proc)}")
    if not sample.malicious and proc.returncode != 0:
        return f"{sample.name}: exit {proc.returncode}, benign must pass (0): {_summary(proc)}"
    return None


def test_default_verdict_refuses_every_malicious_and_passes_every_benign_file(
    corpus: list[Sample], corpus_root: Path
) -> None:
    """The target at the default threshold, one console-script run per file."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda s: _scan([WEIGHTVAULT, "scan", str(s.path)]), corpus))
    failures = [p for s, proc in zip(corpus, runs, strict=True) if (p := _problem(s, proc))]
    fired = sorted(p.name for p in (corpus_root / "markers").iterdir())
    if fired:
        failures.append(f"payload markers created while scanning: {fired}")
    assert not failures, f"{len(failures)} sample(s) miss the target:\n" + "\n".join(failures)


def test_refusals_name_the_payload(corpus: list[Sample]) -> None:
    """A refusal is for the right reason: the JSON report of each malicious file that has an
    expected subject (the import or record at fault; ``a|b``: either) mentions it."""
    named = [s for s in corpus if s.malicious and s.subject and s.expect != "error"]
    proc = _scan([WEIGHTVAULT, "scan", "--json", *[str(s.path) for s in named]])
    assert "Traceback" not in proc.stderr
    entries = {entry.get("path"): entry for entry in json.loads(proc.stdout)["files"]}
    missing = [f"{s.name}: no finding mentions {s.subject!r}" for s in named
               if not any(alt in json.dumps(entries.get(str(s.path), {}))
                          for alt in s.subject.split("|"))]
    assert not missing, "\n".join(missing)


def test_fail_on_dangerous_refuses_every_sample_that_runs_code_or_touches_files(
    corpus: list[Sample],
) -> None:
    """``--fail-on dangerous`` is the lenient gate: it still refuses every sample expected to be
    dangerous (code, imports by name, file writers and mappers, network), each for a dangerous
    finding or an error, never for being merely unknown."""
    dangerous = [s for s in corpus if s.malicious and s.expect == "dangerous"]
    assert len(dangerous) >= 150
    proc = _scan([WEIGHTVAULT, "scan", "--fail-on", "dangerous", "--json",
                  *[str(s.path) for s in dangerous]])
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    status = {entry["path"]: entry["status"] for entry in json.loads(proc.stdout)["files"]}
    missed = [f"{s.name}: {status.get(str(s.path))}" for s in dangerous
              if status.get(str(s.path)) not in ("dangerous", "error")]
    assert not missed, "\n".join(missed)
    (mapper,) = [s for s in dangerous if s.name == "dotted_torch_untyped_storage_from_file.pkl"]
    alone = _scan([WEIGHTVAULT, "scan", "--fail-on", "dangerous", str(mapper.path)])
    assert alone.returncode == 1 and "from_file" in alone.stdout


def test_whole_corpus_folder_through_the_module_entry_runs_nothing(
    corpus: list[Sample], corpus_root: Path
) -> None:
    """Folders: the malicious one is refused, the benign one passes, the module entry prints no
    traceback, and no payload ever runs."""
    malicious = _scan([*MODULE_SCAN, str(corpus_root / "malicious")])
    benign = _scan([*MODULE_SCAN, str(corpus_root / "benign")])
    everything = _scan([*MODULE_SCAN, "--workers", "2", str(corpus_root)])
    for proc in (malicious, benign, everything):
        assert "Traceback" not in proc.stdout + proc.stderr
    assert malicious.returncode in (1, 2)
    assert everything.returncode in (1, 2)
    assert benign.returncode == 0, _summary(benign)
    with_markers = [s for s in corpus if s.marker is not None]
    assert len(with_markers) >= 100
    assert list((corpus_root / "markers").iterdir()) == []


def test_corpus_size(corpus: list[Sample]) -> None:
    assert sum(s.malicious for s in corpus) >= 150
    assert sum(not s.malicious for s in corpus) >= 55
    names = [s.name for s in corpus]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    "name",
    [
        "reduce_os_system_p0.pkl",
        "stack_global_memo.pkl",
        "stack_global_text_strings.pkl",
        "dotted_harmless_module.pkl",
        "frame_short_declared.pkl",
        "payload_then_missing_memo.pkl",
        "timeit_timeit.pkl",
        "py2_builtin_eval.pkl",
        "io_fileio_create.pkl",
    ],
)
def test_payloads_are_live_when_really_unpickled(tmp_path: Path, name: str) -> None:
    """The older samples are honest too: the real unpickler (in a child process) runs them."""
    (sample,) = build_corpus(tmp_path, only={name})
    assert sample.marker is not None and not sample.marker.exists()
    code = (
        "import pickle,sys\n"
        "try:\n    pickle.load(open(sys.argv[1],'rb'))\nexcept Exception:\n    pass\n"
    )
    subprocess.run([sys.executable, "-c", code, str(sample.path)], check=True, cwd=tmp_path,
                   env={**os.environ, "PYTHONPATH": ""}, capture_output=True, timeout=60)
    assert sample.marker.exists(), "the payload did not run under the real unpickler"
    assert _scan([WEIGHTVAULT, "scan", str(sample.path)]).returncode in (1, 2)


def test_torch_load_runs_zip_and_legacy_payloads_but_scan_flags_them(tmp_path: Path) -> None:
    names = {
        "torch_zip_name_mismatch.pt", "torch_zip_bad_crc.pt", "torch_legacy_payload_sysinfo.pt"
    }
    samples = build_corpus(tmp_path, only=names)
    code = (
        "import sys,torch\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n        torch.load(path, weights_only=False)\n"
        "    except Exception:\n        pass\n"
    )
    subprocess.run([sys.executable, "-c", code, *[str(s.path) for s in samples]], check=True,
                   capture_output=True, timeout=120)
    for sample in samples:
        assert sample.marker is not None and sample.marker.exists(), sample.name
        assert _scan([WEIGHTVAULT, "scan", str(sample.path)]).returncode in (1, 2), sample.name
