"""Strict base64 for header fields: canonical spelling only, so a header has one encoding."""

from __future__ import annotations

import base64
import binascii

from weightvault.errors import FormatError

__all__ = ["b64decode_field", "b64encode", "b64url_decode", "b64url_encode"]


def b64encode(data: bytes) -> str:
    """Standard base64 with padding (the spelling every header field uses)."""
    return base64.b64encode(data).decode("ascii")


def b64decode_field(value: object, where: str, *, size: int | None = None) -> bytes:
    """Decode a header field, refusing non-strings, non-canonical text and wrong lengths."""
    if not isinstance(value, str):
        raise FormatError(f"{where}: expected a base64 string")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise FormatError(f"{where}: not valid base64") from exc
    if b64encode(data) != value:
        raise FormatError(f"{where}: base64 is not in canonical form")
    if size is not None and len(data) != size:
        raise FormatError(f"{where}: expected {size} bytes, got {len(data)}")
    return data


def b64url_encode(data: bytes) -> str:
    """URL-safe base64 without padding: used in recipient strings and key files."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, where: str, *, size: int) -> bytes:
    """Decode URL-safe base64 without padding, canonical only, of an exact length."""
    try:
        data = base64.urlsafe_b64decode(text.encode("ascii") + b"=" * (-len(text) % 4))
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise FormatError(f"{where}: not valid base64url") from exc
    if len(data) != size or b64url_encode(data) != text:
        raise FormatError(f"{where}: expected {size} bytes of canonical base64url")
    return data
