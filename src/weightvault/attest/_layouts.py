"""Where a dataset shard's row groups lie: the byte ranges a reader loads on its own.

The row-group predicate (:mod:`weightvault.attest._rowgroups`) hashes each range found here.
Finding them is parsing each format's own index, with nothing executed and no data decoded:

* Parquet: the footer's column chunks (via pyarrow), one contiguous range per row group;
* Arrow IPC (file or stream format): each record batch's message, by walking the length-prefixed
  messages and reading the FlatBuffer header fields by hand; pyarrow must count the same
  batches with the same rows, or the file is refused;
* JSONL: ranges of ``lines_per_group`` whole lines, found a chunk at a time.

Kept apart from hashing and verifying because it is the part that reads untrusted file
structure; the rest trusts only the signed predicate's ranges.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from weightvault.errors import FormatError, InputError

__all__ = [
    "DEFAULT_LINES_PER_GROUP",
    "ROW_GROUP_FORMATS",
    "ByteRange",
    "ShardLayout",
    "layout_shard",
    "shard_format",
]

ROW_GROUP_FORMATS = ("parquet", "arrow", "jsonl")
DEFAULT_LINES_PER_GROUP = 10_000
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``[start, end)`` of a file, and the rows they hold (0 for metadata)."""

    start: int
    end: int
    rows: int = 0


@dataclass(frozen=True)
class ShardLayout:
    """Where a shard's row groups lie (the metadata is every other byte)."""

    format: str
    size: int
    groups: tuple[ByteRange, ...]

    @property
    def metadata(self) -> tuple[ByteRange, ...]:
        """The bytes outside every group, as ranges."""
        gaps: list[ByteRange] = []
        position = 0
        for group in sorted(self.groups, key=lambda g: g.start):
            if group.start > position:
                gaps.append(ByteRange(position, group.start))
            position = max(position, group.end)
        if position < self.size:
            gaps.append(ByteRange(position, self.size))
        return tuple(gaps)


