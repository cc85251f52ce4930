"""Starting a job's worker process: no network, a file-system allow-list, resource limits.

The worker (:mod:`weightvault.access.worker`) is a fresh Python process started as
``unshare -rn -- python -m weightvault.access.worker`` (a new user and network namespace: the
only interface is a loopback that is down, so no connection to anything, the service included,
can be made). Before it reads a byte of the weights it sets its own limits (CPU seconds, address
space, file size, no core dumps: a core file would be plaintext weights on disk) and confines
itself with Landlock to reading the Python installation and writing its scratch folder. The
parent kills the whole process group at the wall-time limit.

Where the namespace or Landlock is unavailable, :func:`check_isolation` refuses to start jobs
unless the caller passes ``allow_unisolated`` (the service's ``allow_unisolated_jobs``).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightvault._dataclass_json import field_dict
from weightvault.access import _landlock
from weightvault.access.worker import MEMORY_LIMIT
from weightvault.errors import PolicyError

__all__ = [
    "Isolation",
    "Limits",
    "WorkerOutcome",
    "check_isolation",
    "isolation",
    "run_worker",
    "stop_worker",
]

DEFAULT_ENTRY = "weightvault.access.kinds:run_job"
_STDERR_TAIL = 2000


@dataclass(frozen=True)
class Limits:
    """What one job may use. ``output_bytes`` caps what the worker may hand back."""

    cpu_s: int = 300
    wall_s: float = 600.0
    memory_bytes: int = 8 << 30
    """Address space (``RLIMIT_AS``); PyTorch reserves much more than it touches."""
    scratch_bytes: int = 2 << 30
    """Largest file the worker may write (``RLIMIT_FSIZE``)."""
    output_bytes: int = 4 << 20

    def to_dict(self) -> dict[str, Any]:
        return field_dict(self)


@dataclass(frozen=True)
class Isolation:
    """What this host can do to isolate a worker."""

    network_namespace: bool
    landlock_abi: int

    @property
    def complete(self) -> bool:
        return self.network_namespace and self.landlock_abi >= 1

    def to_dict(self) -> dict[str, Any]:
        return field_dict(self)


@functools.cache
def isolation() -> Isolation:
    """Probe once: can ``unshare -rn`` start a process here, and which Landlock ABI is there."""
    unshare = shutil.which("unshare")
    works = False
    if unshare and sys.platform == "linux":
        try:
            works = (
                subprocess.run(
                    [unshare, "-rn", "--", "true"], capture_output=True, timeout=10, check=False
                ).returncode
                == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            works = False
    return Isolation(works, _landlock.abi_version())


def check_isolation(*, allow_unisolated: bool) -> Isolation:
    """The host's isolation; raise :class:`PolicyError` if it is incomplete and not allowed."""
    found = isolation()
    if not found.complete and not allow_unisolated:
        missing = "a network namespace (unshare -rn)" if not found.network_namespace else "Landlock"
        raise PolicyError(
            f"jobs cannot be isolated on this host: {missing} is not available",
            hint="the service's allow_unisolated_jobs setting runs them anyway (unsafe)",
        )
    return found


@dataclass(frozen=True)
class WorkerOutcome:
    """How a worker ended: ``succeeded`` (with its outputs), ``failed`` or ``killed``."""

    status: str
    outputs: dict[str, Any]
    reason: str
    environment: dict[str, Any]
    seconds: float
    stderr_tail: str = ""


def _worker_env(scratch: Path, extra: dict[str, str] | None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(scratch),
        "TMPDIR": str(scratch),
        "HF_HOME": str(scratch / ".hf"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONPATH"):
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(extra or {})
    return env


def run_worker(
    message: dict[str, Any],
    *,
    scratch: Path,
    limits: Limits,
    allow_unisolated: bool = False,
    entry: str = DEFAULT_ENTRY,
    extra_env: dict[str, str] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> WorkerOutcome:
    """Run one job in a fresh, isolated worker and collect its declared outputs.

    ``message`` (JSON) goes to the worker's standard input, data keys included: they never
    touch the disk or the command line. ``entry`` (``module:function``) is what the worker runs
    once confined; the service always uses the default, tests pass probes. ``on_start``
    receives the worker's process group id (:func:`stop_worker` ends it, to cancel a job).
    """
    found = check_isolation(allow_unisolated=allow_unisolated)
    scratch = scratch.resolve()
    command = [
        sys.executable,
        "-I" if "PYTHONPATH" not in (extra_env or {}) and "PYTHONPATH" not in os.environ else "-s",
        "-m",
        "weightvault.access.worker",
        json.dumps({**limits.to_dict(), "entry": entry}),
    ]
    if found.network_namespace:
        command = [shutil.which("unshare") or "unshare", "-rn", "--", *command]
    payload = json.dumps({**message, "scratch": str(scratch)}).encode("utf-8")
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=scratch,
        env=_worker_env(scratch, extra_env),
        start_new_session=True,
    )
    if on_start is not None:
        on_start(process.pid)
    killed_for_time = False
    try:
        stdout, stderr = process.communicate(payload, timeout=limits.wall_s)
    except subprocess.TimeoutExpired:
        killed_for_time = True
        _kill_group(process)
        stdout, stderr = process.communicate()
    except BaseException:
        _kill_group(process)
        process.wait()
        raise
    seconds = time.monotonic() - started
    tail = stderr[-_STDERR_TAIL:].decode("utf-8", "replace")
    environment = {"isolation": found.to_dict(), "limits": limits.to_dict()}
    if killed_for_time:
        return WorkerOutcome("killed", {}, "wall-time limit reached", environment, seconds, tail)
    code = process.returncode
    if code in (-signal.SIGXCPU, -signal.SIGKILL) and seconds < limits.wall_s:
        reason = "CPU-time limit reached" if code == -signal.SIGXCPU else "killed"
        return WorkerOutcome("killed", {}, reason, environment, seconds, tail)
    if code == -signal.SIGXFSZ:
        return WorkerOutcome(
            "killed", {}, "scratch file-size limit reached", environment, seconds, tail
        )
    if len(stdout) > limits.output_bytes:
        return WorkerOutcome(
            "failed",
            {},
            f"outputs larger than {limits.output_bytes} bytes",
            environment,
            seconds,
            tail,
        )
    try:
        report = json.loads(stdout)
        assert isinstance(report, dict)
    except (ValueError, AssertionError):
        reason = f"worker exited with status {code} and no report"
        return WorkerOutcome("failed", {}, reason, environment, seconds, tail)
    environment.update(report.get("environment") or {})
    if code != 0 or not report.get("ok"):
        error = str(report.get("error", "job failed"))[:500]
        # A limit stopped it, as for CPU and wall time: the job was killed, not wrong.
        status = "killed" if error == MEMORY_LIMIT else "failed"
        return WorkerOutcome(status, {}, error, environment, seconds, tail)
    outputs = report.get("outputs")
    if not isinstance(outputs, dict):
        return WorkerOutcome(
            "failed", {}, "worker report has no outputs", environment, seconds, tail
        )
    return WorkerOutcome("succeeded", outputs, "", environment, seconds, tail)


def stop_worker(group: int) -> None:
    """Kill a worker's whole process group (a cancelled job); nothing it made is kept."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    stop_worker(process.pid)
