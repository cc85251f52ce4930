"""Tensors built from verified buffers, never from the files again.

safetensors: the header is parsed here and each tensor is a view of the buffer
(``torch.frombuffer``), so loading copies nothing after the one read. PyTorch checkpoints:
PyTorch's weights-only unpickler with each storage a view of the buffer (as ``mmap=True``
makes them views of a mapped file), copied out of it only for pre-zip checkpoints.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from weightvault._json import reject_duplicate_keys
from weightvault._readers import SizedReader
from weightvault.errors import FormatError, UnsafeFileError

if TYPE_CHECKING:
    import torch

__all__ = [
    "BufferFile",
    "TensorEntry",
    "header_size",
    "parse_header",
    "safetensors_from_buffer",
    "torch_from_buffer",
]

#: A header longer than this is refused before it is parsed (safetensors' own limit).
_MAX_HEADER = 100_000_000

_DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
    "U16": ("uint16", 2),
    "U32": ("uint32", 4),
    "U64": ("uint64", 8),
    "F8_E4M3": ("float8_e4m3fn", 1),
    "F8_E5M2": ("float8_e5m2", 1),
    "C64": ("complex64", 8),
}


class BufferFile(SizedReader):
    """A read-only, seekable file over a buffer (``io.BytesIO`` would copy it first)."""

    def __init__(self, buffer: memoryview) -> None:
        super().__init__()
        self._view = memoryview(buffer).cast("B")
        self._size = len(self._view)

    def readinto(self, target: Any) -> int:
        out = memoryview(target).cast("B")
        count = max(0, min(len(out), len(self._view) - self._position))
        out[:count] = self._view[self._position : self._position + count]
        self._position += count
        return count

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else self._position + size
        data = bytes(self._view[self._position : end])
        self._position += len(data)
        return data


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header: where its bytes lie in the data section."""

    key: str
    dtype: str  # a torch attribute name
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def count(self) -> int:
        return math.prod(self.shape)


def header_size(prefix: memoryview | bytes | bytearray, name: str, file_size: int) -> int:
    """Where a safetensors file's data starts (8 + its header's length), from its first 8 bytes."""
    if file_size < 8 or len(prefix) < 8:
        raise FormatError(f"{name}: too short for a safetensors file")
    (size,) = struct.unpack_from("<Q", prefix, 0)
    if size > min(_MAX_HEADER, file_size - 8):
        raise FormatError(f"{name}: safetensors header size is out of range")
    return 8 + int(size)


