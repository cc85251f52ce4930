"""safetensors: the header is the whole attack surface, so it is checked strictly.

The checks are the verified loader's, by the one parser (:mod:`weightvault._safetensors`): a
header length in bounds, the JSON read as safetensors reads it (strict UTF-8, no duplicate keys,
no ``NaN``, no lone surrogate, no ``-0`` or 65-bit integer), known dtypes, shapes of
non-negative integers, ``data_offsets`` that match the shape, lie in the data section, do not
overlap and cover it completely, and no bytes after the data section. A header the parser
refuses is the file's error (its first problem), so no file the loader or the real library
refuses is reported clean. The scanner knows every dtype safetensors names (the sub-byte and
8-bit floats the loader does not build included): it judges the layout, not loadability.
"""

from __future__ import annotations

from weightvault._safetensors import MAX_HEADER, header_length, parse_header
from weightvault.errors import FormatError
from weightvault.scan._engine import FileContext
from weightvault.scan._io import ByteReader, Truncated

__all__ = ["scan_safetensors"]


def scan_safetensors(ctx: FileContext, r: ByteReader, location: str) -> None:
    start = r.tell()
    total = (r.end or start) - start
    try:
        prefix = r.read(8)
        length = header_length(
            prefix, "safetensors", total, max_length=min(MAX_HEADER, ctx.limits.max_json_bytes)
        )
        raw = r.read(length)
        parse_header(raw, "safetensors", total - 8 - length)
    except Truncated as exc:
        ctx.error(location, f"safetensors: truncated: {exc}")
    except FormatError as exc:
        ctx.error(location, exc.message)
