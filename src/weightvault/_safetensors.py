"""The safetensors file layout, in one place: the header written, and the header read.

Why: a safetensors file is an 8-byte little-endian header length, a JSON header naming each
tensor's dtype, shape and ``data_offsets`` (relative to the end of the header), then the tensor
bytes. Converting a checkpoint (:mod:`weightvault.scan.convert`) and saving a state dict
(:mod:`weightvault.load.save`) both write it; building the header in one place keeps their files
byte for byte alike (the same compact JSON, the same padding) and the offsets computed once.

Reading is one parser too (:func:`header_length`, :func:`parse_header`) for the verified loader,
the scanner, the fingerprint reader and crypt's index: a scanner that read a header differently
from the loader could be shown one model while the user loads another. It reads the JSON as the
real ``safetensors`` library (0.8) does and checks the layout by its rules; where a reader
needs something else, the difference is a parameter, not a second parser. Every refusal is a
one-line :class:`~weightvault.errors.FormatError` (reason ``format``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from weightvault.errors import FormatError

__all__ = [
    "DTYPE_BITS",
    "MAX_HEADER",
    "Header",
    "HeaderTensor",
    "TensorSpan",
    "header_length",
    "parse_header",
    "safetensors_header",
]

#: A header longer than this is refused before it is read (safetensors' own limit).
MAX_HEADER = 100_000_000

#: Bits per element of each dtype code weightvault knows (the sub-byte floats are packed, so
#: sizes are checked in bits). A reader passes the codes it can build as ``dtypes``.
DTYPE_BITS: Mapping[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "F64": 64, "I64": 64, "U64": 64, "C64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip

_U64_MAX = 2**64 - 1
_FIELDS = frozenset({"dtype", "shape", "data_offsets"})


@dataclass(frozen=True)
class HeaderTensor:
    """One tensor as a safetensors header names it; each reader's record adds what it needs
    (where the bytes lie, their size, the element count)."""

    name: str
    dtype: str
    """The safetensors dtype code (``F32``, ``BF16``, ``I64``, ...)."""
    shape: tuple[int, ...]


@dataclass(frozen=True)
class TensorSpan(HeaderTensor):
    """A tensor of a parsed header and where its bytes lie, relative to the data section."""

    begin: int
    end: int

    @property
    def count(self) -> int:
        """The number of elements (the product of the shape)."""
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass(frozen=True)
class Header:
    """A parsed and checked safetensors header."""

    tensors: tuple[TensorSpan, ...]
    """In the header's order."""
    metadata: Mapping[str, str] | None
    """``__metadata__``, or None when the header has none (or ``null``)."""


