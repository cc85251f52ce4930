"""Reading models tensor by tensor (safetensors, torch state dicts through the safe loader) and
rewriting safetensors as a stream: one tensor in memory at a time, never the whole model twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import torch

from weightvault._safetensors import header_length, parse_header
from weightvault.errors import FormatError, InputError
from weightvault.fingerprint.structure import TensorInfo

__all__ = [
    "SAFETENSORS_SUFFIXES",
    "TORCH_SUFFIXES",
    "ModelReader",
    "StateReader",
    "TensorSource",
    "open_model",
    "rewrite_safetensors",
]

SAFETENSORS_SUFFIXES = frozenset({".safetensors"})
TORCH_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt"})
_COPY_CHUNK = 8 * 1024 * 1024

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_CODES = {dtype: code for code, dtype in _DTYPES.items()}


def dtype_code(dtype: torch.dtype) -> str:
    """The safetensors code of a torch dtype (``?`` for ones safetensors cannot hold)."""
    return _CODES.get(dtype, "?")


@dataclass(frozen=True)
class _Entry:
    """A tensor of a safetensors header: the package's own :class:`TensorInfo` (one record of
    name, dtype and shape for every reader) and where its bytes lie in the data section."""

    info: TensorInfo
    begin: int
    end: int


def _read_exact(stream: BinaryIO, size: int, where: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise FormatError(f"{where}: truncated safetensors file")
    return data


def read_header(stream: BinaryIO, where: str) -> tuple[bytes, list[_Entry]]:
    """The raw header (length prefix included) and its tensors in data order, checked by the
    one parser (:func:`weightvault._safetensors.parse_header`): known dtypes, sizes that match
    shapes, offsets that tile the data without gaps or overlaps. The stream's size is not known
    here: :func:`rewrite_safetensors` refuses bytes after the last tensor when it reaches them."""
    prefix = _read_exact(stream, 8, where)
    raw = _read_exact(stream, header_length(prefix, where, None), where)
    header = parse_header(raw, where, None, dtypes=_DTYPES)
    entries = [_Entry(TensorInfo(t.name, t.dtype, t.shape), t.begin, t.end) for t in header.tensors]
    entries.sort(key=lambda e: (e.begin, e.end))
    return prefix + raw, entries


def _read_tensor(stream: BinaryIO, entry: _Entry, where: str) -> torch.Tensor:
    """One tensor read straight into its own buffer (one copy of its bytes in memory)."""
    size = entry.end - entry.begin
    if not size:
        return torch.empty(entry.info.shape, dtype=_DTYPES[entry.info.dtype])
    buffer = bytearray(size)
    view = memoryview(buffer)
    filled = 0
    while filled < size:
        count = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not count:
            raise FormatError(f"{where}: truncated safetensors file")
        filled += count
    return torch.frombuffer(buffer, dtype=_DTYPES[entry.info.dtype]).reshape(entry.info.shape)


def rewrite_safetensors(
    source: BinaryIO,
    sink: BinaryIO,
    change: Callable[[str], Callable[[torch.Tensor], torch.Tensor] | None],
    where: str,
) -> int:
    """Copy a safetensors stream from ``source`` to ``sink`` reading it once, front to back.

    ``change(name)`` returns a function that rewrites that tensor (same dtype and shape), or
    ``None`` to copy its bytes untouched. The header is written as read, so the output has the
    same layout and size. Returns the bytes written.
    """
    header, entries = read_header(source, where)
    sink.write(header)
    written = len(header)
    for entry in entries:
        size = entry.end - entry.begin
        rewrite = change(entry.info.name)
        if rewrite is None:
            left = size
            while left:
                chunk = source.read(min(left, _COPY_CHUNK))
                if not chunk:
                    raise FormatError(f"{where}: truncated safetensors file")
                sink.write(chunk)
                left -= len(chunk)
        else:
            original = _read_tensor(source, entry, where)
            marked = rewrite(original)
            if marked.dtype != original.dtype or tuple(marked.shape) != entry.info.shape:
                raise AssertionError(f"{entry.info.name}: a mark changed dtype or shape")
            if size:  # written from the tensor's own memory: no bytes copy of a large tensor
                sink.write(marked.contiguous().view(torch.uint8).numpy().data)
        written += size
    if source.read(1):
        raise FormatError(f"{where}: trailing bytes after the last tensor")
    return written


class TensorSource(Protocol):
    """Tensors by name, loaded one at a time: a model on disk or a state dict in memory."""

    infos: dict[str, TensorInfo]

    def tensor(self, name: str) -> torch.Tensor: ...


class ModelReader:
    """Tensors of one model (a file or a folder of weight files), by name, loaded one at a time."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.files: list[Path] = _weight_files(self.path)
        self.infos: dict[str, TensorInfo] = {}
        self._where: dict[str, Path] = {}
        self._torch: dict[Path, dict[str, torch.Tensor]] = {}
        for file in self.files:
            for info in _file_infos(file, self._torch):
                if info.name in self.infos:
                    raise FormatError(
                        f"{file}: tensor {info.name!r} also in {self._where[info.name]}"
                    )
                self.infos[info.name] = info
                self._where[info.name] = file
        if not self.infos:
            raise InputError(f"{self.path}: no tensors found")

    def file_of(self, name: str) -> Path:
        return self._where[name]

    def tensor(self, name: str) -> torch.Tensor:
        """One tensor, read from disk now (safetensors memory-maps; torch files are mapped too)."""
        file = self._where[name]
        if file in self._torch:
            return self._torch[file][name]
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as handle:
            return handle.get_tensor(name)  # type: ignore[no-any-return]


