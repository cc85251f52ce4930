"""Reading a weights file straight into the tensors that will hold it (``into=``).

Why: a verified load must read every byte into memory of its own, and giving a new buffer its
pages costs about as much as copying the bytes (measured 0.3 s of CPU per GB on the development
machine); a model's parameters already have theirs. So the parts of the file that say where
each tensor lies (a safetensors header; a zip checkpoint's directory and pickle) are read first,
through the one open descriptor, into our memory, and parsed there; each tensor's bytes are then
read straight into the parameter that will hold them and hashed from there, and nothing is
copied afterwards. Every byte is still read once: what was parsed is what is hashed, and the
caller owns the destination for the whole load, so no other process can change it.

The price: bytes land before the digest is known. A load that fails for any reason zeroes every
tensor it wrote, so no unverified byte stays in the model. A file whose layout does not parse or
does not fit the destination is not placed at all: it is read into a buffer, verified, and only
then refused (or copied in), as without ``into``. A PyTorch checkpoint's pickle is parsed before
its digest is known, by PyTorch's weights-only unpickler with storages on the ``meta`` device
(nothing is built but shapes and offsets), the parser ``torch.load(weights_only=True)`` applies
to untrusted files.
"""

from __future__ import annotations

import bisect
import io
import itertools
import math
import sys
import threading
from collections.abc import Callable, Mapping
from typing import IO, TYPE_CHECKING, Any, cast

from weightvault._readers import SizedReader
from weightvault._safetensors import header_length
from weightvault.errors import FormatError, WeightvaultError
from weightvault.load._formats import layout, torch_dtype
from weightvault.load._read import Placement, Segment, read_at

if TYPE_CHECKING:
    import torch

__all__ = ["CheckpointPlacer", "TensorPlacer", "writable_bytes"]


