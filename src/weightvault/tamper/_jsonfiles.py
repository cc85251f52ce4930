"""The lab's JSON files (suites, grids, defaults, results), read and written one way.

Reading is strict: a size bound before parsing, duplicate keys refused, exact key sets, errors
that name the field path. Writing is sorted and indented, so a file's SHA-256 names its content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from dataclasses import fields
from typing import Any, ClassVar

from weightvault._json import reject_duplicate_keys, require_fields
from weightvault.errors import FormatError

__all__ = ["JsonDocument", "field_values", "parse_json", "require_object"]


def parse_json(data: bytes, what: str, max_bytes: int) -> Any:
    """Parse a ``what`` file of at most ``max_bytes`` bytes, refusing duplicate keys."""
    if len(data) > max_bytes:
        raise FormatError(f"{what}: larger than {max_bytes} bytes")
    try:
        return json.loads(data, object_pairs_hook=reject_duplicate_keys(what))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{what}: not valid JSON ({exc})") from exc


def require_object(obj: Any, path: str, keys: Collection[str]) -> dict[str, Any]:
    """``obj`` if it is a JSON object whose keys are exactly ``keys`` (errors name ``path``)."""
    if not isinstance(obj, dict):
        raise FormatError(f"{path}: expected an object")
    require_fields(obj, keys, path)
    return obj


def field_values(record: Any) -> dict[str, Any]:
    """A dataclass's fields by name, tuples as lists: the JSON form of a flat record."""
    values = {f.name: getattr(record, f.name) for f in fields(record)}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


class JsonDocument:
    """A document written as sorted, indented JSON (``INDENT`` spaces), named by its digest."""

    INDENT: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=self.INDENT, sort_keys=True) + "\n").encode()

    @property
    def sha256(self) -> str:
        """Digest of the canonical JSON: defaults files name the grid they were tuned under."""
        return hashlib.sha256(self.to_json()).hexdigest()
