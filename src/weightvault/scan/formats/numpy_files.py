"""NumPy ``.npy`` files (``.npz`` members too): header checks, and object arrays as pickles.

``numpy.load(..., allow_pickle=True)`` unpickles the data of an object array, so such a file is
scanned as a pickle after its header; a plain array must have exactly the size its header says.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from weightvault.scan._engine import FileContext
from weightvault.scan._io import ByteReader, Truncated
from weightvault.scan.policy import Severity

__all__ = ["scan_npy"]

_MAX_HEADER = 1 << 20


#: A simple dtype string as ``numpy.lib.format`` writes it: byte order, kind, size, unit.
_DESCR = re.compile(r"([<>|=]?)([?bBhHiIlLqQpPefdgFDGSaUVOMmiufcbO])(\d*)(\[[0-9]*[A-Za-z]+\])?")
_FIXED_SIZES = {
    "?": 1, "b": 1, "B": 1, "h": 2, "H": 2, "i": 4, "I": 4, "l": 8, "L": 8, "q": 8, "Q": 8,
    "p": 8, "P": 8, "e": 2, "f": 4, "d": 8, "g": 16, "F": 8, "D": 16, "G": 32,
}
_MAX_FIELDS = 10_000


def _simple_itemsize(descr: str) -> int | None:
    """Bytes per element of a dtype string; ``None`` for Python objects (``|O``)."""
    match = _DESCR.fullmatch(descr)
    if not match:
        raise ValueError(f"unsupported dtype {descr!r}")
    _, kind, digits, unit = match.groups()
    if kind == "O":
        return None
    if unit and kind not in "Mm":
        raise ValueError(f"unsupported dtype {descr!r}")
    if kind in "Mm":
        if digits not in ("", "8"):
            raise ValueError(f"unsupported datetime dtype {descr!r}")
        return 8
    if not digits:
        if kind in _FIXED_SIZES:
            return _FIXED_SIZES[kind]
        if kind in "SaUV":
            return 0  # flexible type of length 0
        raise ValueError(f"dtype {descr!r} without a size")
    size = int(digits)
    if kind in _FIXED_SIZES and kind not in "bifc":  # character codes carry no size
        raise ValueError(f"unsupported dtype {descr!r}")
    if kind in "iufcb" and size not in (1, 2, 4, 8, 16, 32):
        raise ValueError(f"unsupported dtype {descr!r}")
    return size * 4 if kind == "U" else size


def _shape_count(shape: Any) -> int:
    dims = shape if isinstance(shape, tuple) else (shape,)
    count = 1
    for dim in dims:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
            raise ValueError("sub-array shape is not a tuple of non-negative integers")
        count *= dim
    return count


def _descr_itemsize(descr: Any, depth: int = 0) -> int | None:
    """Bytes per element of a ``.npy`` descr, as ``numpy.lib.format.descr_to_dtype`` reads it
    (strings, ``(base, shape)`` sub-arrays, field lists with optional titles and shapes);
    ``None`` when it holds Python objects anywhere."""
    if depth > 32:
        raise ValueError("dtype description nested too deeply")
    if isinstance(descr, str):
        return _simple_itemsize(descr)
    if isinstance(descr, tuple) and len(descr) == 2:
        base = _descr_itemsize(descr[0], depth + 1)
        return None if base is None else base * _shape_count(descr[1])
    if isinstance(descr, list):
        if len(descr) > _MAX_FIELDS:
            raise ValueError("structured dtype with too many fields")
        total = 0
        for field in descr:
            if not isinstance(field, tuple) or len(field) not in (2, 3):
                raise ValueError("structured dtype field is not a (name, type[, shape]) tuple")
            name = field[0]
            if not (isinstance(name, str) or (
                isinstance(name, tuple) and len(name) == 2 and all(isinstance(n, str)
                                                                   for n in name)
            )):
                raise ValueError("structured dtype field name is not a string")
            size = _descr_itemsize(field[1], depth + 1)
            if size is None:
                return None
            total += size * (_shape_count(field[2]) if len(field) == 3 else 1)
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
    except SyntaxError as exc:
        ctx.error(location, f"npy: header is not a Python literal: {exc.msg}")
        return
    except (ValueError, UnicodeDecodeError, MemoryError, RecursionError):
        # (literal_eval's own message names an object address: not repeatable)
        ctx.error(location, "npy: header is not a Python literal (it holds names, calls or "
                  "expressions numpy.load refuses)")
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
            Severity.SAFE, "structure", "<object array>",
            "object array: its data is a pickle (loaded only with allow_pickle=True)", location,
        )
        scan_pickle_stream_once(r, ctx, location)
        if not r.at_eof():
            ctx.find(
                Severity.UNKNOWN, "structure", "<trailing data>",
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
            Severity.UNKNOWN, "structure", "<trailing data>",
            f"{remaining - expected} bytes after the array data (numpy ignores them)",
            f"{location}@{start + (r.tell() - start) + expected}",
        )