def writable_bytes(tensor: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, writable in place (no copy)."""
    import torch

    return tensor.detach().reshape(-1).view(torch.uint8).numpy().data


class _Wanted:
    """A tensor of the file: its name, dtype, shape and where its bytes start in the file."""

    __slots__ = ("dtype", "key", "shape", "start")

    def __init__(self, key: str, dtype: torch.dtype, shape: tuple[int, ...], start: int) -> None:
        self.key, self.dtype, self.shape, self.start = key, dtype, shape, start


class _Placer:
    """What both placers share: the destinations, which files to place, what was placed."""

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
        read = _Cached(fd, size, name)
        try:
            wanted = self._layout(read, name, size)
        except WeightvaultError as exc:
            if isinstance(exc, FormatError):
                return None
            raise  # the file changed while read (refused), or cannot be read
        except Exception:  # unverified bytes a parser rejects: read, verified, then refused
            return None
        if wanted is None:
            return None
        ends = sorted((w.start, w.start + _nbytes(w)) for w in wanted)
        if ends and (ends[0][0] < 0 or ends[-1][1] > size or _overlapping(ends)):
            return None  # tensors that overlap or leave the file: not placed
        claimed = self._claim(name, wanted)
        if claimed is None:
            return None
        return Placement(_tile(size, read.ranges, claimed), memoryview(b""))

    def _layout(self, read: _Cached, name: str, size: int) -> list[_Wanted] | None:
        raise NotImplementedError

    def _claim(self, name: str, wanted: list[_Wanted]) -> list[tuple[int, memoryview]] | None:
        """Each wanted tensor's destination bytes (by file offset), if every one has a
        destination of its dtype and shape, contiguous, on the CPU, sharing memory with no
        other placed one."""
        with self._lock:
            spans: list[tuple[int, int]] = []
            claimed: list[tuple[int, memoryview]] = []
            for item in wanted:
                tensor = self._destinations.get(item.key)
                if (
                    tensor is None
                    or tensor.device.type != "cpu"
                    or tensor.dtype != item.dtype
                    or tuple(tensor.shape) != item.shape
                    or not tensor.is_contiguous()
                ):
                    return None
                if tensor.numel():
                    address = tensor.data_ptr()
                    spans.append((address, address + tensor.numel() * tensor.element_size()))
                    claimed.append((item.start, writable_bytes(tensor)))
            if _overlapping(sorted(self._spans + spans)):
                return None
            self._spans.extend(spans)
            self.placed[name] = [item.key for item in wanted]
        return claimed

    def erase(self) -> None:
        """Zero every tensor placed so far (the load failed: nothing unverified may stay)."""
        with self._lock:
            for keys in self.placed.values():
                for key in keys:
                    self._destinations[key].detach().zero_()


class TensorPlacer(_Placer):
    """Places the tensors of safetensors files: the 8-byte length and the header are read and
    parsed, each tensor's data goes to the destination tensor of its name."""

    def _layout(self, read: _Cached, name: str, size: int) -> list[_Wanted] | None:
        data_start = 8 + header_length(read.bytes(0, min(8, size)), name, size)
        data_start, entries = layout(read.bytes(0, data_start), name, size)
        return [
            _Wanted(entry.name, torch_dtype(entry), entry.shape, data_start + entry.begin)
            for entry in entries
        ]


class CheckpointPlacer(_Placer):
    """Places the tensors of zip checkpoints (``torch.save``) holding a flat state dict, one
    tensor per storage: the zip directory and the pickle are read and parsed (storages on the
    ``meta`` device, which records where each one's bytes lie), each storage's bytes go to the
    destination tensor of its name. Anything else (shared or offset storages, a foreign byte
    order, TorchScript, nested objects) is not placed."""

    def _layout(self, read: _Cached, name: str, size: int) -> list[_Wanted] | None:
        import torch
        import torch.serialization as serialization

        if size < 4 or read.bytes(0, 4) != b"PK\x03\x04":
            return None
        reader = torch._C.PyTorchFileReader(cast("IO[bytes]", read))
        records = reader.get_all_records()
        if "constants.pkl" in records:
            return None
        if "byteorder" in records and reader.get_record("byteorder") != sys.byteorder.encode():
            return None
        load: Any = getattr(serialization, "_load", None)
        unpickler = getattr(serialization, "_weights_only_unpickler", None)
        if load is None or unpickler is None:
            return None
        state = load(reader, "meta", unpickler, encoding="utf-8")
        if not isinstance(state, dict):
            return None
        wanted: list[_Wanted] = []
        storages: set[int] = set()
        for key, tensor in state.items():
            if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
                return None
            storage = tensor.untyped_storage()
            start = getattr(storage, "_checkpoint_offset", None)
            if (
                not isinstance(start, int)
                or start in storages
                or tensor.storage_offset() != 0
                or not tensor.is_contiguous()
                or tensor.numel() * tensor.element_size() != storage.nbytes()
            ):
                return None
            storages.add(start)
            wanted.append(_Wanted(key, tensor.dtype, tuple(tensor.shape), start))
        return wanted


class _Cached(SizedReader):
    """A read-only file over ``fd`` that reads each byte at most once: a range read again is
    served from our memory, so the bytes a parser saw are the bytes hashed later (``ranges``
    become filled segments)."""

    def __init__(self, fd: int, size: int, shown: str) -> None:
        super().__init__()
        self._fd, self._size, self._shown = fd, size, shown
        self.ranges: list[tuple[int, bytearray]] = []  # disjoint, sorted by start
        self._starts: list[int] = []

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """As :meth:`SizedReader.seek`, but a position before the start is the start."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, target: Any) -> int:
        out = memoryview(target).cast("B")
        data = self.bytes(self._position, min(len(out), max(0, self._size - self._position)))
        out[: len(data)] = data
        self._position += len(data)
        return len(data)

    def bytes(self, start: int, count: int) -> bytes:
        """Bytes ``[start, start + count)`` of the file, read only where not read before."""
        end, position, parts = start + count, start, []
        index = max(0, bisect.bisect_right(self._starts, start) - 1)
        while position < end:
            held = self.ranges[index] if index < len(self.ranges) else None
            if held is not None and held[0] <= position < held[0] + len(held[1]):
                stop = min(end, held[0] + len(held[1]))
                parts.append(bytes(held[1][position - held[0] : stop - held[0]]))
                index += 1
            elif held is not None and held[0] <= position:
                index += 1
                continue
            else:
                stop = min(end, held[0]) if held is not None else end
                data = read_at(self._fd, position, stop - position, self._shown)
                self.ranges.insert(index, (position, data))
                self._starts.insert(index, position)
                parts.append(bytes(data))
                index += 1
            position = stop
        return b"".join(parts)


def _tile(
    size: int, cached: list[tuple[int, bytearray]], claimed: list[tuple[int, memoryview]]
) -> list[Segment]:
    """Segments tiling ``[0, size)``: the bytes read already (filled; where a destination
    overlaps them they are copied into it now, the same bytes), the destinations' bytes, and
    small buffers of our own for the rest (zip headers between records)."""
    edges = {0, size}
    for start, data in cached:
        edges.update((start, start + len(data)))
    for start, view in claimed:
        edges.update((start, start + len(view)))
    held = sorted(cached, key=lambda r: r[0])
    placed = sorted(claimed, key=lambda r: r[0])
    starts = {id(held): [s for s, _ in held], id(placed): [s for s, _ in placed]}

    def find(ranges: list[Any], position: int) -> Any:
        index = bisect.bisect_right(starts[id(ranges)], position) - 1
        if index >= 0 and position < ranges[index][0] + len(ranges[index][1]):
            return ranges[index]
        return None

    segments: list[Segment] = []
    points = sorted(e for e in edges if 0 <= e <= size)
    for left, right in itertools.pairwise(points):
        inside, target = find(held, left), find(placed, left)
        if target is not None:
            part = target[1][left - target[0] : right - target[0]]
            if inside is None:
                segments.append(Segment(left, part))
                continue
            part[:] = inside[1][left - inside[0] : right - inside[0]]
        if inside is not None:
            view = memoryview(inside[1])[left - inside[0] : right - inside[0]]
            segments.append(Segment(left, view, filled=True))
        else:
            segments.append(Segment(left, memoryview(bytearray(right - left))))
    return segments


def _nbytes(item: _Wanted) -> int:
    return math.prod(item.shape) * item.dtype.itemsize


def _overlapping(spans: list[tuple[int, int]]) -> bool:
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))
