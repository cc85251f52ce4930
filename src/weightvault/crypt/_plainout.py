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
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from weightvault._fs import atomic_output, ensure_writable_destination, fsync_dir
from weightvault.errors import FileSystemError, InputError

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
    before that (see the module docstring)."""
    path = Path(path)
    ensure_writable_destination(path, force=force)
    fd = _open_unnamed(path.parent, mode)
    if fd is None:
        with atomic_output(path, force=force, mode=mode) as handle:
            yield handle
        return
    with os.fdopen(fd, "wb") as handle:
        try:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        except OSError as exc:
            if exc.filename is None:
                exc.filename = str(path)  # a failed write() names no file; say which one
            raise
        if force:
            temporary = path.parent / f".{path.name}.wvtmp-{secrets.token_hex(6)}"
            _link_fd(handle.fileno(), temporary)
            try:
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary)
                raise
        else:
            try:
                _link_fd(handle.fileno(), path)
            except FileExistsError as exc:
                raise InputError(
                    f"{path}: already exists", hint="allow overwriting it", remedy="overwrite"
                ) from exc
    fsync_dir(path.parent)
