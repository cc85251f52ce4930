"""Every malicious sample is flagged, no benign sample is called dangerous, nothing ever runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from scan_corpus import Sample, build_corpus

from weightvault.scan import FileResult, Severity, scan_paths


def _check(sample: Sample, result: FileResult) -> str | None:
    subjects = [f.subject for f in result.findings]
    if sample.malicious:
        if sample.expect == "error":
            ok = bool(result.errors) and result.status != "clean"
        elif sample.expect == "dangerous":
            ok = result.max_severity == Severity.DANGEROUS and any(
                sample.subject in s for s in subjects
            )
        else:
            ok = result.max_severity >= Severity.SUSPICIOUS and any(
                sample.subject in s for s in subjects
            )
    elif sample.expect == "clean":
        ok = result.status == "clean" and not result.findings and not result.errors
    else:
        ok = result.max_severity < Severity.DANGEROUS and not result.errors
    if ok:
        return None
    return f"{sample.name}: {result.status} {subjects} {list(result.errors)}"


def test_every_sample_gets_its_expected_verdict(corpus: list[Sample]) -> None:
    report = scan_paths([s.path for s in corpus])
    assert len(report.files) == len(corpus)
    failures = [
        problem
        for sample, result in zip(corpus, report.files, strict=True)
        if (problem := _check(sample, result)) is not None
    ]
    assert not failures, "\n".join(failures)
    assert sum(s.malicious for s in corpus) >= 80
    assert sum(not s.malicious for s in corpus) >= 20


def test_scanning_the_whole_corpus_runs_no_payload(corpus: list[Sample], corpus_root: Path) -> None:
    """Scan everything (folders, every format), then prove no payload's marker file exists."""
    report = scan_paths([corpus_root])
    assert report.max_severity == Severity.DANGEROUS
    with_markers = [s for s in corpus if s.marker is not None]
    assert len(with_markers) >= 40
    assert not any(s.marker.exists() for s in with_markers if s.marker)
    assert list((corpus_root / "markers").iterdir()) == []


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
    """The corpus is honest: the real unpickler (in a child process) does run these payloads."""
    (sample,) = build_corpus(tmp_path, only={name})
    assert sample.marker is not None and not sample.marker.exists()
    code = (
        "import pickle,sys\n"
        "try:\n    pickle.load(open(sys.argv[1],'rb'))\nexcept Exception:\n    pass\n"
    )
    subprocess.run([sys.executable, "-c", code, str(sample.path)], check=True, cwd=tmp_path,
                   env={**os.environ, "PYTHONPATH": ""}, capture_output=True, timeout=60)
    assert sample.marker.exists(), "the payload did not run under the real unpickler"
    result = scan_paths([sample.path]).files[0]
    assert result.max_severity == Severity.DANGEROUS


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
        assert scan_paths([sample.path]).max_severity == Severity.DANGEROUS
