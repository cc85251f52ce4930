"""A record's fields as a JSON-ready dict, for records whose JSON form is exactly their fields.

Why: a hand-written ``to_dict``/``to_json`` that lists every field of a dataclass is a second
list of the fields, and the two drift apart: a field added to the class is silently missing from
the JSON. Reading the fields from the dataclass keeps one list. Only for records whose JSON form
*is* their fields, unchanged; a record that renames, rounds or derives a value writes its own.

Unlike :func:`dataclasses.asdict` this is shallow: each value is returned as it is (no deep copy,
no recursion into nested dataclasses or containers), so a record that holds others still decides
how those are written, and nothing is copied that the caller does not change.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["field_dict"]


def field_dict(record: DataclassInstance, *, sort_keys: bool = False) -> dict[str, Any]:
    """``{field name: value}`` of ``record``, in declaration order (by name if ``sort_keys``).

    The fields are those :func:`dataclasses.fields` lists (no ``ClassVar``, no ``InitVar``)."""
    names = [f.name for f in dataclasses.fields(record)]
    if sort_keys:
        names.sort()
    return {name: getattr(record, name) for name in names}
