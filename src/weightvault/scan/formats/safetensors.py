"""safetensors: the header is the whole attack surface, so it is checked strictly.

Checks: header length bound, UTF-8 JSON object without duplicate keys, known dtypes, shapes of
non-negative integers, ``data_offsets`` that match the shape, lie in the data section, do not
overlap and cover it completely, and no bytes after the data section.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from weightvault._json import reject_duplicate_keys
from weightvault.scan._engine import FileContext
from weightvault.scan._io import ByteReader, Truncated

__all__ = ["DTYPE_SIZES", "scan_safetensors"]

#: bits per element (sub-byte float types are packed; sizes are checked in bits).
DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}
DTYPE_SIZES = {k: v // 8 for k, v in DTYPE_BITS.items() if v % 8 == 0}
_MAX_HEADER = 100_000_000
_TENSOR_FIELDS = frozenset({"dtype", "shape", "data_offsets"})


def check_header(header: Any, data_size: int) -> list[str]:
    """Problems with a parsed header against a data section of ``data_size`` bytes."""
    problems: list[str] = []
    if not isinstance(header, dict):
        return ["header is not a JSON object"]
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                problems.append("__metadata__ must map strings to strings")
            continue
        # (a model has thousands of tensors: the checks are written out, messages made lazily)
        if not isinstance(entry, dict) or entry.keys() != _TENSOR_FIELDS:
            problems.append(f"tensor {name!r}: expected exactly dtype, shape and data_offsets")
            continue
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:  # a list is unhashable
            problems.append(f"tensor {name!r}: unknown dtype {dtype!r}")
            continue
        count = 1
        good = isinstance(shape, list)
        if good:
            for dim in shape:
                if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
                    good = False
                    break
                count *= dim
        if not good:
            problems.append(f"tensor {name!r}: shape is not a list of non-negative integers")
            continue
        if not isinstance(offsets, list) or len(offsets) != 2:
            problems.append(f"tensor {name!r}: data_offsets is not [begin, end]")
            continue
        begin, end = offsets
        if (
            not isinstance(begin, int) or isinstance(begin, bool)
            or not isinstance(end, int) or isinstance(end, bool)
        ):
            problems.append(f"tensor {name!r}: data_offsets is not [begin, end]")
            continue
        if not 0 <= begin <= end <= data_size:
            problems.append(
                f"tensor {name!r}: data_offsets {offsets} outside the data ({data_size} bytes)"
            )
            continue
        bits = count * DTYPE_BITS[dtype]
        if bits % 8 or (end - begin) != bits // 8:
            problems.append(f"tensor {name!r}: {end - begin} bytes for shape {shape} of {dtype}")
            continue
        spans.append((begin, end, name))
    if problems:
        return problems
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin < cursor:
            problems.append(f"tensor {name!r}: overlaps the previous tensor")
        elif begin > cursor:
            problems.append(f"gap of {begin - cursor} unused bytes before tensor {name!r}")
        cursor = max(cursor, end)
    if cursor != data_size:
        problems.append(f"{data_size - cursor} bytes of the data section belong to no tensor")
    return problems


def scan_safetensors(ctx: FileContext, r: ByteReader, location: str) -> None:
    start = r.tell()
    total = (r.end or start) - start
    try:
        (header_len,) = struct.unpack("<Q", r.read(8))
        if header_len > min(_MAX_HEADER, ctx.limits.max_json_bytes) or header_len > total - 8:
            ctx.error(location, f"safetensors: header length {header_len} is out of bounds")
            return
        raw = r.read(header_len)
    except Truncated as exc:
        ctx.error(location, f"safetensors: truncated: {exc}")
        return
    try:
        text = raw.decode("utf-8")
        if not text.startswith("{"):
            raise ValueError("header does not start with '{'")
        header = json.loads(text.rstrip(" "), object_pairs_hook=reject_duplicate_keys("header"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        ctx.error(location, f"safetensors: header is not valid JSON: {exc}")
        return
    data_size = total - 8 - header_len
    for problem in check_header(header, data_size):
        ctx.error(location, f"safetensors: {problem}")
