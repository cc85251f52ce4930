"""Writing files so that a crash never leaves a partial file under the final name.

One way to do it for the whole package: write to a hidden temporary file in the destination's
folder, flush and fsync it, then rename it into place (``os.replace``, or ``os.link`` + unlink when
an existing file must not be overwritten, which closes the check-then-write race), then fsync the
folder so the rename itself is durable.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from weightvault.errors import InputError

__all__ = ["atomic_output", "ensure_writable_destination", "fsync_dir", "write_bytes_atomic"]


def fsync_dir(path: Path) -> None:
    """Make a rename or creation inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_writable_destination(path: Path, *, force: bool) -> None:
    """Refuse to overwrite an existing output unless ``force``; refuse folders always."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give a file path for the output")
    if path.exists() and not path.is_file():
        # Never rename over a device, pipe or socket (``--out /dev/null --force`` would replace it).
        raise InputError(f"{path}: is not a regular file; give a regular file path for the output")
    if path.exists() and not force:
        raise InputError(f"{path}: already exists; pass --force to overwrite it")
    if not path.parent.exists():
        raise InputError(f"{path.parent}: folder does not exist; create it first")


@contextlib.contextmanager
def atomic_output(path: Path, *, force: bool = False, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a binary file that appears at ``path`` only if the block completes.

    On any exception (or a kill) the temporary file is removed or left under a hidden
    ``.NAME.wvtmp-*`` name, never under ``path``.
    """
    path = Path(path)
    ensure_writable_destination(path, force=force)
    tmp = path.parent / f".{path.name}.wvtmp-{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError as exc:
                raise InputError(f"{path}: already exists; pass --force to overwrite it") from exc
            os.unlink(tmp)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: Path, data: bytes, *, force: bool = False, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path, force=force, mode=mode) as handle:
        handle.write(data)
