"""The parallel hashing engine: whole files or byte ranges, sha256 / blake2 / blake3.

Knows nothing about signatures; :mod:`weightvault.signing` turns model files into jobs and jobs'
digests into a manifest. What makes it fast and lean:

* **largest job first** (LPT scheduling): a pool of ``max_workers`` threads pulls jobs from one
  queue sorted by size, so a big file starts at once and small ones fill the gaps at the end;
* **threads, not processes**: ``hashlib`` and ``blake3`` release the GIL on large buffers, and
  ``os.preadv`` reads without holding it, so threads run on every core with no copying between
  processes;
* **one reused buffer per worker**, filled with ``preadv`` (no per-chunk allocation, so peak
  memory is ``workers x chunk`` whatever the model size);
* BLAKE3 and BLAKE2 run faster over the page cache itself than over a copy of it (BLAKE3 is so
  fast that the copy would cost as much as the hash), so their jobs map the file in 16 MiB windows
  (unmapped as soon as hashed: memory stays bounded) and BLAKE3 hashes large windows with its own
  thread pool. SHA-256 is faster reading into a cache-resident buffer, so it always reads;
* **a mapping never turns truncation into SIGBUS**: a file is mapped only while this process
  holds a Linux *read lease* on it (``F_SETLEASE``). The kernel grants one only when nobody has
  the file open for writing, and makes anyone who then opens it for writing or truncates it wait
  (up to ``/proc/sys/fs/lease-break-time``) until the lease is released. Before each window the
  worker checks whether such a break is pending; if so it stops, closes the file (releasing the
  lease) and reports "changed while hashing". Without a lease (not the file's owner, a writer
  already open, a filesystem without leases, a ``SIGURG`` handler installed, not Linux) the job
  reads with ``preadv`` instead: slower for BLAKE3, never unsafe.

A job whose bytes are not in a local file (an object in S3) carries a :class:`RangeReader`;
the engine hashes what it yields, in order, and checks the count. The reader fetches ahead
itself (parallel ranged requests), so the same schedule keeps the network busy.

Digests never depend on ``max_workers`` or the chunk size (tested).
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from weightvault.errors import InputError

__all__ = [
    "HASH_TYPES",
    "HashAlgorithm",
    "HashJob",
    "ProgressCallback",
    "ProgressDisplay",
    "RangeReader",
    "default_workers",
    "digest_size",
    "hash_jobs",
    "new_hasher",
    "reporting",
]


class _Hasher(Protocol):
    def update(self, data: Any, /) -> Any: ...

    def digest(self) -> bytes: ...


class HashAlgorithm(StrEnum):
    """The hashes a model can be hashed with: the one vocabulary from the command line to the
    manifest (a member *is* its user-facing name, so it compares equal to ``"sha256"``).

    ``oms_name`` is what an OMS manifest records (model-signing's ``digest_name``: BLAKE2 is
    written ``blake2b``), ``digest_size`` the digest length in bytes.
    """

    SHA256 = "sha256"
    BLAKE2 = "blake2"
    """BLAKE2b with a 64-byte digest."""
    BLAKE3 = "blake3"

    @classmethod
    def parse(cls, value: str) -> HashAlgorithm:
        """The member named ``value``; ``ValueError`` (a caller mistake) naming the choices."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(
                f"unsupported hash type {value!r} (expected {', '.join(cls)})"
            ) from None

    @classmethod
    def from_oms_name(cls, value: str) -> HashAlgorithm | None:
        """The member a manifest names ``value`` (its OMS name or its own name), else ``None``."""
        for member in cls:
            if value in (member.value, member.oms_name):
                return member
        return None

    @property
    def oms_name(self) -> str:
        return "blake2b" if self is HashAlgorithm.BLAKE2 else self.value

    @property
    def digest_size(self) -> int:
        return 64 if self is HashAlgorithm.BLAKE2 else 32

    @property
    def chunk_size(self) -> int:
        """Bytes read per call. 1 MiB keeps SHA-256/BLAKE2 input in L2; BLAKE3 needs larger
        buffers to spread one update over its internal threads."""
        return 8 << 20 if self is HashAlgorithm.BLAKE3 else 1 << 20

    @property
    def reads_mapped(self) -> bool:
        """Faster over mapped page-cache pages than over a copy (measured: BLAKE3 1.6x,
        BLAKE2 1.05x; SHA-256 is 10% *slower* mapped, its input prefers a cache-resident
        buffer)."""
        return self is not HashAlgorithm.SHA256

    def new_hasher(self, *, threads: int = 1) -> _Hasher:
        """A fresh streaming hasher (BLAKE3 may use ``threads`` threads inside one update)."""
        if self is HashAlgorithm.SHA256:
            return hashlib.sha256()
        if self is HashAlgorithm.BLAKE2:
            return hashlib.blake2b()
        import blake3

        hasher: _Hasher = blake3.blake3(max_threads=threads if threads > 1 else 1)
        return hasher


