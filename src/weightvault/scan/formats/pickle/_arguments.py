"""Opcode arguments: the numbers and text the interpreter reads, and how it decodes them.

The hot loop decodes the common binary arguments inline (see :mod:`._machine`); this module holds
the constants it shares with the rest of the package and the decoders of the rarer, text-based
arguments (protocol 0), each raising :class:`PickleError` where the C unpickler fails.
"""

from __future__ import annotations

import codecs
import re
import struct
from typing import Any

from weightvault.scan._io import ByteReader
from weightvault.scan.formats.pickle._values import Opaque, PickleError, PickleRun

__all__ = [
    "GETATTR",
    "HIGHEST_PROTOCOL",
    "NO_FRAME",
    "UNPACK_F64",
    "UNPACK_I32",
    "UNPACK_U16",
    "UNPACK_U32",
    "UNPACK_U64",
    "crossing",
    "decode_binstring",
    "decode_line",
    "frame_start",
    "looks_like_pickle_start",
    "numpy_itemsize",
    "parse_int",
    "parse_long",
    "parse_string",
]

HIGHEST_PROTOCOL = 5
UNPACK_I32 = struct.Struct("<i").unpack
UNPACK_U32 = struct.Struct("<I").unpack
UNPACK_U64 = struct.Struct("<Q").unpack
UNPACK_U16 = struct.Struct("<H").unpack
UNPACK_F64 = struct.Struct(">d").unpack
#: "Not inside a frame": a frame end no offset reaches.
NO_FRAME = 1 << 62
#: ``getattr`` called on a global and a literal name is resolved like a dotted name.
GETATTR = ("builtins.getattr",)

_PICKLE_FIRST_BYTES = frozenset(
    b"(.012FGIJKLMNPQRSTUVXabcdeghijlopqrstu}])" + bytes(range(0x80, 0x99))
)


def looks_like_pickle_start(head: bytes) -> bool:
    """Cheap test on the first bytes: a PROTO opcode, or any opcode of protocols 0-1."""
    if not head:
        return False
    if head[0] == 0x80:
        return len(head) >= 2 and head[1] <= HIGHEST_PROTOCOL
    return head[0] in _PICKLE_FIRST_BYTES


def crossing(offset: int, frame_end: int) -> PickleError:
    """The error for an argument that straddles the end of its FRAME (see the package notes)."""
    return PickleError(
        f"an opcode argument crosses the end of its FRAME (at offset {frame_end}); "
        "unpicklers disagree on what follows (pickle.load on a file discards the frame's rest, "
        "pickle.loads reads on, the pure-Python unpickler fails)", offset,
    )


def frame_start(r: ByteReader, run: PickleRun, length: int, frame_end: int, offset: int) -> int:
    """Where a FRAME of ``length`` bytes that starts here ends (the reader is past its header).

    A frame that starts before the previous one ends is refused (the pure-Python unpickler
    refuses it, the C one reads on); one longer than the data is a deferred disagreement: the C
    unpicklers stop there, the pure-Python one runs the opcodes there are.
    """
    position = r.tell()
    if frame_end != NO_FRAME and position < frame_end:
        raise PickleError(
            "FRAME before the end of the previous frame (the pure-Python unpickler refuses it, "
            "the C one reads on)", offset,
        )
    remaining = r.remaining()
    if remaining is not None and length > remaining:
        if run.deferred is None:
            run.deferred = PickleError(
                f"FRAME declares {length} bytes but only {remaining} follow (the C unpickler "
                "stops here, the pure-Python one runs what there is)", offset,
            )
        return position + remaining
    return position + length


def decode_line(line: bytes, encoding: str, offset: int, problem: str) -> str:
    """A text argument decoded as the unpickler decodes it: GLOBAL and INST lines (module,
    name) as UTF-8, UNICODE lines as raw-unicode-escape; ``problem`` says what failed."""
    try:
        return line.decode(encoding)
    except UnicodeDecodeError as exc:
        raise PickleError(problem, offset) from exc


def parse_int(line: bytes, offset: int) -> Any:
    """The INT opcode's line: ``00``/``01`` are the booleans of protocol 0."""
    if line in (b"00", b"01"):
        return line == b"01"
    text = line.decode("ascii", "replace").strip()
    if len(text) > 4300:
        return Opaque("int")
    for base in (0, 10):
        try:
            return int(text, base)
        except ValueError:
            continue
    raise PickleError("INT argument is not an integer", offset)


def parse_long(line: bytes, offset: int) -> Any:
    """The LONG opcode's line (an optional ``L`` suffix, as Python 2 wrote it)."""
    if line.endswith(b"L"):
        line = line[:-1]
    try:
        return int(line) if len(line) <= 4300 else Opaque("int")
    except ValueError as exc:
        raise PickleError("LONG argument is not an integer", offset) from exc


def parse_string(line: bytes, offset: int) -> Any:
    """The STRING opcode's quoted, escaped line."""
    if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
        raise PickleError("the STRING opcode argument must be quoted", offset)
    try:
        data = codecs.escape_decode(line[1:-1])[0]
    except ValueError as exc:
        raise PickleError("bad escape in STRING argument", offset) from exc
    return data.decode("latin-1")


def decode_binstring(n: int, r: ByteReader, offset: int, max_kept: int) -> Any:
    """BINSTRING/SHORT_BINSTRING data (latin-1), skipped when longer than ``max_kept``."""
    if n < 0:
        raise PickleError("BINSTRING pickle has negative byte count", offset)
    if n > max_kept:
        r.skip(n)
        return Opaque("str", n)
    return r.read(n).decode("latin-1")


_DTYPE_RE = re.compile(r"^[<>|=]?([biufcmMOSUV?])(\d*)$")
_DTYPE_SIZES = {"b": 1, "?": 1}


def numpy_itemsize(descr: str) -> int | None:
    """Item size of a simple NumPy dtype string (``<f4``, ``|b1``, ``<U3``); ``None`` for object.

    Raises ``ValueError`` for strings it does not understand.
    """
    aliases = {
        "f8": "<f8", "float64": "<f8", "float32": "<f4", "f4": "<f4", "f2": "<f2",
        "int64": "<i8", "int32": "<i4", "i8": "<i8", "i4": "<i4", "i2": "<i2", "i1": "|i1",
        "u1": "|u1", "uint8": "|u1", "bool": "|b1", "b1": "|b1", "O": "|O", "O8": "|O",
        "c8": "<c8", "c16": "<c16", "complex128": "<c16", "float16": "<f2",
    }
    descr = aliases.get(descr, descr)
    match = _DTYPE_RE.match(descr)
    if not match:
        raise ValueError(f"unsupported dtype {descr!r}")
    kind, digits = match.group(1), match.group(2)
    if kind == "O":
        return None
    if kind in _DTYPE_SIZES and not digits:
        return _DTYPE_SIZES[kind]
    if not digits:
        raise ValueError(f"dtype {descr!r} without a size")
    size = int(digits)
    return size * 4 if kind == "U" else size

