"""The safetensors file layout, written: one definition of the header for every writer.

Why: a safetensors file is an 8-byte little-endian header length, a JSON header naming each
tensor's dtype, shape and ``data_offsets`` (relative to the end of the header), then the tensor
bytes. Converting a checkpoint (:mod:`weightvault.scan.convert`) and saving a state dict
(:mod:`weightvault.load.save`) both write it; building the header in one place keeps their files
byte for byte alike (the same compact JSON, the same padding) and the offsets computed once.
Reading stays with each reader, whose checks and messages serve its own caller; what a header
says of one tensor is :class:`HeaderTensor`, the base of the records those readers return.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["HeaderTensor", "safetensors_header"]


@dataclass(frozen=True)
class HeaderTensor:
    """One tensor as a safetensors header names it; each reader's record adds what it needs
    (where the bytes lie, their size, the element count)."""

    name: str
    dtype: str
    """The safetensors dtype code (``F32``, ``BF16``, ``I64``, ...)."""
    shape: tuple[int, ...]


def safetensors_header(
    tensors: Iterable[tuple[str, str, Sequence[int], int]],
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """The bytes that open a safetensors file whose tensors follow back to back in the order
    given, each as ``(name, dtype code, shape, byte count)``: the length prefix and the compact
    JSON header (``__metadata__`` first, when there is any), padded with spaces to a multiple of
    8 bytes so the data after it stays aligned."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    cursor = 0
    for name, dtype, shape, nbytes in tensors:
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [cursor, cursor + nbytes],
        }
        cursor += nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text
