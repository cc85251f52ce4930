"""Writing decrypted plaintext so that a crash or a kill leaves nothing on disk.

:func:`weightvault._fs.atomic_output` writes to a hidden temporary *name* and renames it: after a
``SIGKILL`` that hidden file stays behind, and for decryption it would be a partial plaintext copy
of the weights, exactly the stray copy encryption exists to prevent. On Linux, ``O_TMPFILE``
creates a file with no name at all: the kernel frees it when the process dies, whatever the
cause. Only after the last chunk has authenticated and the data is fsynced is it given its final
name (``linkat(AT_SYMLINK_FOLLOW)`` on ``/proc/self/fd/N``). Where the filesystem has no
``O_TMPFILE`` this falls back to :func:`atomic_output` (a kill can then leave a hidden
``.NAME.wvtmp-*`` file; an exception still removes it).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from weightvault import _interrupt
from weightvault._fs import (
    already_exists,
    atomic_output,
    ensure_writable_destination,
    fsync_dir,
    sync_before_naming,
    temporary_name,
    undo_new_file,
)
from weightvault.errors import FileSystemError

__all__ = ["plaintext_output"]

_NO_TMPFILE = {errno.EOPNOTSUPP, errno.EISDIR, errno.ENOENT, errno.EINVAL}


def _open_unnamed(folder: Path, mode: int) -> int | None:
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not Path("/proc/self/fd").is_dir():
        return None
    try:
        return os.open(folder, flag | os.O_WRONLY, mode)
    except OSError as exc:
        if exc.errno in _NO_TMPFILE:
            return None
        raise FileSystemError.from_os_error(exc, folder, writing=True) from exc


def _link_fd(fd: int, destination: Path) -> None:
    """Give the unnamed file ``fd`` the name ``destination`` (fails if the name exists).

    ``os.link`` cannot do this: on Linux it does not follow the ``/proc/self/fd`` link
    (``follow_symlinks`` is not passed on as ``AT_SYMLINK_FOLLOW``), so call ``linkat`` directly.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, at_symlink_follow = -100, 0x400
    source = f"/proc/self/fd/{fd}".encode()
    if libc.linkat(at_fdcwd, source, at_fdcwd, os.fsencode(destination), at_symlink_follow):
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(destination))


@contextlib.contextmanager
def plaintext_output(path: Path, *, force: bool = False, mode: int = 0o600) -> Iterator[BinaryIO]:
    """Yield a binary file that appears at ``path`` only if the block completes; never named
    before that (see the module docstring).

    Interrupts: a stop request abandons the file before its fsync; the naming runs as one step
    that a signal cannot cut in half, and a signal during it removes the new name again.
    """
    path = Path(path)
    ensure_writable_destination(path, force=force)
    fd = _open_unnamed(path.parent, mode)
    if fd is None:
        with atomic_output(path, force=force, mode=mode) as handle:
            yield handle
        return
    existed = path.exists()
    committed = False
    temporary: Path | None = None
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            sync_before_naming(handle)
            with _interrupt.deferred():
                if force:
                    temporary = temporary_name(path)
                    _link_fd(handle.fileno(), temporary)
                    os.replace(temporary, path)
                else:
                    try:
                        _link_fd(handle.fileno(), path)
                    except FileExistsError as exc:
                        raise already_exists(path) from exc
                committed = True
                _interrupt.record_created(path, existed=existed)
                fsync_dir(path.parent)
    except BaseException as exc:
        if temporary is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        if committed:
            undo_new_file(path, existed=existed)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)  # a failed write() names no file; say which one
        raise
