"""The corpus is honest: every new malicious sample runs its payload under its real loader, every
divergent one stays inert under the other reader, and every benign file loads with its library.

The loaders run in child processes (``corpus_loaders.py``) inside a sandbox: a fresh working
folder and HOME, a minimal environment, no stdin, a file-size limit, a timeout, and a private
network namespace where ``unshare -n`` is available. Payloads only create marker files.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corpus_loaders import RESULT_PREFIX
from corpus_malicious import build_malicious
from scan_corpus import Sample

HERE = Path(__file__).parent
RUNNER = HERE / "corpus_loaders.py"
MIN_NEW_MALICIOUS = 30
MIN_NEW_BENIGN = 15


def _can_unshare_network() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    try:
        return subprocess.run([unshare, "-n", "true"], capture_output=True, timeout=10,
                              check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


_UNSHARE = ["unshare", "-n"] if _can_unshare_network() else []


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 20, 256 << 20))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_loaders(jobs: list[tuple[str, Path]], workdir: Path) -> dict[str, dict[str, object]]:
    """Run ``[(loader, path)]`` in one sandboxed child; the per-path results it printed."""
    workdir.mkdir(parents=True, exist_ok=True)
    jobs_file = workdir / f"jobs-{time.monotonic_ns()}.json"
    jobs_file.write_text(json.dumps([[loader, str(path)] for loader, path in jobs]))
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": str(workdir)}
    try:
        proc = subprocess.run([*_UNSHARE, sys.executable, str(RUNNER), str(jobs_file)],
                              cwd=workdir, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=300, preexec_fn=_limits, check=False)
        out = proc.stdout
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    results = {}
    for line in out.splitlines():
        if line.startswith(RESULT_PREFIX):
            entry = json.loads(line[len(RESULT_PREFIX):])
            results[entry["path"]] = entry
    return results


def _wait_for(paths: list[Path], seconds: float = 3.0) -> None:
    """Payloads that spawn a process may create their marker just after the loader exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(p.exists() for p in paths):
        time.sleep(0.05)


@pytest.fixture(scope="module")
def live_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    """The new malicious samples, built in their own folder: the session corpus's markers stay
    empty for the tests that prove scanning runs nothing."""
    return [s for s in build_malicious(tmp_path_factory.mktemp("live-corpus")) if s.loader]


def test_corpus_has_enough_new_samples(live_corpus: list[Sample], corpus: list[Sample]) -> None:
    benign = [s for s in corpus if not s.malicious and s.loader]
    assert len(live_corpus) >= MIN_NEW_MALICIOUS
    assert len(benign) >= MIN_NEW_BENIGN
    assert all(s.malicious and s.marker is not None and s.category and s.loader
               for s in live_corpus)
    names = [s.name for s in corpus]
    assert len(names) == len(set(names))
    assert {s.name for s in live_corpus} <= set(names)


def test_every_new_payload_fires_under_its_real_loader(
    live_corpus: list[Sample], tmp_path: Path
) -> None:
    """All loaders in one child (imports paid once); a sample whose marker is missing gets a
    second, solo run (an earlier payload may have upset the shared interpreter), then fails."""
    assert not any(s.marker and s.marker.exists() for s in live_corpus)
    results = run_loaders([(s.loader, s.path) for s in live_corpus], tmp_path / "all")
    _wait_for([s.marker for s in live_corpus if s.marker])
    failures = []
    for sample in live_corpus:
        assert sample.marker is not None
        if sample.marker.exists():
            continue
        solo = run_loaders([(sample.loader, sample.path)], tmp_path / "solo" / sample.name)
        _wait_for([sample.marker])
        if not sample.marker.exists():
            error = (solo.get(str(sample.path)) or results.get(str(sample.path))
                     or {}).get("error", "no result")
            failures.append(f"{sample.name} ({sample.loader}): did not fire: {error}")
    assert not failures, "\n".join(failures)


def test_divergent_samples_are_inert_under_the_other_reader(
    live_corpus: list[Sample], tmp_path: Path
) -> None:
    """A divergence sample is real only if the other reader does *not* run the payload (checked
    on a fresh copy: the live corpus's markers may already exist)."""
    divergent = build_malicious(tmp_path / "probe", {s.name for s in live_corpus if s.inert_under})
    assert len(divergent) >= 5
    results = run_loaders([(s.inert_under, s.path) for s in divergent], tmp_path / "inert")
    _wait_for([s.marker for s in divergent if s.marker], 0.5)
    fired = [f"{s.name}: fired under {s.inert_under}" for s in divergent
             if s.marker is not None and s.marker.exists()]
    assert not fired, "\n".join(fired)
    assert all(str(s.path) in results for s in divergent)


def test_benign_files_load_with_their_libraries(corpus: list[Sample], tmp_path: Path) -> None:
    """Benign files are genuine: each one loads without error under its real loader."""
    benign = [s for s in corpus if not s.malicious and s.loader]
    results = run_loaders([(s.loader, s.path) for s in benign], tmp_path / "benign")
    failures = [f"{s.name} ({s.loader}): {results.get(str(s.path), {}).get('error', 'no result')}"
                for s in benign if not results.get(str(s.path), {}).get("ok")]
    assert not failures, "\n".join(failures)
    assert os.listdir(corpus[0].path.parent.parent / "markers") == []
