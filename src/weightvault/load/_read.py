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
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from weightvault.errors import InputError, Reason
from weightvault.hashing import HashAlgorithm, default_workers
from weightvault.load._errors import (
    DigestMismatchError,
    LoadRefusedError,
    MissingFileError,
    SymlinkEscapeError,
)

__all__ = ["Extent", "open_inside", "read_hashed"]

#: BLAKE3 spreads one update over its own threads from this size on.
_BLAKE3_THREADED = 64 << 20

#: Extents from this size on are read on one thread and hashed on another.
_PIPELINE_FROM = 16 << 20
#: Bytes per pipelined read: large enough that handing a piece over costs nothing.
_PIPELINE_CHUNK = 4 << 20
#: Pieces read ahead of the hashing thread at most. 64 MiB of slack: on a busy machine a thread
#: waits milliseconds to be scheduled again, and a short queue made each wait stall the other
#: thread (2 MiB x 4 measured slower); SHA-256 is far slower than memory, so the pieces need not
#: stay in a cache.
_PIPELINE_DEPTH = 16
#: ``madvise(MADV_POPULATE_WRITE)`` (Linux 5.14): gives a range of the buffer its pages in one
#: call instead of one fault per page during the read (measured: 15% less CPU for the read).
_MADV_POPULATE_WRITE = 23


class _Hasher(Protocol):
    def update(self, data: Any, /) -> Any: ...

    def digest(self) -> bytes: ...


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
    (measured: 8.9 s vs 2.3 s for 1 GB). The mapping has no link to any file.
    """
    if size == 0:
        return memoryview(bytearray())
    return memoryview(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))


def read_hashed(
    fd: int,
    size: int,
    shown: str,
    algorithm: HashAlgorithm,
    extents: Sequence[Extent],
    *,
    workers: int = 1,
) -> tuple[memoryview, list[bytes]]:
    """Read ``size`` bytes of ``fd`` into a new buffer, hashing each piece right after it lands
    (while it is still in the CPU cache), extent by extent.

    ``extents`` tile ``[0, size)`` in order; with ``workers`` > 1 several extents (shards) are
    read and hashed at once, each by one thread. A file that ends early or holds more than
    ``size`` bytes changed while it was read: :class:`DigestMismatchError`. The kernel's
    read-ahead (asked for with ``POSIX_FADV_SEQUENTIAL``) fetches the next pieces while one is
    hashed.
    """
    view = new_buffer(size)
    if hasattr(os, "posix_fadvise") and size:
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except OSError:
            pass
    if sum(e.end - e.start for e in extents) != size:  # pragma: no cover - caller's bug
        raise DigestMismatchError(f"{shown}: does not match its signed layout", names=[shown])
    threads = default_workers() if size >= _BLAKE3_THREADED and len(extents) == 1 else 1
    if workers > 1 and len(extents) > 1:
        with ThreadPoolExecutor(min(workers, len(extents))) as pool:
            digests = list(
                pool.map(lambda e: _read_extent(fd, view, e, algorithm, 1, shown), extents)
            )
    else:
        digests = [_read_extent(fd, view, e, algorithm, threads, shown) for e in extents]
    if os.pread(fd, 1, size):
        raise _changed(shown, shorter=False)
    return view, digests


def _read_extent(
    fd: int, view: memoryview, extent: Extent, algorithm: HashAlgorithm, threads: int, shown: str
) -> bytes:
    """Read ``extent`` into its place in ``view`` and hash it, one piece at a time.

    A large extent is pipelined: this thread reads piece *k+1* while a second thread hashes
    piece *k* (``preadv`` and ``hashlib`` both release the GIL), so the pass costs about the
    slower of reading and hashing instead of their sum. What is hashed is the piece of our own
    buffer the read landed in, never the file: a writer can change the file, not the buffer.
    """
    hasher = algorithm.new_hasher(threads=threads)
    if extent.end - extent.start < _PIPELINE_FROM:
        position = extent.start
        while position < extent.end:
            count = _read_piece(fd, view, position, extent.end, algorithm.chunk_size, shown)
            hasher.update(view[position : position + count])
            position += count
        return hasher.digest()
    return _read_pipelined(fd, view, extent, hasher, shown)


def _read_piece(fd: int, view: memoryview, position: int, end: int, chunk: int, shown: str) -> int:
    piece = view[position : min(position + chunk, end)]
    try:
        count = os.preadv(fd, [piece], position)
    except OSError as exc:
        raise InputError(f"{shown}: read failed ({exc.strerror})") from exc
    if count == 0:
        raise _changed(shown, shorter=True)
    return count


def _populate(view: memoryview, start: int, end: int) -> None:
    """Fault ``[start, end)`` of the buffer in at once, if the kernel can (else the read does)."""
    buffer = view.obj
    if not isinstance(buffer, mmap.mmap):
        return
    first = start - start % mmap.PAGESIZE
    try:
        buffer.madvise(_MADV_POPULATE_WRITE, first, end - first)
    except (OSError, ValueError, OverflowError):
        pass


def _read_pipelined(
    fd: int, view: memoryview, extent: Extent, hasher: _Hasher, shown: str
) -> bytes:
    """Read on this thread, hash on another, at most ``_PIPELINE_DEPTH`` pieces apart (so a
    piece is still in the shared cache when it is hashed, and an error stops the reader soon).
    """
    pending: deque[Future[object]] = deque()
    with ThreadPoolExecutor(1, thread_name_prefix="weightvault-hash") as pool:
        try:
            position = extent.start
            while position < extent.end:
                _populate(view, position, min(position + _PIPELINE_CHUNK, extent.end))
                count = _read_piece(fd, view, position, extent.end, _PIPELINE_CHUNK, shown)
                pending.append(pool.submit(hasher.update, view[position : position + count]))
                position += count
                if len(pending) >= _PIPELINE_DEPTH:
                    pending.popleft().result()
            while pending:
                pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
    return hasher.digest()


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
