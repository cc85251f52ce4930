"""GGUF (llama.cpp): every count, size and string length must fit in the file.

GGUF carries no pickle, but its parsers have had memory-safety bugs on inconsistent headers, and
its ``tokenizer.chat_template`` is a Jinja template that some loaders render unsandboxed
(CVE-2024-34359): every chat template is judged on Jinja2's own syntax tree
(:mod:`weightvault.scan.formats.chat_template`).
"""

from __future__ import annotations

import struct

from weightvault.scan._engine import FileContext
from weightvault.scan._io import ByteReader, Truncated
from weightvault.scan.policy import Severity

__all__ = ["scan_gguf"]

#: ggml type -> (block size in elements, bytes per block)
GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
    15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18),
    21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4),
    27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66),
    39: (32, 17), 40: (64, 36), 41: (128, 18),
}
_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_MAX_DIMS = 4
_MAX_TEMPLATE = 1 << 20


class _Bad(Exception):
    pass


def _judge_template(ctx: FileContext, key: str, template: str, location: str) -> None:
    from weightvault.scan.formats.chat_template import judge_template

    where = f"{location}:{key}" if location else key
    try:
        verdicts = judge_template(template)
    except ValueError as exc:
        ctx.error(where, str(exc))
        return
    for verdict in verdicts:
        ctx.find(Severity.DANGEROUS if verdict.dangerous else Severity.UNKNOWN, "template",
                 verdict.subject, f"{key}: {verdict.message}", location or ".")


def scan_gguf(ctx: FileContext, r: ByteReader, location: str) -> None:
    start = r.tell()
    size = (r.end or start) - start
    try:
        _parse(ctx, r, location, start, size)
    except Truncated as exc:
        ctx.error(location, f"gguf: truncated: {exc}")
    except _Bad as exc:
        ctx.error(location, f"gguf: {exc}")


def _parse(ctx: FileContext, r: ByteReader, location: str, start: int, size: int) -> None:
    def u32() -> int:
        return int(struct.unpack("<I", r.read(4))[0])

    def u64() -> int:
        return int(struct.unpack("<Q", r.read(8))[0])

    def remaining() -> int:
        return size - (r.tell() - start)

    def string(what: str, keep: bool = True, limit: int = 1 << 20) -> str:
        n = u64() if version >= 2 else u32()
        if n > remaining():
            raise _Bad(f"{what}: string length {n} exceeds the {remaining()} bytes left")
        if keep and n > limit:
            raise _Bad(f"{what}: {n} bytes, over the {limit}-byte limit for a chat template")
        if not keep or n > limit:
            r.skip(n)
            return ""
        try:
            return r.read(n).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Bad(f"{what}: string is not UTF-8") from exc

    r.read(4)
    version = u32()
    if version not in (1, 2, 3):
        raise _Bad(f"unsupported version {version}")
    count = u64 if version >= 2 else u32
    n_tensors = count()
    n_kv = count()
    # every key/value needs >= 8+1 +4 bytes, every tensor info >= 8+4+8+4+8
    if n_kv * 13 > remaining() or n_tensors * 32 > remaining():
        raise _Bad(f"{n_kv} keys / {n_tensors} tensors cannot fit in {size} bytes")
    alignment = 32
    for index in range(n_kv):
        key = string(f"key {index}")
        vtype = u32()
        if key == "general.alignment" and vtype in (4, 5):
            alignment = u32()
            if alignment == 0 or alignment & (alignment - 1):
                raise _Bad(f"general.alignment {alignment} is not a power of two")
            continue
        if vtype == 8:
            keep = key.startswith("tokenizer.chat_template")
            value = string(f"value of {key!r}", keep=keep, limit=_MAX_TEMPLATE)
            if keep:
                _judge_template(ctx, key, value, location)
        elif vtype == 9:
            item_type = u32()
            n_items = u64() if version >= 2 else u32()
            if item_type == 8:
                if n_items * (8 if version >= 2 else 4) > remaining():
                    raise _Bad(f"array {key!r}: {n_items} strings cannot fit")
                for _ in range(n_items):
                    string(f"array {key!r}", keep=False)
            elif item_type in _SCALAR:
                nbytes = n_items * _SCALAR[item_type]
                if nbytes > remaining():
                    raise _Bad(f"array {key!r}: {n_items} items cannot fit")
                r.skip(nbytes)
            else:
                raise _Bad(f"array {key!r}: unsupported item type {item_type}")
        elif vtype in _SCALAR:
            r.skip(_SCALAR[vtype])
        else:
            raise _Bad(f"key {key!r}: unknown value type {vtype}")
    spans: list[tuple[int, int, str]] = []
    for index in range(n_tensors):
        name = string(f"tensor {index} name")
        n_dims = u32()
        if n_dims > _MAX_DIMS:
            raise _Bad(f"tensor {name!r}: {n_dims} dimensions (max {_MAX_DIMS})")
        dims = [u64() for _ in range(n_dims)]
        ggml_type = u32()
        offset = u64()
        if ggml_type not in GGML_BLOCKS:
            raise _Bad(f"tensor {name!r}: unknown ggml type {ggml_type}")
        block, block_bytes = GGML_BLOCKS[ggml_type]
        elements = 1
        for dim in dims:
            elements *= dim
        if dims and dims[0] % block:
            raise _Bad(f"tensor {name!r}: first dimension {dims[0]} not a multiple of {block}")
        if offset % alignment:
            raise _Bad(f"tensor {name!r}: offset {offset} is not aligned to {alignment}")
        spans.append((offset, offset + elements // block * block_bytes, name))
    header_end = r.tell() - start
    data_start = (header_end + alignment - 1) // alignment * alignment
    data_size = size - data_start
    if data_size < 0:
        raise _Bad("file ends inside the header padding")
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if end > data_size:
            raise _Bad(f"tensor {name!r}: data [{begin}, {end}) beyond the {data_size} data bytes")
        if begin < cursor:
            raise _Bad(f"tensor {name!r}: overlaps the previous tensor")
        cursor = end
