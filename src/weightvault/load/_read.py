"""One pass over a file: read it into a private buffer and hash the bytes as they land.

Why a private buffer and not a mapping: a mapping shows whatever the file holds *now*, so bytes
hashed a moment ago may differ from bytes parsed later (another process writes the file in
between). Bytes copied into our own memory cannot change after they are hashed; the loader
parses exactly those bytes, so the check and the use see the same data by construction.

A large file is pipelined: one thread reads the next piece into the buffer while another
hashes the piece before it (``preadv`` and ``hashlib`` release the GIL), a few pieces apart so
the bytes are still in the shared cache; the pass then costs about the slower of the read and
the hash, not their sum (the hash of one ``files`` digest is one sequential stream, the floor).
Small files are hashed inline, right after each read. The kernel's read-ahead overlaps the disk
with both. Several files (or shards) are read by several threads at once.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from weightvault.errors import InputError, Reason
from weightvault.hashing import HashAlgorithm, default_workers
from weightvault.load._errors import (
    DigestMismatchError,
    LoadRefusedError,
    MissingFileError,
    SymlinkEscapeError,
)

__all__ = [
    "Extent",
    "Placement",
    "Placer",
    "Segment",
    "open_inside",
    "read_at",
    "read_hashed",
    "read_into",
]

#: BLAKE3 spreads one update over its own threads from this size on.
_BLAKE3_THREADED = 64 << 20

#: Extents from this size on are read on one thread and hashed on another.
_PIPELINE_FROM = 16 << 20
#: Bytes per pipelined read: large enough that handing a piece over costs nothing, small enough
#: that the reader stays close behind the kernel's read-ahead and the piece is still in the
#: cache when it is hashed. Measured at 21:20 UTC (0.5 GB file, load average 15 on 2 cores,
#: medians of 5): 1 MiB x 8 pieces vs 4 MiB x 16: evicted file 1.18 s vs 4.98 s wall, 0.51 s vs
#: 0.69 s CPU; cached file 0.52 s vs 1.20 s wall, the same CPU.
_PIPELINE_CHUNK = 1 << 20
#: Pieces read ahead of the hashing thread at most (8 MiB of slack: a thread on a busy machine
#: waits milliseconds to be scheduled again, and the other keeps working meanwhile).
_PIPELINE_DEPTH = 8
#: ``madvise(MADV_POPULATE_WRITE)`` (Linux 5.14): gives a range of the buffer its pages in one
#: call instead of one fault per page during the read (measured: 15% less CPU for the read).
_MADV_POPULATE_WRITE = 23


@dataclass(frozen=True)
class Extent:
    """A byte range of a file hashed into one resource digest (the whole file for ``files``)."""

    resource: str
    start: int
    end: int


def _inside(path: str, folder: Path) -> bool:
    return path == str(folder) or path.startswith(str(folder).rstrip("/") + "/")


def open_inside(path: Path, shown: str, folder: Path) -> tuple[int, int]:
    """Open ``path`` for reading without following a final symlink; ``(fd, size)``.

    ``folder`` is a real path the opened file must lie in: checked on the open descriptor
    itself (``/proc/self/fd``), so a folder of the path swapped for a symlink after the model
    was listed is caught too.
    """
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as exc:
        raise MissingFileError(f"{shown}: disappeared while loading", names=[shown]) from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LoadRefusedError(
                f"{shown}: became a symlink while loading", names=[shown], reason=Reason.SYMLINK
            ) from exc
        raise InputError(f"{shown}: cannot open ({exc.strerror}); check permissions") from exc
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise LoadRefusedError(f"{shown}: is not a regular file", names=[shown])
        try:
            opened = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            opened = None  # no /proc: the listing's own check stands
        if opened is not None and not _inside(opened, folder):
            raise SymlinkEscapeError(
                f"{shown}: opened file lies outside {folder} ({opened})", names=[shown]
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, status.st_size


def new_buffer(size: int) -> memoryview:
    """``size`` bytes of private, writable memory, not zero-filled by us (every byte is read
    into).

    An anonymous mapping, not a NumPy array: NumPy asks for transparent huge pages on large
    arrays, and on a busy machine the kernel's compaction for them made the read 3-4x slower
    (measured: 8.9 s vs 2.3 s for 1 GB; again at 20:35 UTC: 9.7 s vs 0.6 s of CPU to give 2 GB
    its pages). The mapping has no link to any file.
    """
    if size == 0:
        return memoryview(bytearray())
    return memoryview(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))


@dataclass(frozen=True)
class Segment:
    """Where the file's bytes ``[start, start + len(view))`` land: a range of memory we own
    (our buffer, or a tensor the caller handed over to be filled)."""

    start: int
    view: memoryview
    #: Our own anonymous mapping behind ``view`` (whose pages are given ahead of the read).
    mapping: mmap.mmap | None = None
    #: Already read through the same descriptor (to parse where the rest goes): hashed from
    #: ``view`` as it is, not read again.
    filled: bool = False

    @property
    def end(self) -> int:
        return self.start + len(self.view)


def read_hashed(
    fd: int,
    size: int,
    shown: str,
    algorithm: HashAlgorithm,
    extents: Sequence[Extent],
    *,
    workers: int = 1,
) -> tuple[memoryview, list[bytes]]:
    """Read ``size`` bytes of ``fd`` into a new buffer of our own, hashing them as they land;
    the buffer and one digest per extent (see :func:`read_into`)."""
    view = new_buffer(size)
    mapping = view.obj if isinstance(view.obj, mmap.mmap) else None
    segments = [Segment(0, view, mapping)]
    return view, read_into(fd, size, shown, algorithm, extents, segments, workers=workers)


def read_into(
    fd: int,
    size: int,
    shown: str,
    algorithm: HashAlgorithm,
    extents: Sequence[Extent],
    segments: Sequence[Segment],
    *,
    workers: int = 1,
) -> list[bytes]:
    """Read ``size`` bytes of ``fd`` into ``segments``, hashing each piece right after it lands
    (from the memory it landed in, never from the file), extent by extent; one digest per extent.

    ``segments`` tile ``[0, size)`` in order (a tensor's final storage can be one, so the bytes
    are read once, straight to where they are used); a segment marked ``filled`` holds bytes
    already read through the same ``fd`` (a header parsed to place the rest): they are hashed,
    not read again. ``extents`` tile ``[0, size)`` in order; with ``workers`` > 1 several
    extents (shards) are read and hashed at once, each by one thread. A file that ends early or
    holds more than ``size`` bytes changed while it was read: :class:`DigestMismatchError`.
    The kernel's read-ahead (asked for with ``POSIX_FADV_SEQUENTIAL``) fetches the next pieces
    while one is hashed.
    """
    if hasattr(os, "posix_fadvise") and size:
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except OSError:
            pass
    if _tiled(extents) != size or _tiled(segments) != size:  # pragma: no cover - caller's bug
        raise DigestMismatchError(f"{shown}: does not match its signed layout", names=[shown])
    threads = default_workers() if size >= _BLAKE3_THREADED and len(extents) == 1 else 1
    job = _Job(fd, segments, algorithm, shown)
    if workers > 1 and len(extents) > 1:
        with ThreadPoolExecutor(min(workers, len(extents))) as pool:
            digests = list(pool.map(lambda e: job.extent(e, 1), extents))
    else:
        digests = [job.extent(e, threads) for e in extents]
    if os.pread(fd, 1, size):
        raise _changed(shown, shorter=False)
    return digests


def _tiled(ranges: Sequence[Extent] | Sequence[Segment]) -> int:
    """The end of ``ranges`` if each starts where the one before ends, else -1."""
    cursor = 0
    for item in ranges:
        if item.start != cursor:
            return -1
        cursor = item.end
    return cursor


@dataclass(frozen=True)
class _Job:
    """One file being read into its segments and hashed."""

    fd: int
    segments: Sequence[Segment]
    algorithm: HashAlgorithm
    shown: str

    def pieces(self, extent: Extent, chunk: int) -> list[tuple[int, memoryview, Segment]]:
        """``extent`` cut at segment boundaries and every ``chunk`` bytes: (file offset, where
        those bytes go)."""
        starts = [s.start for s in self.segments]
        index = max(0, bisect_right(starts, extent.start) - 1)
        position, pieces = extent.start, []
        while position < extent.end:
            segment = self.segments[index]
            if position >= segment.end:
                index += 1
                continue
            stop = min(extent.end, segment.end, position + chunk)
            where = segment.view[position - segment.start : stop - segment.start]
            pieces.append((position, where, segment))
            position = stop
        return pieces

    def fill(self, position: int, piece: memoryview) -> None:
        """Read the file's bytes at ``position`` into all of ``piece``."""
        done = 0
        while done < len(piece):
            done += _read_piece(self.fd, piece[done:], position + done, self.shown)

    def extent(self, extent: Extent, threads: int) -> bytes:
        """Read ``extent`` into place and hash it, one piece at a time.

        A large extent is pipelined: this thread reads piece *k+1* while a second thread hashes
        piece *k* (``preadv`` and ``hashlib`` both release the GIL), so the pass costs about the
        slower of reading and hashing instead of their sum. What is hashed is the memory the
        read landed in, never the file: a writer can change the file, not that memory.
        """
        hasher = self.algorithm.new_hasher(threads=threads)
        if extent.end - extent.start < _PIPELINE_FROM:
            for position, piece, segment in self.pieces(extent, self.algorithm.chunk_size):
                if not segment.filled:
                    self.fill(position, piece)
                hasher.update(piece)
            return hasher.digest()
        pending: deque[Future[object]] = deque()
        with ThreadPoolExecutor(1, thread_name_prefix="weightvault-hash") as pool:
            try:
                for position, piece, segment in self.pieces(extent, _PIPELINE_CHUNK):
                    if not segment.filled:
                        _populate(segment, position, len(piece))
                        self.fill(position, piece)
                    pending.append(pool.submit(hasher.update, piece))
                    if len(pending) >= _PIPELINE_DEPTH:
                        pending.popleft().result()
                while pending:
                    pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()
        return hasher.digest()


