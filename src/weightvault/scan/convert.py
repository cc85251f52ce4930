"""Convert PyTorch pickle checkpoints to safetensors without running any code from them.

Two locks, in order:

1. The file is scanned first (:func:`weightvault.scan.scan_file`); any *dangerous* finding or
   scan error refuses the conversion, naming the finding.
2. The pickle is then loaded by a restricted unpickler whose ``find_class`` admits only the
   tensor-rebuild allow-list and returns **our own** stand-ins for it: nothing from ``torch`` or
   from the file is imported or called. Globals the user allowed with ``--allow`` become inert
   placeholders (their real class is never imported either).

Tensor bytes are then copied straight from the checkpoint's storages (strided views gathered with
NumPy) into a safetensors file written atomically.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from weightvault._fs import atomic_output
from weightvault._safetensors import HeaderTensor, safetensors_header
from weightvault.errors import FormatError, InputError, UnsafeFileError
from weightvault.scan.policy import Policy, Severity, remap_python2

__all__ = ["ConvertResult", "TensorInfo", "checkpoint_tensors", "convert_checkpoint"]

#: storage class name -> (safetensors dtype, element size)
_STORAGE_DTYPES: dict[str, tuple[str, int]] = {
    "FloatStorage": ("F32", 4), "DoubleStorage": ("F64", 8), "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2), "LongStorage": ("I64", 8), "IntStorage": ("I32", 4),
    "ShortStorage": ("I16", 2), "CharStorage": ("I8", 1), "ByteStorage": ("U8", 1),
    "BoolStorage": ("BOOL", 1), "ComplexFloatStorage": ("C64", 8),
    "UntypedStorage": ("U8", 1),
}
_COPY_CHUNK = 16 << 20


@dataclass(frozen=True)
class TensorInfo(HeaderTensor):
    """A converted tensor and its size in bytes (the safetensors header places it)."""

    nbytes: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "nbytes": self.nbytes}


@dataclass(frozen=True)
class ConvertResult:
    output: Path
    tensors: tuple[TensorInfo, ...]
    skipped: tuple[str, ...]
    """Non-tensor entries of the checkpoint (numbers, strings, placeholders) left out."""

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def to_json(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "tensors": [t.to_json() for t in self.tensors],
            "skipped": list(self.skipped),
            "total_bytes": self.total_bytes,
        }


# -- inert stand-ins ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass
class _StorageRef:
    key: str
    storage_type: str
    numel: int
    byte_offset: int = 0  # legacy views into a root storage


@dataclass
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _PlaceholderBase:
    """Instances of an ``--allow``-ed unknown global: accept anything, do nothing."""

    placeholder_for = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> _PlaceholderBase:
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __setstate__(self, state: Any) -> None:
        return None

    def __setitem__(self, key: Any, value: Any) -> None:
        return None

    def append(self, value: Any) -> None:
        return None

    def extend(self, values: Any) -> None:
        return None

    def __repr__(self) -> str:
        return f"<placeholder {self.placeholder_for}>"


def _placeholder(full_name: str) -> type[_PlaceholderBase]:
    """A fresh inert class standing in for ``full_name`` (which is never imported)."""
    return type("Placeholder", (_PlaceholderBase,), {"placeholder_for": full_name})


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise FormatError(f"checkpoint: tensor {what} is not a tuple of non-negative integers")
    return tuple(value)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise FormatError("checkpoint: tensor rebuilt from something that is not a storage")
    if not isinstance(offset, int) or offset < 0:
        raise FormatError("checkpoint: tensor storage offset is not a non-negative integer")
    return _TensorRef(storage, offset, _int_tuple(size, "size"), _int_tuple(stride, "stride"))


def _rebuild_parameter(data: Any, *_rest: Any) -> Any:
    return data


def _ordered_dict(*args: Any) -> OrderedDict[Any, Any]:
    if args:
        raise FormatError("checkpoint: OrderedDict called with arguments")
    return OrderedDict()


_ADMITTED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, allowed: Policy) -> None:
        super().__init__(file, encoding="utf-8")
        self._policy = allowed

    def find_class(self, module: str, name: str) -> Any:
        module, name = remap_python2(module, name)
        if (module, name) in _ADMITTED:
            return _ADMITTED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        verdict = self._policy.classify(module, name)
        if verdict.reason == "allowed by the caller":  # scan.policy._ALLOW_EVIDENCE
            return _placeholder(f"{module}.{name}")
        raise UnsafeFileError(
            f"checkpoint imports {module}.{name}, which convert does not admit "
            f"({verdict.severity.label}: {verdict.reason})",
            hint="only tensors and OrderedDicts are converted; allow it to treat it as inert",
            remedy="allow-import",
        )

    def persistent_load(self, pid: Any) -> Any:
        if (
            not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage"
            or not isinstance(pid[1], _StorageType) or not isinstance(pid[2], str)
            or not isinstance(pid[4], int)
        ):
            raise FormatError("checkpoint: unsupported persistent id (not a tensor storage)")
        ref = _StorageRef(pid[2], pid[1].name, pid[4])
        if len(pid) >= 6 and pid[5] is not None:
            view = pid[5]
            if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[1], int)):
                raise FormatError("checkpoint: malformed legacy storage view")
            ref = _StorageRef(pid[2], pid[1].name, view[2], byte_offset=view[1])
        return ref


def _restricted_load(handle: BinaryIO, policy: Policy) -> Any:
    try:
        return _RestrictedUnpickler(handle, policy).load()
    except (UnsafeFileError, FormatError):
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError,
            IndexError, struct.error, RecursionError, MemoryError) as exc:
        raise FormatError(f"checkpoint pickle is malformed: {' '.join(str(exc).split())}") from exc


# -- locating storage bytes ----------------------------------------------------------------------


def _flatten(value: Any, prefix: str, out: dict[str, _TensorRef], skipped: list[str]) -> None:
    if isinstance(value, _TensorRef):
        if prefix in out:
            raise FormatError(f"checkpoint: two tensors flatten to the same name {prefix!r}")
        out[prefix] = value
    elif isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out, skipped)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _flatten(item, f"{prefix}.{index}" if prefix else str(index), out, skipped)
    else:
        skipped.append(prefix or "<root>")


def _zip_storages(
    path: Path, handle: BinaryIO, policy: Policy
) -> tuple[Any, dict[str, tuple[int, int]]]:
    """Unpickle ``data.pkl`` of a zip checkpoint; map storage keys to data offsets."""
    with zipfile.ZipFile(handle) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise FormatError(f"{path}: expected exactly one data.pkl in the zip")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = f"{prefix}byteorder"
        if byteorder in names and archive.read(byteorder).strip() not in (b"little", b""):
            raise FormatError(f"{path}: big-endian checkpoints are not supported")
        info = archive.getinfo(pkl[0])
        if info.file_size > (1 << 30):
            raise FormatError(f"{path}: data.pkl larger than 1 GiB")
        root = _restricted_load(io.BytesIO(archive.read(pkl[0])), policy)
        offsets: dict[str, tuple[int, int]] = {}
        for member in archive.infolist():
            if member.filename.startswith(f"{prefix}data/"):
                if member.compress_type != zipfile.ZIP_STORED:
                    raise FormatError(f"{path}: compressed storage {member.filename}")
                handle.seek(member.header_offset)
                header = handle.read(30)
                name_len, extra_len = struct.unpack("<HH", header[26:30])
                key = member.filename[len(f"{prefix}data/"):]
                offsets[key] = (
                    member.header_offset + 30 + name_len + extra_len, member.file_size
                )
    return root, offsets


def _legacy_storages(
    handle: BinaryIO, policy: Policy
) -> tuple[Any, dict[str, tuple[int, int]]]:
    for _ in range(3):  # magic, protocol version, sys_info: plain data
        _restricted_load(handle, policy)
    root = _restricted_load(handle, policy)
    keys = _restricted_load(handle, policy)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise FormatError("legacy checkpoint: storage key list is malformed")
    refs: dict[str, _StorageRef] = {}
    collected: dict[str, _TensorRef] = {}
    _flatten(root, "", collected, [])
    for tensor in collected.values():
        refs.setdefault(tensor.storage.key, tensor.storage)
    offsets: dict[str, tuple[int, int]] = {}
    for key in keys:
        (numel,) = struct.unpack("<q", handle.read(8))
        element = _STORAGE_DTYPES.get(refs[key].storage_type, ("U8", 1))[1] if key in refs else 0
        if numel < 0 or (key in refs and element == 0):
            raise FormatError("legacy checkpoint: malformed storage record")
        if key not in refs:
            raise FormatError(f"legacy checkpoint: storage {key!r} is not used by any tensor")
        offsets[key] = (handle.tell(), numel * element)
        handle.seek(numel * element, os.SEEK_CUR)
    return root, offsets


def _tensor_bytes(
    handle: BinaryIO, tensor: _TensorRef, offsets: dict[str, tuple[int, int]]
) -> Iterator[bytes]:
    dtype, element = _STORAGE_DTYPES[tensor.storage.storage_type]
    numel = 1
    for dim in tensor.size:
        numel *= dim
    if tensor.storage.key not in offsets:
        raise FormatError(f"checkpoint: storage {tensor.storage.key!r} has no data")
    start, available = offsets[tensor.storage.key]
    base = start + tensor.storage.byte_offset
    contiguous = []
    expected = 1
    for dim in reversed(tensor.size):
        contiguous.append(expected)
        expected *= dim
    contiguous.reverse()
    span_end = tensor.offset + (
        1 + sum((d - 1) * s for d, s in zip(tensor.size, tensor.stride, strict=True))
        if numel else 0
    )
    if span_end * element + tensor.storage.byte_offset > available:
        raise FormatError("checkpoint: tensor extends past its storage data")
    if numel == 0:
        return
    pairs = zip(tensor.stride, contiguous, tensor.size, strict=True)
    if all(s == c or d == 1 for s, c, d in pairs):
        handle.seek(base + tensor.offset * element)
        left = numel * element
        while left:
            data = handle.read(min(left, _COPY_CHUNK))
            if not data:
                raise FormatError("checkpoint: storage data is truncated")
            left -= len(data)
            yield data
        return
    import numpy as np

    handle.seek(base)
    raw = handle.read(span_end * element)
    if len(raw) != span_end * element:
        raise FormatError("checkpoint: storage data is truncated")
    unit = {1: "u1", 2: "<u2", 4: "<u4", 8: "<u8"}[element]
    flat = np.frombuffer(raw, dtype=unit)
    view = np.lib.stride_tricks.as_strided(
        flat[tensor.offset:], shape=tensor.size, strides=[s * element for s in tensor.stride],
        writeable=False,
    )
    yield np.ascontiguousarray(view).tobytes()
    del dtype


def _scanned_checkpoint(source: Path, allow: Iterable[str]) -> tuple[str, Policy]:
    """Scan ``source`` first (the first lock); its format and the policy, or raise naming the
    finding."""
    from weightvault.scan import scan_file

    if not source.is_file():
        raise InputError(f"{source}: no such checkpoint file")
    policy = Policy.with_allowed(allow)
    scanned = scan_file(source, policy=policy)
    for finding in scanned.findings:
        if finding.severity >= Severity.DANGEROUS:
            raise UnsafeFileError(
                f"{source}: refused: {finding.severity.label} {finding.kind} {finding.subject} "
                f"at {finding.location or 'top level'}: {finding.message}"
            )
    if scanned.errors:
        raise FormatError(f"{source}: cannot be converted: {scanned.errors[0]}")
    if scanned.format not in ("pytorch-zip", "pytorch-legacy"):
        raise FormatError(
            f"{source}: is {scanned.format}, not a PyTorch pickle checkpoint",
            hint="convert reads torch.save files (zip or legacy format)",
        )
    return scanned.format, policy


def _tensor_refs(
    source: Path, handle: BinaryIO, fmt: str, policy: Policy
) -> tuple[dict[str, _TensorRef], dict[str, tuple[int, int]], list[str]]:
    """The checkpoint's tensors (by flattened name), its storages' offsets, what was skipped."""
    if fmt == "pytorch-zip":
        root, offsets = _zip_storages(source, handle, policy)
    else:
        root, offsets = _legacy_storages(handle, policy)
    tensors: dict[str, _TensorRef] = {}
    skipped: list[str] = []
    _flatten(root, "", tensors, skipped)
    if not tensors:
        raise FormatError(f"{source}: holds no tensors to convert")
    return tensors, offsets, skipped


def _tensor_info(name: str, tensor: _TensorRef) -> TensorInfo:
    if tensor.storage.storage_type not in _STORAGE_DTYPES:
        raise FormatError(f"tensor {name!r}: unsupported storage type")
    dtype, element = _STORAGE_DTYPES[tensor.storage.storage_type]
    numel = 1
    for dim in tensor.size:
        numel *= dim
    return TensorInfo(name, dtype, tensor.size, numel * element)


@contextmanager
def _opened_checkpoint(
    source: Path, allow: Iterable[str]
) -> Iterator[tuple[BinaryIO, dict[str, _TensorRef], dict[str, tuple[int, int]], list[str]]]:
    """``source`` scanned, then open, with its tensors listed by the restricted unpickler
    (:func:`_tensor_refs`); closed when the block ends."""
    fmt, policy = _scanned_checkpoint(source, allow)
    try:
        handle = open(source, "rb")
    except OSError as exc:
        raise InputError(f"{source}: cannot read: {exc.strerror}") from exc
    with handle:
        yield handle, *_tensor_refs(source, handle, fmt, policy)


def checkpoint_tensors(
    checkpoint: str | os.PathLike[str], *, allow: Iterable[str] = ()
) -> Iterator[tuple[TensorInfo, Iterator[bytes]]]:
    """Each tensor of a PyTorch checkpoint (sorted by name) with its bytes, C-contiguous, as
    :func:`convert_checkpoint` would write them: scanned first, loaded by the same restricted
    unpickler, nothing written. Consume each tensor's bytes before asking for the next."""
    with _opened_checkpoint(Path(checkpoint), allow) as (handle, tensors, offsets, _skipped):
        for name in sorted(tensors):
            yield _tensor_info(name, tensors[name]), _tensor_bytes(handle, tensors[name], offsets)


def convert_checkpoint(
    checkpoint: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    force: bool = False,
    allow: Iterable[str] = (),
) -> ConvertResult:
    """Convert ``checkpoint`` (PyTorch zip or legacy) to a safetensors file at ``output``.

    Raises :class:`UnsafeFileError` for dangerous content (naming the finding) or an import
    convert does not admit, :class:`FormatError` for malformed input, :class:`InputError` for
    unreadable paths or an existing output without ``force``.
    """
    target = Path(output)
    with _opened_checkpoint(Path(checkpoint), allow) as (handle, tensors, offsets, skipped):
        infos = [_tensor_info(name, tensors[name]) for name in sorted(tensors)]
        header = safetensors_header((i.name, i.dtype, i.shape, i.nbytes) for i in infos)
        with atomic_output(target, force=force) as out:
            out.write(header)
            for info in infos:
                written = 0
                for chunk in _tensor_bytes(handle, tensors[info.name], offsets):
                    out.write(chunk)
                    written += len(chunk)
                if written != info.nbytes:
                    raise FormatError(f"tensor {info.name!r}: storage data is truncated")
    return ConvertResult(target, tuple(infos), tuple(skipped))
