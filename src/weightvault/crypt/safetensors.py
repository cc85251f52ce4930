"""Load tensors from an encrypted safetensors file, decrypting only the tensors asked for.

safetensors layout: an 8-byte little-endian header length ``n``, ``n`` bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``), then the
data; offsets are relative to the end of the JSON. Through :class:`EncryptedFile` the header and
each requested tensor are read as plaintext ranges, so loading one tensor of a 10 GB file
decrypts that tensor's chunks and the header's, nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from weightvault._safetensors import HeaderTensor, header_length, parse_header
from weightvault.crypt.reader import EncryptedFile, open_encrypted
from weightvault.crypt.recipients.base import Identity
from weightvault.errors import UsageError

__all__ = ["TensorInfo", "load_encrypted_safetensors", "read_safetensors_index"]

_NUMPY = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
    "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}  # fmt: skip
_ML_DTYPES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}
_TORCH = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16",
    "U8": "uint8", "BOOL": "bool",
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo(HeaderTensor):
    """Where one tensor lies in the plaintext."""

    start: int
    """Absolute plaintext offset of the tensor's first byte."""
    end: int


def read_safetensors_index(
    reader: EncryptedFile, *, exact: bool = False
) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse the safetensors header of an encrypted file: tensors by name, and metadata.

    The one parser reads it (:func:`weightvault._safetensors.parse_header`), by default only
    locating the tensors (``locate_only``): this index also finds the tensors of suspect and
    stray copies (incident, inventory), which may have been altered around them. ``exact``
    asks for every rule the verified loader applies, as a loader of the tensors should.
    """
    name = reader.name
    length = header_length(reader.read(0, min(8, reader.size)), name, reader.size)
    data_start = 8 + length
    header = parse_header(
        reader.read(8, length), name, reader.size - data_start, dtypes=_TORCH, locate_only=not exact
    )
    tensors = {
        t.name: TensorInfo(t.name, t.dtype, t.shape, data_start + t.begin, data_start + t.end)
        for t in header.tensors
    }
    return tensors, dict(header.metadata or {})


def _numpy_dtype(dtype: str) -> Any:
    import numpy as np

    if dtype in _NUMPY:
        return np.dtype(_NUMPY[dtype])
    try:
        import ml_dtypes
    except ImportError as exc:
        raise UsageError(
            f"dtype {dtype} needs the ml_dtypes package for NumPy; install it or load with "
            "framework='torch'"
        ) from exc
    return np.dtype(getattr(ml_dtypes, _ML_DTYPES[dtype]))


def _to_numpy(info: TensorInfo, data: bytearray) -> Any:
    import numpy as np

    return np.frombuffer(data, dtype=_numpy_dtype(info.dtype)).reshape(info.shape)


def _to_torch(info: TensorInfo, data: bytearray) -> Any:
    try:
        import torch
    except ImportError as exc:
        raise UsageError("framework='torch' needs PyTorch installed") from exc
    dtype = getattr(torch, _TORCH[info.dtype], None)
    if dtype is None:
        raise UsageError(f"dtype {info.dtype} is not supported by this PyTorch version")
    if not data:
        return torch.empty(info.shape, dtype=dtype)
    return torch.frombuffer(data, dtype=dtype).reshape(info.shape)


def load_encrypted_safetensors(
    path: str | os.PathLike[str],
    identities: Sequence[Identity],
    names: Iterable[str] | None = None,
    *,
    framework: str = "numpy",
) -> dict[str, Any]:
    """Decrypt and return the tensors ``names`` (all when None) as NumPy arrays or torch tensors.

    Only the header's chunks and the chunks of the requested tensors are read and decrypted.
    """
    if framework not in ("numpy", "torch"):
        raise UsageError(f"framework must be 'numpy' or 'torch', not {framework!r}")
    convert = _to_numpy if framework == "numpy" else _to_torch
    with open_encrypted(path, identities) as reader:
        tensors, _metadata = read_safetensors_index(reader, exact=True)
        wanted = list(tensors) if names is None else list(names)
        missing = [n for n in wanted if n not in tensors]
        if missing:
            raise UsageError(f"{reader.name}: no tensor named {missing[0]!r}")
        result: dict[str, Any] = {}
        for tensor_name in wanted:
            info = tensors[tensor_name]
            data = reader.read_bytearray(info.start, info.end - info.start)
            result[tensor_name] = convert(info, data)
        return result
