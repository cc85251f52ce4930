"""Hashing jobs on a Ray cluster, for trees too large for one machine's time budget.

The same jobs :func:`~weightvault.hashing.hash_jobs` runs on threads become Ray tasks: the
largest first (one task each), small ones packed together until a task holds at least
:data:`BATCH_BYTES`, so a tree of many small files does not pay a task per file. Each task runs
the local engine on its jobs, so a digest is computed by exactly the code that computes it
locally: results are identical by construction (and tested). A job is a file, or a byte range
of one (``shards``); a file's ``files``-mode digest is one sequential hash and cannot be split.

Workers read what the driver would: local paths (made absolute, so every worker on a shared
filesystem finds them) or objects in a bucket (an :class:`~weightvault.tree.s3.S3Object` is
plain data; each worker makes its own client). Ray is an optional extra (``weightvault[ray]``),
imported here only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from weightvault.errors import InputError, UsageError, WeightvaultError
from weightvault.hashing import HashAlgorithm, HashJob, ProgressCallback, hash_jobs

__all__ = ["BATCH_BYTES", "hash_jobs_on_ray", "plan_batches"]

#: Pack small jobs into tasks of at least this many bytes (a task costs a few milliseconds).
BATCH_BYTES = 256 << 20


def plan_batches(jobs: Sequence[HashJob], batch_bytes: int | None = None) -> list[list[int]]:
    """Job indices grouped into tasks: largest first, small jobs packed up to ``batch_bytes``
    (default :data:`BATCH_BYTES`)."""
    batch_bytes = BATCH_BYTES if batch_bytes is None else batch_bytes
    order = sorted(range(len(jobs)), key=lambda i: (-jobs[i].size, i))
    batches: list[list[int]] = []
    current: list[int] = []
    filled = 0
    for index in order:
        current.append(index)
        filled += jobs[index].size
        if filled >= batch_bytes:
            batches.append(current)
            current, filled = [], 0
    if current:
        batches.append(current)
    return batches


def _hash_batch(jobs: list[HashJob], hash_type: str, threads: int) -> list[bytes]:
    """Run in a Ray worker: the local engine over one task's jobs."""
    return hash_jobs(jobs, hash_type, max_workers=threads)


def _connect(address: str) -> Any:
    try:
        import ray
    except ImportError as exc:
        raise UsageError("distributed hashing needs Ray: pip install 'weightvault[ray]'") from exc
    if ray.is_initialized():
        return ray
    _reachable(address)
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": "error"}
    try:
        if address == "auto":
            try:  # a cluster this machine runs (or RAY_ADDRESS names), else a local one
                with _native_stderr_held():
                    ray.init(address="auto", **options)
            except ConnectionError:
                ray.init(**options)
        else:
            with _native_stderr_held():
                ray.init(address=address, **options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        if _refused_for_token(exc):
            raise InputError(
                f"cannot connect to the Ray cluster at {address}: it requires token "
                "authentication; set RAY_AUTH_MODE=token and give its token in RAY_AUTH_TOKEN "
                "(or a file named by RAY_AUTH_TOKEN_PATH, default ~/.ray/auth_token)"
            ) from exc
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"cannot connect to the Ray cluster at {address} ({detail[:200]})"
        ) from exc
    return ray


@contextlib.contextmanager
def _native_stderr_held() -> Iterator[None]:
    """Hold what is written to file descriptor 2 while connecting, and pass it on if the
    connection succeeds: a failed connect makes Ray's C++ client log a line a second for about
    20 s, which the one-line error raised instead makes noise. Only around connecting to an
    existing cluster: a cluster this process starts would inherit the held descriptor."""
    sys.stderr.flush()
    saved = os.dup(2)
    held = tempfile.TemporaryFile()
    os.dup2(held.fileno(), 2)
    succeeded = False
    try:
        yield
        succeeded = True
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if succeeded:
            held.seek(0)
            sys.stderr.flush()
            while chunk := held.read(1 << 16):
                os.write(2, chunk)
        held.close()


def _refused_for_token(exc: BaseException) -> bool:
    """Whether a failed ``ray.init`` was the cluster refusing a driver without its token.

    Ray (2.5x and later) turns token authentication on for clusters it starts, and a driver
    connecting to an explicit address sends the token only under ``RAY_AUTH_MODE=token``; Ray
    then reports a generic "Failed to connect", with the reason in the exception's causes.
    weightvault never sends a token on its own: the address might not be the cluster meant.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _reachable(address: str) -> None:
    """Refuse an address nothing listens on at once (Ray itself retries for minutes)."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"{address}: not a Ray address (expected HOST:PORT or auto)")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as exc:
        raise InputError(
            f"cannot connect to the Ray cluster at {address} ({exc.strerror or exc})"
        ) from exc


def _absolute(job: HashJob) -> HashJob:
    if job.reader is not None or job.path.is_absolute():
        return job
    return dataclasses.replace(job, path=job.path.absolute())


def hash_jobs_on_ray(
    jobs: Sequence[HashJob],
    hash_type: HashAlgorithm | str,
    *,
    address: str,
    threads_per_task: int = 1,
    progress: ProgressCallback | None = None,
    batch_bytes: int | None = None,
) -> list[bytes]:
    """Digests of ``jobs`` (in their order) computed by Ray tasks on the cluster at ``address``
    (``auto``: the cluster this machine runs or ``RAY_ADDRESS`` names, else a local one started
    for this process). Raises the job's own :class:`InputError` when a worker cannot read one.
    """
    algorithm = HashAlgorithm.parse(hash_type)
    if not jobs:
        return []
    ray = _connect(address)
    remote = ray.remote(num_cpus=threads_per_task, max_retries=2)(_hash_batch)
    batches = plan_batches(jobs, batch_bytes)
    pending = {
        remote.remote([_absolute(jobs[i]) for i in batch], algorithm.value, threads_per_task): (
            batch
        )
        for batch in batches
    }
    results: list[bytes | None] = [None] * len(jobs)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                batch = pending.pop(ref)
                try:
                    digests = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, WeightvaultError):
                        raise cause from None
                    raise InputError(f"a Ray worker failed while hashing ({exc!s:.200})") from exc
                except ray.exceptions.RayError as exc:
                    raise InputError(
                        f"the Ray cluster failed while hashing ({exc!s:.200})"
                    ) from exc
                for index, digest in zip(batch, digests, strict=True):
                    results[index] = digest
                if progress is not None:
                    progress(sum(jobs[i].size for i in batch))
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
    if any(digest is None for digest in results):  # pragma: no cover - a scheduling bug
        raise RuntimeError("Ray hashing lost a job")
    return [digest for digest in results if digest is not None]
