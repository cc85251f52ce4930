"""Strict base64, the one decoder every format uses: what is refused, and how it is said.

Signed and authenticated documents arrive from untrusted places. A lenient decoder lets one
value have many spellings (whitespace, missing padding, non-zero trailing bits), so two readers
can disagree on what was signed. :func:`decode` takes the canonical spelling only (it re-encodes
the bytes and compares); every error names the field (``bundle.dsseEnvelope.sig: not valid
base64``) and is a :class:`~weightvault.errors.FormatError`.
"""

from __future__ import annotations

import base64
import binascii

from weightvault.errors import FormatError

__all__ = ["decode", "decode_proto", "decode_url", "encode", "encode_url"]


def encode(data: bytes) -> str:
    """Standard base64 with padding: the spelling every format here writes."""
    return base64.b64encode(data).decode("ascii")


def decode(
    value: object,
    where: str,
    *,
    size: int | None = None,
    max_size: int | None = None,
    canonical: bool = True,
) -> bytes:
    """Decode standard base64 (padding required, no stray characters).

    ``canonical`` (the default) also refuses a second spelling of the same bytes; ``size`` asks
    for an exact length, ``max_size`` bounds the text before anything is decoded.
    """
    if not isinstance(value, str):
        raise FormatError(f"{where}: expected a base64 string")
    if max_size is not None and len(value) > max_size * 4 // 3 + 4:
        raise FormatError(f"{where}: expected base64 of at most {max_size} bytes")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise FormatError(f"{where}: not valid base64") from exc
    if canonical and encode(data) != value:
        raise FormatError(f"{where}: base64 is not in canonical form")
    if size is not None and len(data) != size:
        raise FormatError(f"{where}: expected {size} bytes, got {len(data)}")
    return data


def decode_proto(value: str, where: str) -> bytes:
    """Decode a protobuf-JSON ``bytes`` field, which allows more than one spelling.

    The OMS peer and sigstore write standard base64 with padding; the protobuf JSON mapping also
    accepts URL-safe base64 (padding optional) on input, and so does this reader, so a bundle
    any conforming tool wrote reads here. Surrounding whitespace is ignored, stray characters
    inside are not.
    """
    text = value.strip()
    if not text:
        return b""
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"{where}: not valid base64") from exc


def encode_url(data: bytes) -> str:
    """URL-safe base64 without padding: recipient strings and key files."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_url(text: str, where: str, *, size: int) -> bytes:
    """Decode URL-safe base64 without padding, canonical only, of an exact length."""
    try:
        data = base64.urlsafe_b64decode(text.encode("ascii") + b"=" * (-len(text) % 4))
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise FormatError(f"{where}: not valid base64url") from exc
    if len(data) != size or encode_url(data) != text:
        raise FormatError(f"{where}: expected {size} bytes of canonical base64url")
    return data
