"""NumPy ``.npy`` files (``.npz`` members too): header checks, and object arrays as pickles.

``numpy.load(..., allow_pickle=True)`` unpickles the data of an object array, so such a file is
scanned as a pickle after its header; a plain array must have exactly the size its header says.
"""

from __future__ import annotations

import struct
from typing import Any

from weightvault.scan._engine import FileContext
from weightvault.scan._io import ByteReader, Truncated
from weightvault.scan.policy import Severity

__all__ = ["scan_npy"]

_MAX_HEADER = 1 << 20


def _descr_itemsize(descr: Any) -> int | None:
    """Bytes per element of a ``.npy`` descr; ``None`` when it holds Python objects."""
    from weightvault.scan.formats.pickle import numpy_itemsize

    if isinstance(descr, str):
        return numpy_itemsize(descr)
    if isinstance(descr, list):
        total = 0
        for field in descr:
            if not isinstance(field, tuple) or len(field) not in (2, 3):
                raise ValueError("structured dtype field is not a (name, type[, shape]) tuple")
            size = _descr_itemsize(field[1])
            if size is None:
                return None
            count = 1
            if len(field) == 3:
                shape = field[2] if isinstance(field[2], tuple) else (field[2],)
                for dim in shape:
                    if not isinstance(dim, int) or dim < 0:
                        raise ValueError("structured dtype field shape is invalid")
                    count *= dim
            total += size * count
        return total
    raise ValueError(f"unsupported dtype description {descr!r}")


def scan_npy(ctx: FileContext, r: ByteReader, location: str) -> None:
    import ast

    from weightvault.scan.formats.pickle import scan_pickle_stream_once

    start = r.tell()
    try:
        magic = r.read(8)
        major = magic[6]
        if major == 1:
            (header_len,) = struct.unpack("<H", r.read(2))
        elif major in (2, 3):
            (header_len,) = struct.unpack("<I", r.read(4))
        else:
            ctx.error(location, f"npy: unknown format version {major}.{magic[7]}")
            return
        if header_len > _MAX_HEADER:
            ctx.error(location, f"npy: header of {header_len} bytes is over the limit")
            return
        header_bytes = r.read(header_len)
    except Truncated as exc:
        ctx.error(location, f"npy: truncated header: {exc}")
        return
    try:
        header = ast.literal_eval(header_bytes.decode("latin-1" if major < 3 else "utf-8"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError) as exc:
        ctx.error(location, f"npy: header is not a Python literal: {exc}")
        return
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        ctx.error(location, "npy: header must have exactly descr, fortran_order and shape")
        return
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        ctx.error(location, "npy: shape is not a tuple of non-negative integers")
        return
    try:
        itemsize = _descr_itemsize(header["descr"])
    except ValueError as exc:
        ctx.error(location, f"npy: {exc}")
        return
    if itemsize is None:
        ctx.find(
            Severity.CLEAN, "structure", "<object array>",
            "object array: its data is a pickle (loaded only with allow_pickle=True)", location,
        )
        scan_pickle_stream_once(r, ctx, location)
        if not r.at_eof():
            ctx.find(
                Severity.SUSPICIOUS, "structure", "<trailing data>",
                "data after the object array's pickle", f"{location}@{r.tell()}",
            )
        return
    count = 1
    for dim in shape:
        count *= dim
    expected = count * itemsize
    remaining = r.remaining() or 0
    if remaining < expected:
        ctx.error(location, f"npy: truncated: header promises {expected} data bytes, "
                  f"{remaining} present")
    elif remaining > expected:
        ctx.find(
            Severity.SUSPICIOUS, "structure", "<trailing data>",
            f"{remaining - expected} bytes after the array data (numpy ignores them)",
            f"{location}@{start + (r.tell() - start) + expected}",
        )