_SUFFIXES = {
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


def shard_format(path: str | os.PathLike[str]) -> str | None:
    """``parquet``, ``arrow`` or ``jsonl`` by the file's name, else ``None``."""
    return _SUFFIXES.get(Path(path).suffix.lower())


def _parquet_groups(path: Path) -> list[ByteRange]:
    """Each row group's column chunks, from the Parquet footer (one range per group)."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    try:
        metadata = pq.ParquetFile(path).metadata
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise FormatError(f"{path}: not a readable Parquet file ({exc})") from exc
    groups: list[ByteRange] = []
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        starts, ends = [], []
        for column_index in range(group.num_columns):
            column = group.column(column_index)
            start = column.data_page_offset
            if column.has_dictionary_page and column.dictionary_page_offset is not None:
                start = min(start, column.dictionary_page_offset)
            starts.append(start)
            ends.append(start + column.total_compressed_size)
        if not starts:
            raise FormatError(f"{path}: row group {index} has no columns")
        groups.append(ByteRange(min(starts), max(ends), group.num_rows))
    return groups


def _table_field(buffer: bytes, table: int, field: int) -> int | None:
    """Where a FlatBuffers table's field lies (``None``: absent, the default applies)."""
    vtable = table - int.from_bytes(buffer[table : table + 4], "little", signed=True)
    vtable_size = int.from_bytes(buffer[vtable : vtable + 2], "little")
    entry = 4 + 2 * field
    if entry + 2 > vtable_size:
        return None
    offset = int.from_bytes(buffer[vtable + entry : vtable + entry + 2], "little")
    return table + offset if offset else None


def _arrow_message(metadata: bytes, where: str) -> tuple[int, int, int]:
    """``(header type, body length, rows)`` of an Arrow IPC ``Message`` FlatBuffer
    (Message: version 0, header_type 1, header 2, bodyLength 3; RecordBatch: length 0)."""
    try:
        root = int.from_bytes(metadata[0:4], "little")
        type_at = _table_field(metadata, root, 1)
        header_type = metadata[type_at] if type_at is not None else 0
        body_at = _table_field(metadata, root, 3)
        body = int.from_bytes(metadata[body_at : body_at + 8], "little") if body_at else 0
        rows = 0
        header_at = _table_field(metadata, root, 2)
        if header_type == 3 and header_at is not None:
            batch = header_at + int.from_bytes(metadata[header_at : header_at + 4], "little")
            length_at = _table_field(metadata, batch, 0)
            rows = int.from_bytes(metadata[length_at : length_at + 8], "little") if length_at else 0
    except IndexError as exc:
        raise FormatError(f"{where}: malformed Arrow IPC message") from exc
    return header_type, body, rows


def _arrow_groups(path: Path) -> list[ByteRange]:
    """Each record batch's message (length prefix, metadata, body), walking the IPC stream
    (after the ``ARROW1`` magic for the file format)."""
    size = path.stat().st_size
    groups: list[ByteRange] = []
    with open(path, "rb") as handle:
        head = handle.read(8)
        position = 8 if head[:6] == b"ARROW1" else 0
        while position + 8 <= size:
            handle.seek(position)
            prefix = handle.read(8)
            start = position
            length = int.from_bytes(prefix[0:4], "little")
            if length == 0xFFFFFFFF:  # continuation marker, then the length
                length = int.from_bytes(prefix[4:8], "little")
                position += 8
            else:  # the pre-1.0 format: the length alone
                position += 4
            if length == 0:
                break  # end of stream
            if position + length > size:
                raise FormatError(f"{path}: Arrow IPC message at {start} runs past the end")
            handle.seek(position)
            header_type, body, rows = _arrow_message(handle.read(length), str(path))
            position += length + body
            if position > size:
                raise FormatError(f"{path}: Arrow IPC body at {start} runs past the end")
            if header_type == 3:
                groups.append(ByteRange(start, position, rows))
    _check_arrow_count(path, groups)
    return groups


def _check_arrow_count(path: Path, groups: list[ByteRange]) -> None:
    """The walk must find the batches pyarrow reads, with the same row counts."""
    import pyarrow as pa

    try:
        try:
            reader = pa.ipc.open_file(path)
            rows = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
        except pa.ArrowInvalid:
            with pa.ipc.open_stream(pa.OSFile(str(path))) as stream:
                rows = [batch.num_rows for batch in stream]
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: not a readable Arrow IPC file ({exc})") from exc
    if rows != [g.rows for g in groups]:
        raise FormatError(f"{path}: record batches do not match the IPC messages found")


def _newline_ends(chunk: bytes) -> Sequence[int]:
    """The offset just past each ``\n`` in ``chunk`` (NumPy when present: JSONL files of short
    lines have millions of them)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - NumPy is there wherever pyarrow is
        ends, offset = [], chunk.find(b"\n")
        while offset >= 0:
            ends.append(offset + 1)
            offset = chunk.find(b"\n", offset + 1)
        return ends
    found = np.flatnonzero(np.frombuffer(chunk, np.uint8) == 0x0A) + 1
    return cast("Sequence[int]", found)


def _jsonl_groups(path: Path, lines_per_group: int) -> list[ByteRange]:
    """Ranges of ``lines_per_group`` whole lines (the last may be shorter)."""
    groups: list[ByteRange] = []
    start = position = lines = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            ends = _newline_ends(chunk)
            # the lines that close a group: the (lines_per_group - lines)-th newline, then every
            # lines_per_group-th one
            for index in range(lines_per_group - lines - 1, len(ends), lines_per_group):
                end = position + int(ends[index])
                groups.append(ByteRange(start, end, lines_per_group))
                start = end
            lines = (lines + len(ends)) % lines_per_group
            position += len(chunk)
    if position > start:
        tail = lines + 1 if not _ends_with_newline(path, position) else lines
        groups.append(ByteRange(start, position, tail))
    return groups


def _ends_with_newline(path: Path, size: int) -> bool:
    with open(path, "rb") as handle:
        handle.seek(size - 1)
        return handle.read(1) == b"\n"


def layout_shard(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    lines_per_group: int = DEFAULT_LINES_PER_GROUP,
) -> ShardLayout:
    """Where the row groups of a Parquet, Arrow IPC or JSONL file lie."""
    shard = Path(path)
    kind = format or shard_format(shard)
    if kind not in ROW_GROUP_FORMATS:
        raise InputError(f"{shard}: not a Parquet, Arrow or JSONL file (by its name)")
    if lines_per_group <= 0:
        raise ValueError("lines_per_group must be positive")
    size = shard.stat().st_size
    if kind == "parquet":
        groups = _parquet_groups(shard)
    elif kind == "arrow":
        groups = _arrow_groups(shard)
    else:
        groups = _jsonl_groups(shard, lines_per_group)
    return ShardLayout(kind, size, tuple(groups))
