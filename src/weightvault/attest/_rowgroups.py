"""Per-row-group digests of dataset shards, so a reader can verify only what it reads.

A dataset signed as a whole (OMS) can only be checked by hashing every byte. The row-group
predicate (``https://weightvault.dev/attestation/row-groups/v1``), bound to the dataset's root
digest, adds one SHA-256 per byte range a reader loads on its own:

* Parquet: each row group's column chunks (one contiguous range per row group), plus the
  footer (file metadata, its length and the closing magic), which says where the groups are;
* Arrow IPC (file or stream format): each record batch's message (metadata and body), plus
  everything else (schema, dictionaries, footer) as the ``footer`` ranges;
* JSONL: ranges of whole lines, ``lines_per_group`` lines each (default 10,000).

The predicate::

    {"hashType": "sha256",
     "files": [{"name": "train-0.parquet", "format": "parquet", "size": 123456,
                "footer": [{"start": 120000, "end": 123456, "digest": HEX}],
                "groups": [{"start": 4, "end": 60000, "rows": 1000, "digest": HEX}, ...]}]}

:func:`verify_row_groups` reads the footer ranges and the requested groups' ranges (and nothing
else) from the file and compares their digests; the ranges come from the signed predicate, not
from the file, so a reader that then parses the file reads bytes that were checked as long as
the file is not changed in between (hand the reader the verified bytes to close that gap).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from weightvault.errors import FormatError

__all__ = [
    "ROW_GROUP_FORMATS",
    "ByteRange",
    "ShardLayout",
    "check_row_groups_predicate",
]

ROW_GROUP_FORMATS = ("parquet", "arrow", "jsonl")
DEFAULT_LINES_PER_GROUP = 10_000
_CHUNK = 1 << 20
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``[start, end)`` of a file, and the rows they hold (0 for metadata)."""

    start: int
    end: int
    rows: int = 0


@dataclass(frozen=True)
class ShardLayout:
    """Where a shard's row groups and metadata lie."""

    format: str
    size: int
    footer: tuple[ByteRange, ...]
    groups: tuple[ByteRange, ...]


def _int(obj: dict[str, Any], name: str, where: str) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FormatError(f"{where}.{name}: expected a non-negative integer")
    return value


def _ranges(items: Any, where: str, size: int, *, rows: bool) -> None:
    if not isinstance(items, list):
        raise FormatError(f"{where}: expected a list")
    for index, item in enumerate(items):
        at = f"{where}[{index}]"
        allowed = {"start", "end", "digest", "rows"} if rows else {"start", "end", "digest"}
        if not isinstance(item, dict):
            raise FormatError(f"{at}: expected an object")
        for key in item:
            if key not in allowed:
                raise FormatError(f"{at}.{key}: unknown field")
        start, end = _int(item, "start", at), _int(item, "end", at)
        if rows:
            _int(item, "rows", at)
        if not start <= end <= size:
            raise FormatError(f"{at}: range [{start}, {end}) not inside the file's {size} bytes")
        digest = item.get("digest")
        if not isinstance(digest, str) or len(digest) != 64 or set(digest) - _HEX:
            raise FormatError(f"{at}.digest: not 64 lowercase hex digits")


def check_row_groups_predicate(predicate: Any, where: str = "predicate") -> None:
    """Refuse a row-group predicate that lacks a field or holds a wrong one, naming it."""
    if not isinstance(predicate, dict):
        raise FormatError(f"{where}: expected an object")
    for key in predicate:
        if key not in ("hashType", "files"):
            raise FormatError(f"{where}.{key}: unknown field")
    if predicate.get("hashType") != "sha256":
        raise FormatError(f"{where}.hashType: expected sha256")
    files = predicate.get("files")
    if not isinstance(files, list) or not files:
        raise FormatError(f"{where}.files: expected a non-empty list")
    names: set[str] = set()
    for index, entry in enumerate(files):
        at = f"{where}.files[{index}]"
        if not isinstance(entry, dict):
            raise FormatError(f"{at}: expected an object")
        for key in entry:
            if key not in ("name", "format", "size", "footer", "groups"):
                raise FormatError(f"{at}.{key}: unknown field")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise FormatError(f"{at}.name: expected a non-empty string")
        if name in names:
            raise FormatError(f"{at}.name: {name!r} listed twice")
        names.add(name)
        if entry.get("format") not in ROW_GROUP_FORMATS:
            raise FormatError(f"{at}.format: expected one of {', '.join(ROW_GROUP_FORMATS)}")
        size = _int(entry, "size", at)
        _ranges(entry.get("footer"), f"{at}.footer", size, rows=False)
        _ranges(entry.get("groups"), f"{at}.groups", size, rows=True)
