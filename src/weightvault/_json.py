"""Strict JSON, the one codec every format uses: duplicate keys are an error, not a last-wins.

A JSON object with two equal keys reads differently in different parsers (Python keeps the last,
others the first), so a signed or authenticated document with duplicates could mean one thing to
the verifier and another to the consumer. Every weightvault parser refuses them, and also
``NaN``/``Infinity`` (not JSON), text that is not UTF-8, nesting deep enough to exhaust the
stack, and (where the caller gives a limit) documents too large to parse. :func:`load_object`
reads; :func:`canonical` writes the one byte encoding a document is signed or hashed in.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any, NoReturn

from weightvault.errors import FormatError

__all__ = [
    "DuplicateKeyError",
    "canonical",
    "int_field",
    "load_object",
    "reject_duplicate_keys",
    "require_fields",
]


class DuplicateKeyError(FormatError, ValueError):
    """A JSON object repeats a key (also a ``ValueError``, like ``json``'s own decode errors)."""


def reject_duplicate_keys(what: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """An ``object_pairs_hook`` for :func:`json.loads` naming ``what`` in its error."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise DuplicateKeyError(f"{what}: duplicate key {key!r}")
            result[key] = value
        return result

    return hook


def load_object(data: bytes | str, what: str, *, max_bytes: int | None = None) -> dict[str, Any]:
    """Parse one JSON object strictly; every refusal is a :class:`FormatError` naming ``what``.

    ``max_bytes`` is checked before parsing (the caller's bound for this kind of document).
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise FormatError(f"{what}: larger than {max_bytes} bytes")

    def no_constant(name: str) -> NoReturn:
        raise FormatError(f"{what}: {name} is not valid JSON")

    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(
            text, object_pairs_hook=reject_duplicate_keys(what), parse_constant=no_constant
        )
    except UnicodeDecodeError as exc:
        raise FormatError(f"{what}: not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise FormatError(
            f"{what}: malformed JSON at line {exc.lineno} column {exc.colno} ({exc.msg})"
        ) from exc
    except RecursionError as exc:
        raise FormatError(f"{what}: JSON nested too deeply") from exc
    if not isinstance(value, dict):
        raise FormatError(f"{what}: expected a JSON object at the top level")
    return value


def canonical(document: Any, *, ascii_only: bool = False) -> bytes:
    """The one byte encoding of ``document``: sorted keys, no spaces, UTF-8.

    ``ascii_only`` escapes every non-ASCII character (``\\u00e9``), the spelling formats that
    chose it once (log entries, approval statements) must keep: their bytes are signed.
    """
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only)
    return text.encode("utf-8")


def require_fields(data: dict[str, Any], expected: Collection[str], where: str) -> None:
    """Refuse an object whose keys are not exactly ``expected``, naming the first missing field
    (``where.name: missing``), else the first unknown one."""
    missing = set(expected) - data.keys()
    if missing:
        raise FormatError(f"{where}.{sorted(missing)[0]}: missing")
    extra = data.keys() - set(expected)
    if extra:
        raise FormatError(f"{where}.{sorted(extra)[0]}: unknown field")


def int_field(value: object, where: str) -> int:
    """``value`` if it is a JSON integer (``true`` is not one, though Python says it is)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"{where}: expected an integer")
    return value
