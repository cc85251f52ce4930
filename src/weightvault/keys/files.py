"""Secret key files on disk: created 0600 in a 0700 folder, refused when others can read them.

Every capability that keeps a secret in a file (keyrings, X25519 identities, the custody service's
keys, break-glass shares) reads and writes it through these functions, so the permission rule and
its error message are the same everywhere.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from weightvault._b64 import decode_url
from weightvault._fs import atomic_output
from weightvault.errors import FormatError, InputError, KeyMaterialError

__all__ = ["MAX_KEY_FILE", "key_line_value", "key_lines", "read_secret_file", "write_secret_file"]

#: Key files are tiny; anything bigger is not one of ours.
MAX_KEY_FILE = 64 * 1024


def read_secret_file(path: Path, what: str) -> str:
    """Read a secret key file, refusing it when group or others may read or write it."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such {what}; check the path") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path}: {what} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyMaterialError(
            f"{path}: {what} is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o})",
            hint=f"run: chmod 600 {path}",
        )
    if st.st_size > MAX_KEY_FILE:
        raise KeyMaterialError(f"{path}: too large to be a {what}")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyMaterialError(f"{path}: cannot read {what}") from exc


def write_secret_file(path: Path, text: str, *, force: bool = False) -> None:
    """Write a secret key file with mode 0600, atomically; its folder is created 0700."""
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True)
    with atomic_output(path, force=force, mode=0o600) as handle:
        handle.write(text.encode("utf-8"))
    os.chmod(path, 0o600)


def key_lines(text: str) -> list[str]:
    """Non-empty, non-comment lines of a key file."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def key_line_value(text: str, prefix: str, what: str, *, size: int = 32) -> bytes | None:
    """The key in a one-line key file (``PREFIX`` + unpadded base64url of ``size`` bytes), or
    ``None`` when ``text`` is not such a file (another kind may claim it); a line with the
    prefix but a malformed key is a :class:`KeyMaterialError` naming ``what``."""
    lines = key_lines(text)
    if len(lines) != 1 or not lines[0].startswith(prefix):
        return None
    try:
        return decode_url(lines[0][len(prefix) :], what, size=size)
    except FormatError as exc:
        raise KeyMaterialError(exc.message) from exc
