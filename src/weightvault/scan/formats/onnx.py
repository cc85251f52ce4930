"""ONNX models, parsed as protobuf wire format directly (the ``onnx`` package is not needed).

Reported: operator domains outside the standard ones (they need a custom-op shared library the
loader must supply, which runs native code), and tensors whose external-data path leaves the
model folder (absolute paths, ``..``): loading reads whatever file the path names.
Large fields (``raw_data``) are skipped by seeking.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field

from weightvault.scan._engine import FileContext
from weightvault.scan._io import ByteReader, Truncated
from weightvault.scan.policy import Severity

__all__ = ["looks_like_onnx", "scan_onnx"]

STANDARD_DOMAINS = frozenset(
    {"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training",
     "com.microsoft", "com.microsoft.nchwc", "com.microsoft.mlfeaturizers",
     "com.ms.internal.nhwc", "ai.onnx.contrib.reserved"}
)
_MAX_DEPTH = 32


class _Bad(Exception):
    pass


@dataclass
class _Found:
    domains: dict[str, str] = field(default_factory=dict)  # domain -> where
    external: list[tuple[str, str]] = field(default_factory=list)  # (tensor, location)
    saw_model: bool = False


def looks_like_onnx(head: bytes) -> bool:
    """ModelProto files start with ir_version (field 1, varint) in practice."""
    return len(head) >= 4 and head[0] == 0x08 and 1 <= head[1] <= 20


def _varint(r: ByteReader) -> int:
    shift = 0
    result = 0
    while True:
        b = r.read_byte()
        if b < 0:
            raise Truncated("varint cut off")
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise _Bad("varint longer than 10 bytes")


def _fields(r: ByteReader, end: int):  # type: ignore[no-untyped-def]
    """Yield ``(field, wire_type, value)``; for wire type 2 value is the length (unread)."""
    while r.tell() < end:
        key = _varint(r)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Bad("field number 0")
        if wire == 0:
            yield number, 0, _varint(r)
        elif wire == 1:
            r.skip(8)
            yield number, 1, 0
        elif wire == 5:
            r.skip(4)
            yield number, 5, 0
        elif wire == 2:
            length = _varint(r)
            if r.tell() + length > end:
                raise _Bad(f"field {number}: length {length} runs past its message")
            yield number, 2, length
        else:
            raise _Bad(f"field {number}: unsupported wire type {wire}")
    if r.tell() != end:
        raise _Bad("message fields run past the message end")


def _delimited(r: ByteReader, end: int) -> Iterator[tuple[int, int]]:
    """Yield ``(field, length)`` for a message's length-delimited fields (strings, bytes,
    sub-messages: all this scanner reads); :func:`_fields` consumes the others."""
    for number, wire, value in _fields(r, end):
        if wire == 2:
            yield number, value


def _string(r: ByteReader, length: int) -> str:
    if length > (1 << 16):
        r.skip(length)
        return "<long string>"
    return r.read(length).decode("utf-8", "replace")


def _opset(r: ByteReader, end: int, found: _Found, where: str) -> None:
    for number, value in _delimited(r, end):
        if number == 1:
            found.domains.setdefault(_string(r, value), where)
        else:
            r.skip(value)


def _tensor(r: ByteReader, end: int, found: _Found) -> None:
    name = ""
    locations: list[str] = []
    for number, value in _delimited(r, end):
        if number == 8:
            name = _string(r, value)
        elif number == 13:
            key = val = ""
            entry_end = r.tell() + value
            for n2, v2 in _delimited(r, entry_end):
                if n2 == 1:
                    key = _string(r, v2)
                elif n2 == 2:
                    val = _string(r, v2)
                else:
                    r.skip(v2)
            if key == "location":
                locations.append(val)
        else:
            r.skip(value)
    for location in locations:
        found.external.append((name, location))


def _node(r: ByteReader, end: int, found: _Found, depth: int) -> None:
    op_type = domain = ""
    for number, value in _delimited(r, end):
        if number == 4:
            op_type = _string(r, value)
        elif number == 7:
            domain = _string(r, value)
        elif number == 5:
            _attribute(r, r.tell() + value, found, depth)
        else:
            r.skip(value)
    if domain not in STANDARD_DOMAINS:
        found.domains.setdefault(domain, f"node {op_type}")


def _attribute(r: ByteReader, end: int, found: _Found, depth: int) -> None:
    for number, value in _delimited(r, end):
        if number in (6, 11):
            _graph(r, r.tell() + value, found, depth + 1)
        elif number in (5, 10):
            _tensor(r, r.tell() + value, found)
        else:
            r.skip(value)


def _graph(r: ByteReader, end: int, found: _Found, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise _Bad(f"subgraphs nested deeper than {_MAX_DEPTH}")
    for number, value in _delimited(r, end):
        if number == 1:
            _node(r, r.tell() + value, found, depth)
        elif number == 5:
            _tensor(r, r.tell() + value, found)
        elif number == 15:
            sparse_end = r.tell() + value
            for n2, v2 in _delimited(r, sparse_end):
                if n2 in (1, 2):
                    _tensor(r, r.tell() + v2, found)
                else:
                    r.skip(v2)
        else:
            r.skip(value)


def _function(r: ByteReader, end: int, found: _Found) -> None:
    for number, value in _delimited(r, end):
        if number == 7:
            _node(r, r.tell() + value, found, 1)
        elif number == 9:
            _opset(r, r.tell() + value, found, "function opset_import")
        else:
            r.skip(value)


def _model(r: ByteReader, end: int, found: _Found) -> None:
    for number, wire, value in _fields(r, end):
        if number == 1 and wire == 0:
            found.saw_model = True
        if wire != 2:
            continue
        if number == 7:
            found.saw_model = True
            _graph(r, r.tell() + value, found, 0)
        elif number == 8:
            _opset(r, r.tell() + value, found, "opset_import")
        elif number == 25:
            _function(r, r.tell() + value, found)
        else:
            r.skip(value)


def external_path_problem(location: str) -> str | None:
    """Why an external-data location is unsafe, or ``None`` when it stays in the model folder."""
    text = location.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        return "absolute path"
    normalized = posixpath.normpath(text)
    if normalized == ".." or normalized.startswith("../"):
        return "leaves the model folder"
    if "\x00" in text:
        return "NUL byte"
    return None


def scan_onnx(ctx: FileContext, r: ByteReader, location: str, *, claimed: bool) -> bool:
    """Scan an ONNX model; returns False (nothing recorded) if unclaimed and not ONNX."""
    start = r.tell()
    end = r.end if r.end is not None else start
    found = _Found()
    try:
        _model(r, end, found)
    except (Truncated, _Bad, RecursionError) as exc:
        if not claimed:
            return False
        ctx.error(location, f"onnx: malformed protobuf: {exc}")
        return True
    if not found.saw_model and not claimed:
        return False
    for domain, where in sorted(found.domains.items()):
        if domain not in STANDARD_DOMAINS:
            ctx.find(
                Severity.UNKNOWN, "structure", f"onnx-domain:{domain}",
                f"custom operator domain {domain!r} ({where}) needs a custom-op library "
                "supplied at load time", location,
            )
    for tensor, path in found.external:
        problem = external_path_problem(path)
        if problem:
            ctx.find(
                Severity.DANGEROUS, "structure", f"onnx-external-data:{path}",
                f"tensor {tensor!r} reads external data from {path!r} ({problem})", location,
            )
    return True
