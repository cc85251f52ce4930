"""Strict JSON reading for the OMS formats: one way to load, type-check and name fields.

Signatures arrive from untrusted places, so parsing refuses what a lenient reader would
silently accept: duplicate keys (which a dict would collapse), wrong JSON types (a bool is not a
number), non-canonical base64/hex, and documents above a size limit. Every error names the field
path (``dsseEnvelope.signatures[0].sig``) so the one-line message says what is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, TypeVar

from weightvault._json import load_object
from weightvault.errors import FormatError

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "field_bool",
    "field_list",
    "field_object",
    "field_str",
    "hex_field",
    "load_json",
    "object_items",
    "reject_unknown",
]

#: Upper bound for a signature or payload document; a manifest of a multi-terabyte model with
#: 1 GB shards is a few hundred kilobytes, so this leaves room without inviting memory blow-ups.
MAX_DOCUMENT_BYTES = 64 * 1024 * 1024

_HEX_RE = re.compile(r"[0-9a-f]*")


def load_json(data: bytes, what: str) -> dict[str, Any]:
    """Parse one JSON object strictly (:func:`weightvault._json.load_object`), refusing
    documents too large to be a signature before anything is parsed."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise FormatError(f"{what}: larger than {MAX_DOCUMENT_BYTES} bytes; not a signature")
    return load_object(data, what)


def reject_unknown(obj: dict[str, Any], allowed: set[str] | frozenset[str], path: str) -> None:
    """Refuse keys the format does not define (a typo or a smuggled field)."""
    for key in obj:
        if key not in allowed:
            where = f"{path}.{key}" if path else key
            raise FormatError(f"{where}: unknown field")


def _where(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_T = TypeVar("_T")


def _field(obj: dict[str, Any], key: str, path: str, kind: type[_T], expected: str) -> _T:
    """``obj[key]``, present and of ``kind``; the error names the field and what it should be."""
    value = obj.get(key)
    if value is None:
        raise FormatError(f"{_where(path, key)}: missing")
    if not isinstance(value, kind):
        raise FormatError(f"{_where(path, key)}: expected {expected}")
    return value


def field_object(obj: dict[str, Any], key: str, path: str) -> dict[str, Any]:
    return _field(obj, key, path, dict, "an object")


def field_list(obj: dict[str, Any], key: str, path: str) -> list[Any]:
    return _field(obj, key, path, list, "a list")


def field_str(obj: dict[str, Any], key: str, path: str, *, optional: bool = False) -> str:
    if optional and obj.get(key) is None:
        return ""
    return _field(obj, key, path, str, "a string")


def field_bool(obj: dict[str, Any], key: str, path: str) -> bool:
    return _field(obj, key, path, bool, "true or false")


def object_items(
    items: list[Any], path: str, allowed: set[str] | frozenset[str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each item of a JSON list with its field path (``path[3]``), refusing an item that is not
    an object or that has fields the format does not define."""
    for index, item in enumerate(items):
        where = f"{path}[{index}]"
        if not isinstance(item, dict):
            raise FormatError(f"{where}: expected an object")
        reject_unknown(item, allowed, where)
        yield where, item


def hex_field(value: Any, where: str) -> bytes:
    """Decode a lowercase hex digest."""
    if not isinstance(value, str):
        raise FormatError(f"{where}: expected a hex string")
    if len(value) % 2 or not _HEX_RE.fullmatch(value):
        raise FormatError(f"{where}: not lowercase hex")
    return bytes.fromhex(value)