def read_at(fd: int, position: int, count: int, shown: str) -> bytearray:
    """``count`` bytes of ``fd`` from ``position`` in memory of our own (a header to parse and
    then hash with the rest: a ``filled`` :class:`Segment`)."""
    data = bytearray(count)
    _Job(fd, (), HashAlgorithm.SHA256, shown).fill(position, memoryview(data))
    return data


@dataclass(frozen=True)
class Placement:
    """Where a file's bytes go instead of a new buffer: ``segments`` tiling the file (those
    ``filled`` were read already, through the same descriptor); ``kept`` is what the verified
    model holds for the file (the part read to decide the placement)."""

    segments: list[Segment]
    kept: memoryview


#: Decides, for a file opened for a verified load (signed name, descriptor, size), where its
#: bytes go; None: into a new buffer of our own.
Placer = Callable[[str, int, int], Placement | None]


def _read_piece(fd: int, piece: memoryview, position: int, shown: str) -> int:
    try:
        count = os.preadv(fd, [piece], position)
    except OSError as exc:
        raise InputError(f"{shown}: read failed ({exc.strerror})") from exc
    if count == 0:
        raise _changed(shown, shorter=True)
    return count


def _populate(segment: Segment, position: int, length: int) -> None:
    """Give ``length`` bytes of our own buffer from file offset ``position`` their pages in one
    call, if the kernel can (else the read faults them in one by one); a caller's tensor is left
    alone (its pages were given when it was made)."""
    if segment.mapping is None:
        return
    start = position - segment.start
    first = start - start % mmap.PAGESIZE
    try:
        segment.mapping.madvise(_MADV_POPULATE_WRITE, first, start + length - first)
    except (OSError, ValueError, OverflowError):
        pass


def _changed(shown: str, *, shorter: bool) -> DigestMismatchError:
    how = "is shorter" if shorter else "is longer"
    return DigestMismatchError(
        f"{shown}: {how} than when it was opened (changed while loading)", names=[shown]
    )


def whole_file(resource: str, size: int) -> list[Extent]:
    return [Extent(resource, 0, size)]


def shard_extents(name: str, size: int, shard_size: int) -> list[Extent]:
    """The shards signing cuts a ``size``-byte file into (one empty shard for an empty file)."""
    from weightvault.oms.manifest import shard_name

    if size == 0:
        return [Extent(shard_name(name, 0, 0), 0, 0)]
    return [
        Extent(
            shard_name(name, start, min(start + shard_size, size)),
            start,
            min(start + shard_size, size),
        )
        for start in range(0, size, shard_size)
    ]


def real_folder(path: Path) -> Path:
    return Path(os.path.realpath(path))
