"""Reading a safetensors file straight into the tensors that will hold it (``into=``).

Why: a verified load must read every byte into memory of its own, and giving a new buffer its
pages costs about as much as copying the bytes (measured 0.3 s of CPU per GB on the development
machine); a model's parameters already have theirs. So the file's header is read and parsed
first (through the one open descriptor, into our memory), each tensor's bytes are then read
straight into the parameter that will hold them and hashed from there, and nothing is copied
afterwards. The caller owns that memory for the whole load: no other process can change it,
so what was hashed is what stays loaded.

The price: the bytes land before the digest is known. A load that fails for any reason zeroes
every tensor it wrote, so no unverified byte stays in the model; a file whose header does not
parse or does not fit the destination is not placed at all, and the loader refuses it after
verifying it, as without ``into``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from weightvault.errors import FormatError
from weightvault.load._formats import TensorEntry, header_size, parse_header
from weightvault.load._read import Placement, Segment, read_at

if TYPE_CHECKING:
    import torch

__all__ = ["TensorPlacer", "writable_bytes"]


def writable_bytes(tensor: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, writable in place (no copy)."""
    import torch

    return tensor.detach().reshape(-1).view(torch.uint8).numpy().data


def _fits(tensor: torch.Tensor, entry: TensorEntry) -> bool:
    import torch

    return (
        tensor.device.type == "cpu"
        and tensor.dtype == getattr(torch, entry.dtype)
        and tuple(tensor.shape) == entry.shape
        and tensor.is_contiguous()
    )


class TensorPlacer:
    """A :data:`~weightvault.load._read.Placer` for safetensors files: each tensor of a file
    ``chosen`` accepts goes into the destination tensor of the same name (same dtype and shape,
    contiguous, on the CPU, not sharing memory with another one placed)."""

    def __init__(
        self, destinations: Mapping[str, torch.Tensor], chosen: Callable[[str], bool]
    ) -> None:
        self._destinations = destinations
        self._chosen = chosen
        self._lock = threading.Lock()
        self._spans: list[tuple[int, int]] = []
        #: File name -> the keys whose bytes were placed in their destination.
        self.placed: dict[str, list[str]] = {}

    def __call__(self, name: str, fd: int, size: int) -> Placement | None:
        if not self._chosen(name):
            return None
        try:
            first = read_at(fd, 0, min(8, size), name)
            prefix = bytearray(header_size(first, name, size))
            prefix[:8] = first
            prefix[8:] = read_at(fd, 8, len(prefix) - 8, name)
            entries = parse_header(prefix, name, size)
        except FormatError:
            return None  # read into a buffer, verified, then refused by the parser there
        segments = [Segment(0, memoryview(prefix))]
        keys: list[str] = []
        with self._lock:
            spans: list[tuple[int, int]] = []
            for entry in sorted(entries, key=lambda e: (e.start, e.end)):
                tensor = self._destinations.get(entry.key)
                if tensor is None or not _fits(tensor, entry):
                    return None
                keys.append(entry.key)
                if entry.end == entry.start:
                    continue
                address = tensor.data_ptr()
                spans.append((address, address + entry.end - entry.start))
                segments.append(Segment(len(prefix) + entry.start, writable_bytes(tensor)))
            if _overlapping(sorted(self._spans + spans)):
                return None
            self._spans.extend(spans)
            self.placed[name] = keys
        return Placement(segments, len(prefix), memoryview(prefix))

    def erase(self) -> None:
        """Zero every tensor placed so far (the load failed: nothing unverified may stay)."""
        with self._lock:
            for keys in self.placed.values():
                for key in keys:
                    self._destinations[key].detach().zero_()


def _overlapping(spans: list[tuple[int, int]]) -> bool:
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))
