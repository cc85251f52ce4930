"""Writing files so that a crash never leaves a partial file under the final name.

One way to do it for the whole package: write to a hidden temporary file in the destination's
folder, flush and fsync it, then rename it into place (``os.replace``, or ``os.link`` + unlink when
an existing file must not be overwritten, which closes the check-then-write race), then fsync the
folder so the rename itself is durable.

Interrupts (see :mod:`weightvault._interrupt`): the rename runs as one step that a signal cannot
cut in half; a signal that arrives during it is raised just after, and the file that was just
created is removed again, so an interrupted command leaves the folder as it found it. Several
files that belong together (a report and its plots) go through :func:`staged_outputs`: all of
them appear, or none.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from weightvault import _interrupt
from weightvault.errors import FileSystemError, InputError, Reason, WeightvaultError

__all__ = [
    "StagedOutputs",
    "already_exists",
    "atomic_output",
    "check_folder_writable",
    "ensure_writable_destination",
    "fsync_dir",
    "read_small_file",
    "staged_outputs",
    "sync_before_naming",
    "temporary_name",
    "undo_new_file",
    "write_bytes_atomic",
]

#: Marks every temporary name this package creates (``.NAME.wvtmp-RANDOM``).
TEMP_MARKER = ".wvtmp-"


def temporary_name(path: Path) -> Path:
    """A fresh hidden name beside ``path`` for a file being written."""
    return path.parent / f".{path.name}{TEMP_MARKER}{secrets.token_hex(6)}"


def fsync_dir(path: Path) -> None:
    """Make a rename or creation inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def already_exists(path: Path) -> InputError:
    """The refusal to overwrite ``path`` without being told to (the caller raises it)."""
    return InputError(
        f"{path}: already exists",
        hint="allow overwriting it",
        remedy="overwrite",
        reason=Reason.EXISTS,
    )


def sync_before_naming(handle: BinaryIO) -> None:
    """The last step before a finished file gets its name: flush it, give it up if a stop
    (SIGINT/SIGTERM) was requested meanwhile, and make its bytes durable."""
    handle.flush()
    _interrupt.check_stop()
    os.fsync(handle.fileno())


def ensure_writable_destination(path: Path, *, force: bool) -> None:
    """Refuse to overwrite an existing output unless ``force``; refuse folders always."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give a file path for the output")
    if path.exists() and not path.is_file():
        # Never rename over a device, pipe or socket (``--out /dev/null --force`` would replace it).
        raise InputError(f"{path}: is not a regular file; give a regular file path for the output")
    if path.exists() and not force:
        raise already_exists(path)
    if not path.parent.exists():
        raise InputError(f"{path.parent}: folder does not exist; create it first")
    check_folder_writable(path.parent)


def check_folder_writable(folder: Path) -> None:
    """Refuse early, before any work, an output folder the system will not let us write into
    (a read-only mount, no permission): hashing 8 GB or training a model first would be waste."""
    if os.access(folder, os.W_OK):
        return
    code = errno.EROFS if os.statvfs(folder).f_flag & os.ST_RDONLY else errno.EACCES
    raise FileSystemError.from_os_error(OSError(code, os.strerror(code), str(folder)), writing=True)


def read_small_file(
    path: Path, what: str, limit: int, error: type[WeightvaultError] = InputError
) -> bytes:
    """The bytes of a small input file (a PIN file, a certificate, a trust config): read at most
    ``limit`` bytes, so a huge or endless file is refused without being read; ``error`` (naming
    ``what`` and the path) when it cannot be read or is larger."""
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise error(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"{what} {str(path)!r} is too large (over {limit} bytes)")
    return data


def _named(exc: BaseException, path: Path) -> None:
    """A failed ``write()`` or ``fsync()`` names no file: name the one being written."""
    if isinstance(exc, OSError) and exc.filename is None:
        exc.filename = str(path)


def _commit(temporary: Path, path: Path, *, force: bool) -> None:
    """Give the finished ``temporary`` the name ``path`` (never overwriting without ``force``)."""
    if force:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)
    except FileExistsError as exc:
        raise already_exists(path) from exc
    os.unlink(temporary)


def undo_new_file(path: Path, *, existed: bool) -> None:
    """After an interrupt that came during a commit: remove ``path`` again if this run created
    it; a file it replaced (``force``) cannot come back (the interrupt line says so)."""
    if not existed:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def atomic_output(path: Path, *, force: bool = False, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a binary file that appears at ``path`` only if the block completes.

    On any exception (or a kill) the temporary file is removed or left under a hidden
    ``.NAME.wvtmp-*`` name, never under ``path``. A stop request (SIGINT/SIGTERM) that arrives
    while the block runs in a worker thread abandons the file before its fsync.
    """
    path = Path(path)
    ensure_writable_destination(path, force=force)
    existed = path.exists()
    tmp = temporary_name(path)
    committed = False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            sync_before_naming(handle)
        with _interrupt.deferred():
            _commit(tmp, path, force=force)
            committed = True
            _interrupt.record_created(path, existed=existed)
            fsync_dir(path.parent)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if committed:
            undo_new_file(path, existed=existed)
        _named(exc, path)
        raise


def write_bytes_atomic(path: Path, data: bytes, *, force: bool = False, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, force=force, mode=mode) as handle:
        handle.write(data)


class StagedOutputs:
    """Files written under temporary names, renamed into place together by
    :func:`staged_outputs` once every one of them is complete."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path, bool]] = []  # (temporary, final, force)

    def write_bytes(
        self, path: Path, data: bytes, *, force: bool = False, mode: int = 0o644
    ) -> None:
        """Stage ``data`` for ``path`` (checked now, named only when the whole set commits)."""
        path = Path(path)
        ensure_writable_destination(path, force=force)
        if any(final == path for _tmp, final, _force in self._staged):
            raise ValueError(f"{path}: staged twice")
        tmp = temporary_name(path)
        with _interrupt.deferred():
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            self._staged.append((tmp, path, force))
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            _named(exc, path)
            raise

    def _discard(self) -> None:
        for tmp, _final, _force in self._staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _commit(self) -> None:
        done: list[tuple[Path, bool]] = []
        try:
            with _interrupt.deferred():
                for tmp, final, force in self._staged:
                    existed = final.exists()
                    _commit(tmp, final, force=force)
                    done.append((final, existed))
                    _interrupt.record_created(final, existed=existed)
                for folder in {final.parent for _tmp, final, _force in self._staged}:
                    fsync_dir(folder)
        except BaseException:
            for final, existed in reversed(done):
                undo_new_file(final, existed=existed)
            self._discard()
            raise


@contextlib.contextmanager
def staged_outputs() -> Iterator[StagedOutputs]:
    """Yield a :class:`StagedOutputs`; its files appear when the block completes, else none."""
    batch = StagedOutputs()
    try:
        yield batch
    except BaseException:
        batch._discard()
        raise
    batch._commit()