def parse_header(
    prefix: memoryview | bytes | bytearray, name: str, file_size: int
) -> list[TensorEntry]:
    """The tensors a safetensors header lays out, checked: each entry fits its shape, and the
    data tiles the rest of a ``file_size``-byte file with no overlap and no hole (safetensors'
    own rules). ``prefix`` holds at least the 8-byte length and the header."""
    data_start = header_size(prefix, name, file_size)
    header = _load_header(bytes(prefix[8:data_start]), name)
    data_size = file_size - data_start
    entries: list[TensorEntry] = []
    for key, entry in header.items():
        if key == "__metadata__":
            if entry is not None and not (
                isinstance(entry, dict) and all(isinstance(v, str) for v in entry.values())
            ):
                raise FormatError(f"{name}: safetensors __metadata__ must map strings to strings")
            continue
        where = f"{name}: tensor {key!r}"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(f"{where}: malformed entry")
        dtype_name, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype_name, str) or dtype_name not in _DTYPES:
            raise FormatError(f"{where}: unsupported dtype {dtype_name!r}")
        if not isinstance(shape, list) or not all(_is_u64(d) for d in shape):
            raise FormatError(f"{where}: shape is not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_u64, offsets))):
            raise FormatError(f"{where}: data_offsets is not two integers")
        start, end = offsets
        torch_name, element = _DTYPES[dtype_name]
        count = 1
        for dim in shape:  # safetensors multiplies in 64 bits and refuses an overflow
            count *= dim
            if count > _U64_MAX:
                raise FormatError(f"{where}: shape has more elements than 64 bits can count")
        if not 0 <= start <= end <= data_size or end - start != count * element:
            raise FormatError(f"{where}: data_offsets do not fit its shape and the file")
        entries.append(TensorEntry(key, torch_name, tuple(shape), start, end))
    cursor = 0
    for entry in sorted(entries, key=lambda e: (e.start, e.end)):
        if entry.start != cursor:  # data tiles the byte buffer, no overlap
            raise FormatError(f"{name}: tensor data overlaps or leaves a hole")
        cursor = entry.end
    if cursor != data_size:
        raise FormatError(f"{name}: tensor data does not cover the file")
    return entries


_U64_MAX = 2**64 - 1


def _is_u64(value: object) -> bool:
    """A JSON integer that safetensors reads as a ``usize`` (``true`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _U64_MAX


def _json_int(text: str) -> int:
    """A JSON integer literal as safetensors' parser reads it: a negative literal (``-0``
    included, which it reads as a float) or one past 64 bits is never a size or an offset, so
    each becomes a value the checks refuse instead of Python's exact (and, past 4300 digits,
    failing) conversion."""
    if text.startswith("-"):
        return -1
    return int(text) if len(text) <= 20 else _U64_MAX + 1


def _text_pairs(name: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """The ``object_pairs_hook``: duplicate keys refused, and strings with a lone surrogate
    (a ``\\ud800`` escape Python keeps but no UTF-8 reader accepts) in keys or values."""
    no_duplicates = reject_duplicate_keys(f"{name}: safetensors header")

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        for key, value in pairs:
            for text in (key, value) if isinstance(value, str) else (key,):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise FormatError(
                        f"{name}: safetensors header holds a lone surrogate escape"
                    ) from exc
        return no_duplicates(pairs)

    return hook


def _load_header(raw: bytes, name: str) -> dict[str, Any]:
    """The header JSON read as safetensors reads it: strict UTF-8 (``json.loads`` of bytes would
    also take UTF-16 and surrogates), no duplicate keys (safetensors keeps the last tensor of a
    name, other readers the first), no ``NaN``, bounded nesting; every refusal a FormatError."""

    def no_constant(constant: str) -> Any:
        raise FormatError(f"{name}: safetensors header holds {constant}, which is not JSON")

    try:
        header = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_text_pairs(name),
            parse_int=_json_int,
            parse_constant=no_constant,
        )
    except UnicodeDecodeError as exc:
        raise FormatError(f"{name}: safetensors header is not UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise FormatError(f"{name}: safetensors header is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise FormatError(f"{name}: safetensors header is nested too deeply") from exc
    if not isinstance(header, dict):
        raise FormatError(f"{name}: safetensors header is not an object")
    return header


def safetensors_from_buffer(
    buffer: memoryview, name: str, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file held in ``buffer`` (views of it on the CPU)."""
    import torch

    data_start = header_size(buffer, name, len(buffer))
    tensors: dict[str, torch.Tensor] = {}
    for entry in parse_header(buffer, name, len(buffer)):
        dtype = getattr(torch, entry.dtype)
        if entry.count == 0:
            tensor = torch.empty(entry.shape, dtype=dtype)
        else:
            tensor = torch.frombuffer(
                buffer, dtype=dtype, count=entry.count, offset=data_start + entry.start
            ).reshape(entry.shape)
        tensors[entry.key] = tensor
    if str(device) != "cpu":
        tensors = {key: tensor.to(device) for key, tensor in tensors.items()}
    return tensors


def torch_from_buffer(
    buffer: memoryview,
    name: str,
    torch_load: Callable[..., Any],
    map_location: Any = None,
) -> Any:
    """``torch.load(weights_only=True)`` of a checkpoint held in ``buffer``.

    A zip checkpoint (every ``torch.save`` since PyTorch 1.6) is unpickled by PyTorch's
    weights-only unpickler with its storages as views of ``buffer``, as ``torch.load(mmap=True)``
    makes them views of a mapped file: nothing is copied after the verified read. Older
    checkpoints, or a PyTorch without that loading step, go through ``torch_load`` (the real
    ``torch.load``; the hooks may have replaced the module's) over a file object on the buffer,
    which copies each storage once.
    """
    import pickle

    try:
        views = _torch_views(buffer, name, map_location)
        if views is not _NO_VIEWS:
            return views
        return torch_load(
            io.BufferedReader(BufferFile(buffer)), map_location=map_location, weights_only=True
        )
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeFileError(f"{name}: refused by the weights-only unpickler: {first}") from exc
    except (RuntimeError, EOFError, ValueError) as exc:
        raise FormatError(f"{name}: not a loadable PyTorch checkpoint ({exc})") from exc


_NO_VIEWS = object()


def _torch_views(buffer: memoryview, name: str, map_location: Any) -> Any:
    """The checkpoint in ``buffer`` with storages that are views of it, or ``_NO_VIEWS`` when
    that is not possible (not a zip checkpoint, or a PyTorch without ``serialization._load``).

    This is ``torch.load``'s own path for ``weights_only=True, mmap=True``, with the buffer in
    place of the mapped file: the same unpickler (``torch._weights_only_unpickler``), the same
    refusal of TorchScript archives.
    """
    import torch
    import torch.serialization as serialization

    load = getattr(serialization, "_load", None)
    unpickler = getattr(serialization, "_weights_only_unpickler", None)
    if load is None or unpickler is None or bytes(buffer[:4]) != b"PK\x03\x04":
        return _NO_VIEWS
    reader = torch._C.PyTorchFileReader(io.BufferedReader(BufferFile(buffer)))
    if "constants.pkl" in reader.get_all_records():
        raise UnsafeFileError(f"{name}: is a TorchScript archive, not a weights-only checkpoint")
    storage = torch.frombuffer(buffer, dtype=torch.uint8).untyped_storage()
    return load(reader, map_location, unpickler, overall_storage=storage, encoding="utf-8")
