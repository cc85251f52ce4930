"""The worker's confinement, probed from inside: no network (not even the service on loopback),
no reads outside the Python installation and the files it was handed, no writes outside its
scratch folder, and limits that kill it. Probes import no PyTorch, so each run takes a moment."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.access.helpers import encrypt_model

from paths import REPO
from weightvault.access.sandbox import Limits, WorkerOutcome, isolation, run_worker

ENTRY = "tests.access.probes:probe"


def _run(
    tmp_path: Path, probe: dict[str, Any], limits: Limits | None = None, **extra: Any
) -> WorkerOutcome:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    message = {"probe": probe, "forbidden": [str(tmp_path / "data")], **extra}
    return run_worker(
        message,
        scratch=scratch,
        limits=limits or Limits(cpu_s=20, wall_s=30, memory_bytes=1 << 30),
        entry=ENTRY,
        extra_env={"PYTHONPATH": str(REPO)},
    )


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


def test_this_host_isolates_jobs() -> None:
    found = isolation()
    assert found.network_namespace and found.landlock_abi >= 1, found


def test_a_job_cannot_connect_read_other_files_or_write_outside_scratch(
    tmp_path: Path, listener: int
) -> None:
    data = tmp_path / "data"
    model = data / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"secret": "only the given key opens this"}')
    files = encrypt_model(model, data / "blobs")
    other = data / "blobs" / "other-model.wvenc"
    other.write_bytes(b"another model's ciphertext")
    with socket.create_connection(("127.0.0.1", listener)):
        pass  # the listener is reachable from here
    outcome = _run(
        tmp_path,
        {
            "connect": listener,
            "write_outside": str(tmp_path / "escaped.txt"),
            "read_other": str(other),
            "write_scratch": True,
            "read_given": True,
            "parent": os.getpid(),
        },
        files=files,
    )
    assert outcome.status == "succeeded", outcome
    report = outcome.outputs
    assert report["connect"].startswith("refused")
    assert report["write_outside"].startswith("refused")
    assert report["read_other"].startswith("refused")
    assert report["parent_mem"].startswith("refused")
    assert report["parent_environ"].startswith("refused")
    assert report["write_scratch"] == "done"
    assert bytes.fromhex(report["read_given"]["config.json"]) == b'{"secret": "only'
    assert not (tmp_path / "escaped.txt").exists()
    assert outcome.environment["network"] == ["lo"]


@pytest.mark.parametrize(
    ("probe", "limits", "status", "reason"),
    [
        ({"spin": True}, Limits(cpu_s=1, wall_s=30), "killed", "CPU-time limit"),
        ({"sleep": 60}, Limits(cpu_s=20, wall_s=1.5), "killed", "wall-time limit"),
        (
            {"allocate": 1 << 31},
            Limits(cpu_s=20, wall_s=30, memory_bytes=512 << 20),
            "killed",
            "memory limit",
        ),
        (
            {"shout": 100_000},
            Limits(cpu_s=20, wall_s=30, output_bytes=10_000),
            "failed",
            "outputs larger",
        ),
    ],
    ids=["cpu", "wall", "memory", "output"],
)
def test_a_job_over_its_limits_is_stopped_and_returns_nothing(
    tmp_path: Path, probe: dict[str, Any], limits: Limits, status: str, reason: str
) -> None:
    outcome = _run(tmp_path, probe, limits)
    assert outcome.status == status, outcome
    assert reason in outcome.reason
    assert outcome.outputs == {}


def test_jobs_are_refused_where_they_cannot_be_isolated(tmp_path: Path) -> None:
    code = (
        "from weightvault.access.sandbox import check_isolation\n"
        "from weightvault.errors import PolicyError\n"
        "print(check_isolation(allow_unisolated=True).network_namespace)\n"
        "try:\n    check_isolation(allow_unisolated=False)\n"
        "except PolicyError as exc:\n    print(exc.message)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PATH": str(tmp_path)},  # no unshare on this PATH
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.splitlines() == [
        "False",
        "jobs cannot be isolated on this host: a network namespace (unshare -rn) is not available",
    ]
