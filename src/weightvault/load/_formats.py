"""Tensors built from verified buffers, never from the files again.

safetensors: the header is parsed by the one parser (:mod:`weightvault._safetensors`) and each
tensor is a view of the buffer (``torch.frombuffer``), so loading copies nothing after the one
read. PyTorch checkpoints: PyTorch's weights-only unpickler with each storage a view of the
buffer (as ``mmap=True`` makes them views of a mapped file), copied out of it only for pre-zip
checkpoints.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from weightvault._readers import SizedReader
from weightvault._safetensors import TensorSpan, header_length, parse_header
from weightvault.errors import FormatError, UnsafeFileError

if TYPE_CHECKING:
    import torch

__all__ = [
    "BufferFile",
    "layout",
    "safetensors_from_buffer",
    "torch_dtype",
    "torch_from_buffer",
]

#: The dtypes the loader builds: safetensors code -> torch attribute name.
_TORCH_DTYPES: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "C64": "complex64",
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


def torch_dtype(entry: TensorSpan) -> torch.dtype:
    """The torch dtype of a tensor :func:`layout` returned."""
    import torch

    dtype: torch.dtype = getattr(torch, _TORCH_DTYPES[entry.dtype])
    return dtype


def layout(
    prefix: memoryview | bytes | bytearray, name: str, file_size: int
) -> tuple[int, list[TensorSpan]]:
    """Where the data of a ``file_size``-byte safetensors file starts, and the tensors its
    header lays out, checked by safetensors' own rules (:func:`weightvault._safetensors.
    parse_header`); ``prefix`` holds at least the 8-byte length and the header."""
    data_start = 8 + header_length(prefix, name, file_size)
    if len(prefix) < data_start:
        raise FormatError(f"{name}: truncated safetensors header")
    header = parse_header(prefix[8:data_start], name, file_size - data_start, dtypes=_TORCH_DTYPES)
    return data_start, list(header.tensors)


def safetensors_from_buffer(
    buffer: memoryview, name: str, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file held in ``buffer`` (views of it on the CPU)."""
    import torch

    data_start, entries = layout(buffer, name, len(buffer))
    tensors: dict[str, torch.Tensor] = {}
    for entry in entries:
        dtype = torch_dtype(entry)
        if entry.count == 0:
            tensor = torch.empty(entry.shape, dtype=dtype)
        else:
            tensor = torch.frombuffer(
                buffer, dtype=dtype, count=entry.count, offset=data_start + entry.begin
            ).reshape(entry.shape)
        tensors[entry.name] = tensor
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