HASH_TYPES: tuple[str, ...] = tuple(HashAlgorithm)

ProgressCallback = Callable[[int], None]
"""Called with a number of bytes just hashed; may be called from worker threads."""

ProgressDisplay = Callable[[int], AbstractContextManager[ProgressCallback]]
"""Opened with the number of bytes about to be hashed, once they are known; yields the
:data:`ProgressCallback` that reports them (a progress bar, for example)."""


@contextmanager
def reporting(
    total: int, display: ProgressDisplay | None, progress: ProgressCallback | None = None
) -> Iterator[ProgressCallback | None]:
    """``display`` opened for ``total`` bytes (its callback), or else ``progress`` as it is."""
    if display is None:
        yield progress
        return
    with display(total) as advance:
        yield advance

#: Report progress at most this often per worker (bytes).
_PROGRESS_STEP = 64 << 20
#: A BLAKE3 job at least this big may use BLAKE3's internal threads (if it dominates the run).
_BLAKE3_MT_THRESHOLD = 64 << 20
#: Bytes of a file mapped at once (a multiple of the allocation granularity).
_MAP_WINDOW = 16 << 20
#: Linux ``fcntl`` command numbers not exported by every Python build.
_F_SETSIG = 10
#: A lease break must give a worker at least this long to finish its window and let go.
_MIN_LEASE_BREAK_SECONDS = 1


@functools.cache
def _lease_break_seconds() -> int:
    """How long the kernel makes a writer wait for a lease holder (0 if leases are unusable)."""
    try:
        if Path("/proc/sys/fs/leases-enable").read_text().strip() != "1":
            return 0
        return int(Path("/proc/sys/fs/lease-break-time").read_text().strip())
    except (OSError, ValueError):
        return 0


