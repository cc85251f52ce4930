"""The oldest PyTorch format: a tar with ``sys_info``, ``pickle``, ``storages`` and ``tensors``.

``storages`` and ``tensors`` interleave small pickles with raw bytes; they are walked exactly as
``torch.serialization._legacy_load`` reads them, so every pickle is interpreted and every raw
region is skipped: ``storages`` is a count, then per storage a pickled ``(key, location,
storage type)`` followed by an int64 element count and the elements, then a pickled list of
views; ``tensors`` is a count, then per tensor a pickled ``(key, storage id, tensor type)``
followed by the int32 dimension count, 4 unused bytes, the sizes and strides (int64 each) and the
int64 storage offset. (``sys_info`` is never read by the loader; ``pickle`` is an ordinary
pickle and is scanned as one.)
"""

from __future__ import annotations

import struct

from weightvault.scan._engine import FileContext
from weightvault.scan._io import ByteReader, Truncated
from weightvault.scan.formats.pickle import (
    STORAGE_ELEMENT_SIZE,
    Global,
    PickleError,
    PickleMachine,
    PickleRun,
)

__all__ = ["scan_legacy_tar_member"]


def scan_legacy_tar_member(ctx: FileContext, r: ByteReader, location: str, name: str) -> None:
    machine = PickleMachine(ctx, location)

    def one() -> PickleRun:
        run = machine.run_one(r)
        ctx.findings.extend(run.findings)
        return run

    try:
        count = one().value
        if not isinstance(count, int) or count < 0:
            ctx.error(location, f"legacy tar {name}: count is not a non-negative integer")
            return
        for _ in range(count):
            if name == "storages":
                args = one().value
                if not (isinstance(args, tuple) and len(args) == 3 and isinstance(args[2], Global)):
                    ctx.error(location, "legacy tar storages: entry is not (key, location, type)")
                    return
                element = STORAGE_ELEMENT_SIZE.get(args[2].name.removesuffix("Storage"))
                if not element:
                    ctx.error(location, f"legacy tar storages: unknown type {args[2].full}")
                    return
                (numel,) = struct.unpack("<q", r.read(8))
                if numel < 0:
                    raise Truncated("negative storage size")
                r.skip(numel * element)
            else:
                args = one().value
                if not (isinstance(args, tuple) and len(args) == 3):
                    ctx.error(location, "legacy tar tensors: entry is not (key, storage id, "
                              "tensor type)")
                    return
                (ndim,) = struct.unpack("<i", r.read(4))
                if ndim < 0 or ndim > 64:
                    ctx.error(location, f"legacy tar tensors: bad dimension count {ndim}")
                    return
                r.skip(4 + 16 * ndim + 8)
        if name == "storages":
            one()  # storage views
    except PickleError as exc:
        ctx.findings.extend(exc.run.findings)  # type: ignore[attr-defined]
        ctx.error(f"{location}@{exc.offset}", f"legacy tar {name}: {exc}")
        return
    except Truncated as exc:
        ctx.error(location, f"legacy tar {name}: truncated: {exc}")
        return
    if not r.at_eof():
        ctx.error(location, f"legacy tar {name}: unexpected trailing data")
