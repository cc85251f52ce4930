"""One pass over a file: read it into a private buffer and hash the bytes as they land.

Why a private buffer and not a mapping: a mapping shows whatever the file holds *now*, so bytes
hashed a moment ago may differ from bytes parsed later (another process writes the file in
between). Bytes copied into our own memory cannot change after they are hashed; the loader
parses exactly those bytes, so the check and the use see the same data by construction.

Reading and hashing overlap: a reader thread fills the buffer with ``readv`` (which releases the
GIL) while the calling thread hashes what has arrived (``hashlib`` and ``blake3`` release it too),
so a cold read costs about ``max(read, hash)`` rather than their sum.
"""

from __future__ import annotations

import errno
import os
import queue
import stat
import threading
from collections.abc import Sequence
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

__all__ = ["Extent", "open_inside", "read_hashed"]

#: Bytes asked of the kernel per read call.
_READ_CHUNK = 4 << 20
#: Below this a file is read and hashed in the calling thread (a thread costs more).
_THREAD_THRESHOLD = 8 << 20
#: BLAKE3 spreads one update over its own threads from this size on.
_BLAKE3_THREADED = 64 << 20
_DONE = "done"
_SHORT = "short"
_GREW = "grew"


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


def read_hashed(
    fd: int, size: int, shown: str, algorithm: HashAlgorithm, extents: Sequence[Extent]
) -> tuple[bytearray, list[bytes]]:
    """Read ``size`` bytes of ``fd`` into a new buffer, hashing each extent as its bytes arrive.

    ``extents`` tile ``[0, size)`` in order. A file that ends early or holds more than ``size``
    bytes changed while it was read: :class:`DigestMismatchError`.
    """
    buffer = bytearray(size)
    view = memoryview(buffer)
    threads = default_workers() if size >= _BLAKE3_THREADED else 1
    digests: list[bytes] = []
    index = 0
    hasher = algorithm.new_hasher(threads=threads)
    hashed = 0

    def advance(available: int) -> None:
        nonlocal index, hasher, hashed
        while index < len(extents):
            end = extents[index].end
            upto = min(end, available)
            if upto > hashed:
                hasher.update(view[hashed:upto])
                hashed = upto
            if hashed < end:
                return
            digests.append(hasher.digest())
            index += 1
            hasher = algorithm.new_hasher(threads=threads)

    if hasattr(os, "posix_fadvise") and size:
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except OSError:
            pass
    if size < _THREAD_THRESHOLD:
        outcome = _read_all(fd, view, size, None)
        if outcome != _DONE:
            raise _changed(shown, outcome)
        advance(size)
    else:
        arrived: queue.SimpleQueue[int | str | BaseException] = queue.SimpleQueue()
        reader = threading.Thread(
            target=_read_into, args=(fd, view, size, arrived), name="weightvault-load-read"
        )
        reader.start()
        try:
            while True:
                item = arrived.get()
                if isinstance(item, int):
                    advance(item)
                    continue
                if isinstance(item, BaseException):
                    raise InputError(f"{shown}: read failed ({item})") from item
                if item != _DONE:
                    raise _changed(shown, item)
                break
        finally:
            reader.join()
    if len(digests) != len(extents):  # pragma: no cover - extents did not tile the file
        raise DigestMismatchError(f"{shown}: does not match its signed layout", names=[shown])
    return buffer, digests


def _changed(shown: str, outcome: str) -> DigestMismatchError:
    how = "is shorter" if outcome == _SHORT else "is longer"
    return DigestMismatchError(
        f"{shown}: {how} than when it was opened (changed while loading)", names=[shown]
    )


def _read_all(
    fd: int,
    view: memoryview,
    size: int,
    arrived: queue.SimpleQueue[int | str | BaseException] | None,
) -> str:
    """Fill ``view`` from ``fd``; report progress to ``arrived``; :data:`_DONE` or why not."""
    position = 0
    while position < size:
        count = os.readv(fd, [view[position : min(position + _READ_CHUNK, size)]])
        if count == 0:
            return _SHORT
        position += count
        if arrived is not None:
            arrived.put(position)
    return _GREW if os.read(fd, 1) else _DONE


def _read_into(
    fd: int, view: memoryview, size: int, arrived: queue.SimpleQueue[int | str | BaseException]
) -> None:
    try:
        arrived.put(_read_all(fd, view, size, arrived))
    except BaseException as exc:  # handed to the hashing thread, which raises it
        arrived.put(exc)


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
