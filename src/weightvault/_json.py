"""Strict JSON parsing shared by every format: duplicate keys are an error, not a last-wins.

A JSON object with two equal keys reads differently in different parsers (Python keeps the last,
others the first), so a signed or authenticated document with duplicates could mean one thing to
the verifier and another to the consumer. Every weightvault parser refuses them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from weightvault.errors import FormatError

__all__ = ["DuplicateKeyError", "reject_duplicate_keys"]


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
