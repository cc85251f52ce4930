"""Validation of every name and value that reaches the service from outside.

Names never become file-system paths on the server (blob keys are random), but they are checked
anyway: a name that could traverse a path, carry control characters or blow up a log line is
refused with the field named, before anything else happens.
"""

from __future__ import annotations

import re

from weightvault.errors import FormatError

__all__ = [
    "MAX_BYTE_BUDGET",
    "MAX_DURATION_S",
    "MAX_FILES",
    "MAX_JUSTIFICATION",
    "check_byte_count",
    "check_duration",
    "check_file_path",
    "check_justification",
    "check_model_name",
    "check_principal_name",
    "check_request_id",
    "check_version_name",
]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REQUEST_ID_RE = re.compile(r"[0-9a-f]{32}")
MAX_JUSTIFICATION = 2000
MAX_DURATION_S = 30 * 24 * 3600
MAX_BYTE_BUDGET = 1 << 50
MAX_FILES = 10_000
"""Most files one model version may have."""
_MAX_PATH = 1024
_MAX_COMPONENT = 255


def _check_name(field: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise FormatError(f"{field}: expected a string")
    if not value or len(value) > limit:
        raise FormatError(f"{field}: must be 1 to {limit} characters")
    if not _NAME_RE.fullmatch(value) or ".." in value:
        raise FormatError(
            f"{field}: use letters, digits, '.', '_' and '-' only (no '..', no '/')",
        )
    return value


def check_principal_name(value: object, field: str = "principal") -> str:
    """A principal name: ``[A-Za-z0-9][A-Za-z0-9._-]{0,63}``."""
    return _check_name(field, value, 64)


def check_model_name(value: object, field: str = "model") -> str:
    """A model name: ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``."""
    return _check_name(field, value, 128)


def check_version_name(value: object, field: str = "version") -> str:
    """A version name: ``[A-Za-z0-9][A-Za-z0-9._-]{0,63}``."""
    return _check_name(field, value, 64)


def check_request_id(value: object, field: str = "request_id") -> str:
    """A grant request id: 32 lowercase hex digits."""
    if not isinstance(value, str) or not _REQUEST_ID_RE.fullmatch(value):
        raise FormatError(f"{field}: expected 32 lowercase hex digits")
    return value


def check_file_path(value: object, field: str = "path") -> str:
    """A file's path inside a model: relative POSIX, no ``..``, no empty or hidden-dot parts."""
    if not isinstance(value, str):
        raise FormatError(f"{field}: expected a string")
    if not value or len(value) > _MAX_PATH:
        raise FormatError(f"{field}: must be 1 to {_MAX_PATH} characters")
    if value == ".":
        return value  # a single-file model (the tree walker's name for it)
    if any(ord(ch) < 0x20 or ch in "\\\x7f" for ch in value):
        raise FormatError(f"{field}: control characters and backslashes are not allowed")
    parts = value.split("/")
    for part in parts:
        if part in ("", ".", "..") or len(part) > _MAX_COMPONENT:
            raise FormatError(
                f"{field}: must be a relative path without '.', '..' or empty parts",
            )
    return value


def check_justification(value: object, field: str = "justification") -> str:
    """Free text, 10 to 2000 characters, printable."""
    if not isinstance(value, str):
        raise FormatError(f"{field}: expected a string")
    if len(value.strip()) < 10 or len(value) > MAX_JUSTIFICATION:
        raise FormatError(f"{field}: write 10 to {MAX_JUSTIFICATION} characters")
    if any(ord(ch) < 0x20 and ch not in "\n\t" for ch in value):
        raise FormatError(f"{field}: control characters are not allowed")
    return value


def check_duration(value: object, field: str = "duration_s", limit: int = MAX_DURATION_S) -> int:
    """A positive number of seconds, at most ``limit``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"{field}: expected an integer number of seconds")
    if not 1 <= value <= limit:
        raise FormatError(f"{field}: must be between 1 and {limit} seconds")
    return value


def check_byte_count(value: object, field: str, limit: int = MAX_BYTE_BUDGET) -> int:
    """A positive byte count, at most ``limit``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"{field}: expected an integer number of bytes")
    if not 1 <= value <= limit:
        raise FormatError(f"{field}: must be between 1 and {limit} bytes")
    return value
