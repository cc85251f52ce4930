"""Raw pickle files: every stacked pickle, the legacy PyTorch layout, and one-off streams.

A file may hold several pickles one after another (legacy ``torch.save``: magic, protocol,
system info, the object, the storage keys, then raw storages; joblib and hand-made files stack
them too). Each is interpreted by a :class:`~._machine.PickleMachine`; its findings are committed
to the file's context, and a malformed pickle becomes an error of the file.
"""

from __future__ import annotations

import struct

from weightvault.scan._engine import FileContext
from weightvault.scan._io import ByteReader, Truncated
from weightvault.scan.formats.pickle._machine import PickleMachine
from weightvault.scan.formats.pickle._values import Global, PickleError, PickleRun
from weightvault.scan.policy import Severity

__all__ = [
    "LEGACY_TORCH_MAGIC",
    "STORAGE_ELEMENT_SIZE",
    "scan_pickle_file",
    "scan_pickle_stream_once",
]

LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
#: Bytes per element of each legacy storage type (``torch.FloatStorage`` -> ``Float``: 4).
STORAGE_ELEMENT_SIZE = {
    "Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2,
    "Char": 1, "Byte": 1, "Bool": 1, "ComplexDouble": 16, "ComplexFloat": 8, "QUInt8": 1,
    "QInt8": 1, "QInt32": 4, "QUInt4x2": 1, "QUInt2x4": 1, "Untyped": 1,
}


def scan_pickle_stream_once(
    r: ByteReader, ctx: FileContext, location: str
) -> PickleRun:
    """Interpret one pickle and commit its findings; errors become per-file errors."""
    machine = PickleMachine(ctx, location)
    try:
        run = machine.run_one(r)
    except PickleError as exc:
        partial: PickleRun = exc.run  # type: ignore[attr-defined]
        ctx.findings.extend(partial.findings)
        ctx.error(f"{location}@{exc.offset}" if location else f"@{exc.offset}", str(exc))
        return partial
    ctx.findings.extend(run.findings)
    return run



def scan_pickle_file(
    r: ByteReader, ctx: FileContext, location: str, *, claimed: bool,
) -> str | None:
    """Scan a raw pickle file: every stacked pickle, legacy PyTorch layout included.

    ``claimed`` is true when the caller already knows this is a pickle (name or container says
    so). Otherwise a stream that fails before STOP without a dangerous finding is "not a pickle"
    and ``None`` is returned so the caller can treat it as plain data. Returns the format name.
    """
    machine = PickleMachine(ctx, location)
    start = r.tell()
    try:
        first = machine.run_one(r)
    except PickleError as exc:
        partial: PickleRun = exc.run  # type: ignore[attr-defined]
        is_pickle = (
            claimed
            or partial.first_opcode == 0x80
            or partial.max_severity >= Severity.DANGEROUS
        )
        if not is_pickle:
            return None
        ctx.findings.extend(partial.findings)
        ctx.error(_loc(location, exc.offset), str(exc))
        return "pickle"
    if not claimed and first.first_opcode != 0x80 and first.imports == 0 and r.tell() - start < 2:
        return None
    ctx.findings.extend(first.findings)
    if first.value == LEGACY_TORCH_MAGIC and not isinstance(first.value, bool):
        _scan_legacy_torch(r, ctx, location, machine)
        return "pytorch-legacy"
    count = 1
    while not r.at_eof():
        count += 1
        try:
            run = machine.run_one(r)
        except PickleError as exc:
            partial = exc.run  # type: ignore[attr-defined]
            ctx.findings.extend(partial.findings)
            ctx.error(
                _loc(location, exc.offset),
                f"data after pickle {count - 1} is not a valid pickle: {exc}",
            )
            break
        ctx.findings.extend(run.findings)
    return "pickle" if count == 1 else f"pickle (stacked x{count})"


def _loc(location: str, offset: int) -> str:
    return f"{location}@{offset}" if location else f"@{offset}"



def _scan_legacy_torch(
    r: ByteReader, ctx: FileContext, location: str, machine: PickleMachine
) -> None:
    """Legacy ``torch.save(..., _use_new_zipfile_serialization=False)``: 4 more pickles + data.

    Layout: magic, protocol version, sys_info, the object, the list of storage keys; then per key
    an 8-byte element count and the raw storage bytes.
    """
    runs: list[PickleRun] = []
    for index in range(4):
        try:
            run = machine.run_one(r)
        except PickleError as exc:
            ctx.findings.extend(exc.run.findings)  # type: ignore[attr-defined]
            ctx.error(_loc(location, exc.offset), f"legacy PyTorch pickle {index + 2}: {exc}")
            return
        ctx.findings.extend(run.findings)
        runs.append(run)
    main, keys_run = runs[2], runs[3]
    sizes: dict[str, int] = {}
    for pid in main.persistent_ids:
        if (
            isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"
            and isinstance(pid[1], Global) and isinstance(pid[2], str)
        ):
            kind = pid[1].name.removesuffix("Storage")
            sizes[pid[2]] = STORAGE_ELEMENT_SIZE.get(kind, 0)
    keys = keys_run.value
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        ctx.error(_loc(location, r.tell()), "legacy PyTorch storage key list is malformed")
        return
    for key in keys:
        element = sizes.get(key)
        if not element:
            ctx.error(
                _loc(location, r.tell()),
                f"legacy PyTorch storage {key!r} has no known element type",
            )
            return
        try:
            (count,) = struct.unpack("<q", r.read(8))
            if count < 0:
                raise Truncated("negative storage size")
            r.skip(count * element)
        except Truncated as exc:
            ctx.error(_loc(location, r.tell()), f"legacy PyTorch storage {key!r}: {exc}")
            return
    if not r.at_eof():
        offset = r.tell()
        tail = PickleMachine(ctx, location)
        try:
            extra = tail.run_one(r)
        except PickleError as exc:
            # Whatever a broken trailing pickle imported before it broke still counts.
            ctx.findings.extend(exc.run.findings)  # type: ignore[attr-defined]
            ctx.find(
                Severity.UNKNOWN, "structure", "<trailing data>",
                "bytes after the last storage of a legacy PyTorch file", _loc(location, offset),
            )
            return
        ctx.findings.extend(extra.findings)
        ctx.find(
            Severity.UNKNOWN, "structure", "<trailing pickle>",
            "a pickle after the last storage of a legacy PyTorch file", _loc(location, offset),
        )