class StateReader:
    """The :class:`ModelReader` interface over tensors already in memory (a state dict)."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        self.state = state
        self.infos = {
            name: TensorInfo(name, dtype_code(t.dtype), tuple(t.shape)) for name, t in state.items()
        }

    def tensor(self, name: str) -> torch.Tensor:
        return self.state[name]


def _weight_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix not in SAFETENSORS_SUFFIXES | TORCH_SUFFIXES:
            raise InputError(
                f"{path}: not a model file (use .safetensors, or a torch state dict: "
                f"{', '.join(sorted(TORCH_SUFFIXES))})"
            )
        return [path]
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.suffix in SAFETENSORS_SUFFIXES | TORCH_SUFFIXES
        )
        if not files:
            raise InputError(f"{path}: folder holds no .safetensors or torch weight files")
        return files
    raise InputError(f"{path}: no such model file or folder")


def _file_infos(file: Path, torch_cache: dict[Path, dict[str, torch.Tensor]]) -> list[TensorInfo]:
    if file.suffix in SAFETENSORS_SUFFIXES:
        try:
            with file.open("rb") as handle:
                _header, entries = read_header(handle, str(file))
        except OSError as exc:
            raise InputError(f"{file}: cannot read ({exc.strerror or exc})") from exc
        return [e.info for e in entries]
    state = load_torch_state(file)
    torch_cache[file] = state
    return [TensorInfo(n, dtype_code(t.dtype), tuple(t.shape)) for n, t in state.items()]


def load_torch_state(file: Path) -> dict[str, torch.Tensor]:
    """A torch checkpoint through the safe loader (``weights_only``: no code runs), memory-mapped
    where the file allows it; nested dicts are flattened to dotted names."""
    try:
        loaded = torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        try:  # legacy (non-zip) files cannot be memory-mapped
            loaded = torch.load(str(file), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise FormatError(f"{file}: not a torch state dict the safe loader accepts") from exc
    except Exception as exc:
        raise FormatError(f"{file}: not a torch state dict the safe loader accepts") from exc
    out: dict[str, torch.Tensor] = {}
    _flatten(loaded, "", out)
    return out


def _flatten(value: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    if isinstance(value, torch.Tensor):
        out[prefix.rstrip(".")] = value
    elif isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}{key}.", out)


def open_model(path: Path) -> ModelReader:
    """A :class:`ModelReader` for ``path`` (file or folder)."""
    return ModelReader(path)


@contextmanager
def opened(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened for reading, with a one-line error if it cannot be."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    with handle:
        yield handle