def safetensors_header(
    tensors: Iterable[tuple[str, str, Sequence[int], int]],
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """The bytes that open a safetensors file whose tensors follow back to back in the order
    given, each as ``(name, dtype code, shape, byte count)``: the length prefix and the compact
    JSON header (``__metadata__`` first, when there is any), padded with spaces to a multiple of
    8 bytes so the data after it stays aligned."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    cursor = 0
    for name, dtype, shape, nbytes in tensors:
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [cursor, cursor + nbytes],
        }
        cursor += nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def header_length(
    prefix: bytes | bytearray | memoryview,
    name: str,
    file_size: int | None,
    *,
    max_length: int = MAX_HEADER,
) -> int:
    """The length of the JSON header, from the file's first 8 bytes, bounded by ``max_length``
    and by a ``file_size``-byte file (None: a stream whose size is not known)."""
    if len(prefix) < 8 or (file_size is not None and file_size < 8):
        raise FormatError(f"{name}: too short for a safetensors file")
    (length,) = struct.unpack_from("<Q", prefix, 0)
    if length > max_length or (file_size is not None and length > file_size - 8):
        raise FormatError(f"{name}: header length {length} is out of bounds")
    return int(length)


def parse_header(
    raw: bytes | bytearray | memoryview,
    name: str,
    data_size: int | None,
    *,
    dtypes: Collection[str] = DTYPE_BITS,
    locate_only: bool = False,
) -> Header:
    """The header JSON ``raw`` (the bytes after the length prefix) read as safetensors reads it,
    and checked against a data section of ``data_size`` bytes; ``name`` opens every message.

    The JSON: strict UTF-8 (no UTF-16 or BOM guessing), no duplicate keys (safetensors keeps
    the last tensor of a name, other readers the first), no ``NaN``, no lone surrogate escape,
    integers as Rust reads them (``-0`` and values past 64 bits are no sizes), bounded nesting.
    The layout: ``__metadata__`` maps strings to strings; each tensor has exactly dtype, shape
    and data_offsets, a dtype in ``dtypes``, a shape of 64-bit counts whose product fits in 64
    bits, and offsets spanning exactly its bytes; the tensors tile the data section from 0 with
    no gap or overlap and cover it to its end.

    The differences readers need, and no others:

    - ``dtypes``: the codes the caller can build (the scanner takes all of :data:`DTYPE_BITS`,
      the loader only those torch has); another known code is "unsupported", an unknown one
      "unknown".
    - ``data_size=None``: a stream whose size is unknown (the fingerprint reader); the tiling
      is checked but not the end, which the caller checks when it reaches it.
    - ``locate_only=True``: the tensors are only located, to match a copy that may have been
      altered (crypt's index, which incident and inventory use on suspect and stray files),
      never to load them: what safetensors itself reads passes (a repeated key keeps its last
      value, as safetensors does; a tensor entry may carry other fields), and each tensor's
      bytes need only lie inside the data section (gaps, overlaps, trailing bytes pass).
    """
    document = _load_json(bytes(raw), f"{name}: header", locate_only)
    if not isinstance(document, dict):
        raise FormatError(f"{name}: header is not a JSON object")
    metadata = None
    tensors: list[TensorSpan] = []
    for key, entry in document.items():
        if key == "__metadata__":
            if entry is not None and not (
                isinstance(entry, dict) and all(type(v) is str for v in entry.values())
            ):
                raise FormatError(f"{name}: __metadata__ must map strings to strings")
            metadata = entry
            continue
        problem = _tensor_problem(entry, data_size, dtypes, locate_only)
        if problem:
            raise FormatError(f"{name}: tensor {key!r}: {problem}")
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        tensors.append(TensorSpan(key, dtype, tuple(shape), begin, end))
    if not locate_only:
        _check_tiling(tensors, name, data_size)
    return Header(tuple(tensors), metadata)


def _tensor_problem(
    entry: Any, data_size: int | None, dtypes: Collection[str], other_fields: bool
) -> str:
    """What is wrong with one tensor entry on its own, or ``""`` (a model has thousands of
    tensors: the checks are written out, the words made only for a problem)."""
    if type(entry) is not dict or not (
        entry.keys() >= _FIELDS if other_fields else entry.keys() == _FIELDS
    ):
        return f"expected {'' if other_fields else 'exactly '}dtype, shape and data_offsets"
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if type(dtype) is not str or dtype not in dtypes:  # a list is unhashable
        known = type(dtype) is str and dtype in DTYPE_BITS
        return f"{'unsupported' if known else 'unknown'} dtype {dtype!r}"
    if type(shape) is not list:
        return "shape is not a list of non-negative integers"
    count = 1
    for dim in shape:  # safetensors multiplies in 64 bits and refuses an overflow
        if type(dim) is not int or not 0 <= dim <= _U64_MAX:
            return "shape is not a list of non-negative integers"
        count *= dim
        if count > _U64_MAX:
            return "shape has more elements than 64 bits can count"
    if type(offsets) is not list or len(offsets) != 2:
        return "data_offsets is not [begin, end] of non-negative integers"
    begin, end = offsets
    if type(begin) is not int or type(end) is not int or begin < 0 or end > _U64_MAX:
        return "data_offsets is not [begin, end] of non-negative integers"
    if begin > end or (data_size is not None and end > data_size):
        size = "" if data_size is None else f" ({data_size} bytes)"
        return f"data_offsets {offsets} outside the data{size}"
    bits = count * DTYPE_BITS[dtype]
    if bits % 8:
        return f"shape {shape} of {dtype} is not a whole number of bytes"
    if end - begin != bits // 8:
        return f"{end - begin} bytes for shape {shape} of {dtype}, which needs {bits // 8}"
    return ""


def _check_tiling(tensors: list[TensorSpan], name: str, data_size: int | None) -> None:
    """The tensors' bytes tile the data section from 0, no gap, no overlap, to its end."""
    cursor = 0
    for tensor in sorted(tensors, key=lambda t: (t.begin, t.end)):
        if tensor.begin < cursor:
            raise FormatError(f"{name}: tensor {tensor.name!r} overlaps the previous tensor")
        if tensor.begin > cursor:
            gap = tensor.begin - cursor
            raise FormatError(f"{name}: gap of {gap} unused bytes before tensor {tensor.name!r}")
        cursor = tensor.end
    if data_size is not None and cursor != data_size:
        left = data_size - cursor
        raise FormatError(f"{name}: {left} bytes of the data section belong to no tensor")


def _json_int(text: str) -> int:
    """A JSON integer as safetensors' parser reads it: a negative literal (``-0`` included,
    which it reads as a float) or one past 64 bits is never a size or an offset, so each becomes
    a value the checks refuse, instead of Python's exact (and, past 4300 digits, failing)
    conversion."""
    if text[0] == "-":
        return -1
    return int(text) if len(text) <= 20 else _U64_MAX + 1


def _pairs(
    where: str, escapes: bool, last_wins: bool
) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """The ``object_pairs_hook``: a repeated key is refused (with ``last_wins``, its last value
    stays, as in safetensors), and, where the text has ``\\u`` ``escapes``, so is a string (key
    or value) with a lone surrogate: a ``\\ud800`` escape Python keeps and no UTF-8 reader
    accepts (strict UTF-8 text cannot hold one unescaped)."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs) and not last_wins:  # a repeated key: name the first
            seen: set[str] = set()
            for key, _value in pairs:
                if key in seen:
                    raise FormatError(f"{where} has a duplicate key {key!r}")
                seen.add(key)
        if escapes:
            for key, value in pairs:
                try:
                    key.encode("utf-8")
                    if type(value) is str:
                        value.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise FormatError(f"{where} holds a lone surrogate escape") from exc
        return result

    return hook


def _load_json(raw: bytes, where: str, last_wins: bool) -> Any:
    """``raw`` parsed by the rules of :func:`parse_header`; every refusal a FormatError."""

    def no_constant(constant: str) -> NoReturn:
        raise FormatError(f"{where} holds {constant}, which is not JSON")

    try:
        return json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_pairs(where, b"\\u" in raw, last_wins),
            # only a "-0" needs the slow reading: other integers come out exact, and every
            # negative or 65-bit one is refused by the checks (a 4300-digit one below)
            parse_int=_json_int if b"-0" in raw else None,
            parse_constant=no_constant,
        )
    except UnicodeDecodeError as exc:
        raise FormatError(f"{where} is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise FormatError(f"{where} is not valid JSON: {exc}") from exc
    except ValueError as exc:  # Python's limit on the digits of an integer
        raise FormatError(f"{where} holds a number too long to read") from exc
    except RecursionError as exc:
        raise FormatError(f"{where} is nested too deeply") from exc