def _take_read_lease(fd: int) -> bool:
    """Hold a read lease on ``fd`` so the file cannot shrink under a mapping; False if refused.

    The lease-break notice is routed to ``SIGURG``, whose default action is to ignore it: the
    worker polls ``F_GETLEASE`` instead of handling a signal, which works from any thread. If the
    program has its own ``SIGURG`` handler, no lease is taken (the notice would reach it).
    """
    import fcntl

    if not hasattr(fcntl, "F_SETLEASE") or _lease_break_seconds() < _MIN_LEASE_BREAK_SECONDS:
        return False
    if signal.getsignal(signal.SIGURG) not in (signal.SIG_DFL, signal.SIG_IGN):
        return False
    try:
        fcntl.fcntl(fd, _F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError:  # EAGAIN: open for writing somewhere; EACCES: not ours; EINVAL: no leases
        return False
    return True


def _lease_broken(fd: int) -> bool:
    """True once someone waits to write or truncate the file: stop touching the mapping."""
    import fcntl

    try:
        return bool(fcntl.fcntl(fd, fcntl.F_GETLEASE) != fcntl.F_RDLCK)
    except OSError:
        return True


def new_hasher(hash_type: HashAlgorithm | str, *, threads: int = 1) -> _Hasher:
    """A fresh streaming hasher; ``blake2`` is BLAKE2b with a 64-byte digest."""
    return HashAlgorithm.parse(hash_type).new_hasher(threads=threads)


def digest_size(hash_type: HashAlgorithm | str) -> int:
    return HashAlgorithm.parse(hash_type).digest_size


def default_workers() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@runtime_checkable
class RangeReader(Protocol):
    """The bytes of one file that is not on the local disk (an object in a bucket).

    ``chunks(start, end)`` yields the bytes from ``start`` to ``end`` (exclusive) in order, in
    pieces of its choosing; it raises :class:`InputError` when they cannot be read (or changed
    since they were listed). Closing the iterator early must stop any reads still in flight.
    """

    def chunks(self, start: int, end: int) -> Iterator[bytes | memoryview]: ...


@dataclass(frozen=True)
class HashJob:
    """Hash ``path`` from ``start`` to ``end`` (exclusive), or to end of file if ``end`` is None.

    With a ``reader`` the bytes come from it instead of ``path`` (``end`` None means ``size``).
    """

    path: Path
    name: str
    """Shown in errors (the model-relative name)."""
    size: int
    """Expected number of bytes; orders the schedule and sizes the progress bar."""
    start: int = 0
    end: int | None = None
    reader: RangeReader | None = None


class _Stop(Exception):
    """Another worker failed; stop quietly."""


class _Engine:
    def __init__(
        self,
        jobs: Sequence[HashJob],
        algorithm: HashAlgorithm,
        workers: int,
        progress: ProgressCallback | None,
        chunk_size: int | None,
        use_mmap: bool = True,
    ) -> None:
        self.jobs = jobs
        self.algorithm = algorithm
        self.workers = workers
        self.progress = progress
        self.chunk = chunk_size or self.algorithm.chunk_size
        # Largest first; ties keep input order so the schedule is deterministic.
        self.order = sorted(range(len(jobs)), key=lambda i: (-jobs[i].size, i))
        self.results: list[bytes | None] = [None] * len(jobs)
        self.lock = threading.Lock()
        self.next_index = 0
        self.error: BaseException | None = None
        self.blake3_threads = workers if self.algorithm is HashAlgorithm.BLAKE3 else 1
        # BLAKE3's own threads only pay for a job that would otherwise finish last alone (more
        # than its share of the total); running them beside busy workers just spins.
        total = sum(job.size for job in jobs)
        self.blake3_mt_size = max(_BLAKE3_MT_THRESHOLD, total // workers + 1)
        self.use_mmap = use_mmap

    def _take(self) -> int | None:
        with self.lock:
            if self.error is not None or self.next_index >= len(self.order):
                return None
            index = self.order[self.next_index]
            self.next_index += 1
            return index

    def worker(self) -> None:
        buffer = bytearray(self.chunk)
        view = memoryview(buffer)
        try:
            while (index := self._take()) is not None:
                self.results[index] = self._hash_one(self.jobs[index], buffer, view)
        except _Stop:
            return
        except BaseException as exc:
            with self.lock:
                if self.error is None:
                    self.error = exc

    def _hash_one(self, job: HashJob, buffer: bytearray, view: memoryview) -> bytes:
        threads = self.blake3_threads if job.size >= self.blake3_mt_size else 1
        hasher = self.algorithm.new_hasher(threads=threads)
        if job.reader is not None:
            self._hash_read(job, job.reader, hasher)
            return hasher.digest()
        try:
            fd = os.open(job.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise InputError(
                f"{job.name}: cannot open ({exc.strerror}); check permissions"
            ) from exc
        try:
            if self.use_mmap and self.algorithm.reads_mapped and _take_read_lease(fd):
                self._hash_mapped(job, fd, hasher)
                return hasher.digest()
            if hasattr(os, "posix_fadvise"):
                try:
                    os.posix_fadvise(fd, job.start, 0, os.POSIX_FADV_SEQUENTIAL)
                except OSError:
                    pass
            offset = job.start
            remaining = None if job.end is None else job.end - job.start
            unreported = 0
            progress = self.progress
            while remaining is None or remaining > 0:
                if self.error is not None:
                    raise _Stop
                if remaining is not None and remaining < len(buffer):
                    target = view[:remaining]
                else:
                    target = view
                try:
                    count = os.preadv(fd, [target], offset)
                except OSError as exc:
                    raise InputError(f"{job.name}: read failed ({exc.strerror})") from exc
                if count == 0:
                    if remaining is not None:
                        raise InputError(
                            f"{job.name}: file is shorter than expected (changed while hashing?)"
                        )
                    break
                hasher.update(view[:count] if count < len(buffer) else view)
                offset += count
                if remaining is not None:
                    remaining -= count
                if progress is not None:
                    unreported += count
                    if unreported >= _PROGRESS_STEP:
                        progress(unreported)
                        unreported = 0
            if progress is not None and unreported:
                progress(unreported)
        finally:
            os.close(fd)
        return hasher.digest()

    def _hash_read(self, job: HashJob, reader: RangeReader, hasher: _Hasher) -> None:
        """Hash what ``reader`` yields for ``job``; a wrong byte count is an error."""
        end = job.start + job.size if job.end is None else job.end
        count = 0
        unreported = 0
        progress = self.progress
        pieces = reader.chunks(job.start, end)
        try:
            for piece in pieces:
                if self.error is not None:
                    raise _Stop
                hasher.update(piece)
                count += len(piece)
                if progress is not None:
                    unreported += len(piece)
                    if unreported >= _PROGRESS_STEP:
                        progress(unreported)
                        unreported = 0
        finally:
            close = getattr(pieces, "close", None)
            if close is not None:
                close()  # a generator: stop its reads in flight
        if progress is not None and unreported:
            progress(unreported)
        if count != end - job.start:
            raise InputError(
                f"{job.name}: read {count} bytes where {end - job.start} were expected "
                "(changed while hashing?)"
            )

    def _hash_mapped(self, job: HashJob, fd: int, hasher: _Hasher) -> None:
        """Hash ``job`` through read-only windows of a shared mapping (no copy).

        The caller holds a read lease on ``fd``: while it is unbroken the file cannot be
        truncated, so no page of a window can vanish (the SIGBUS case).
        """
        size = os.fstat(fd).st_size
        end = size if job.end is None else job.end
        if end > size:
            raise InputError(f"{job.name}: file is shorter than expected (changed while hashing?)")
        granularity = mmap.ALLOCATIONGRANULARITY
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        offset = job.start
        progress = self.progress
        while offset < end:
            if self.error is not None:
                raise _Stop
            if _lease_broken(fd):
                raise InputError(
                    f"{job.name}: file changed while hashing (opened for writing or truncated "
                    "by another process); run again once nothing is writing the model"
                )
            base = offset - offset % granularity
            length = min(_MAP_WINDOW, end - base)
            try:
                window = mmap.mmap(fd, length, flags=flags, prot=mmap.PROT_READ, offset=base)
            except (OSError, ValueError) as exc:
                raise InputError(f"{job.name}: cannot map the file for reading ({exc})") from exc
            try:
                with memoryview(window) as view:
                    hasher.update(view[offset - base :])
            finally:
                window.close()
            if progress is not None:
                progress(base + length - offset)
            offset = base + length

    def run(self) -> list[bytes]:
        threads = [
            threading.Thread(target=self.worker, name=f"weightvault-hash-{n}", daemon=True)
            for n in range(min(self.workers, len(self.jobs)) - 1)
        ]
        for thread in threads:
            thread.start()
        try:
            self.worker()  # the calling thread works too
        finally:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)
        if self.error is not None:
            raise self.error
        return [digest for digest in self.results if digest is not None]


def hash_jobs(
    jobs: Sequence[HashJob],
    hash_type: HashAlgorithm | str,
    *,
    max_workers: int | None = None,
    progress: ProgressCallback | None = None,
    chunk_size: int | None = None,
    use_mmap: bool = True,
    cluster: str | None = None,
) -> list[bytes]:
    """Hash every job; returns digests in the order of ``jobs`` (never completion order).

    ``use_mmap=False`` makes BLAKE3 and BLAKE2 read through buffers like SHA-256. ``cluster``
    (a Ray address, or ``auto``) runs the jobs as Ray tasks instead (see
    :mod:`weightvault.hashing.cluster`; same digests).
    Raises :class:`InputError` if a file cannot be read or is shorter than its job.
    """
    if cluster is not None:
        from weightvault.hashing.cluster import hash_jobs_on_ray

        return hash_jobs_on_ray(jobs, hash_type, address=cluster, progress=progress)
    algorithm = HashAlgorithm.parse(hash_type)
    if max_workers is not None and max_workers < 1:
        raise ValueError("max_workers must be at least 1")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    if not jobs:
        return []
    workers = max_workers or default_workers()
    digests = _Engine(jobs, algorithm, workers, progress, chunk_size, use_mmap).run()
    if len(digests) != len(jobs):  # pragma: no cover - an engine bug, not bad input
        raise RuntimeError("hashing engine lost a job")
    return digests
