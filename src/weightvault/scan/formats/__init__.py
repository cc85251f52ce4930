"""Format detection by content, and dispatch to the format scanners.

Extensions are only hints: a pickle named ``.safetensors``, a safetensors file named ``.bin`` or
a zip named ``.pt`` are recognized by their bytes. A pickle whose name claims a non-pickle format
is reported (a disguise is itself a finding).
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from weightvault._readers import SizedReader
from weightvault.scan._engine import FileContext
from weightvault.scan._io import ByteReader, Truncated
from weightvault.scan.formats import compressed, tar, template_files, zip_archive
from weightvault.scan.formats.pickle import looks_like_pickle_start, scan_pickle_file
from weightvault.scan.policy import Severity

__all__ = ["RegionFile", "scan_reader"]

PICKLE_SUFFIXES = (
    ".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib", ".p",
    ".pyt", ".mar", ".npy", ".sav",
)
NON_PICKLE_SUFFIXES = (
    ".safetensors", ".gguf", ".onnx", ".json", ".txt", ".md", ".h5", ".keras", ".msgpack",
    ".model", ".tflite", ".yaml", ".yml",
)

#: Extensions that promise a format: content that is none of the known formats is an error.
CLAIMED_FORMATS = {
    ".safetensors": "safetensors", ".gguf": "GGUF", ".npy": "NumPy", ".npz": "a zip of arrays",
    ".onnx": "ONNX", ".h5": "HDF5", ".hdf5": "HDF5", ".keras": "a Keras zip",
    ".pt": "a PyTorch checkpoint", ".pth": "a PyTorch checkpoint", ".ckpt": "a checkpoint",
    ".pkl": "a pickle", ".pickle": "a pickle", ".joblib": "a joblib file",
}


class RegionFile(SizedReader):
    """A read-only, seekable file object over ``[start, end)`` of another seekable file.

    Lets ``zipfile``, ``tarfile`` and ``h5py`` open an archive member in place, without a copy.
    """

    def __init__(self, raw: BinaryIO, start: int, end: int) -> None:
        super().__init__()
        self._raw = raw
        self._start = start
        self._size = end - start

    def seek(self, offset: int, whence: int = 0) -> int:
        """As :meth:`SizedReader.seek`, but failing as a real file does (``OSError``), and any
        ``whence`` other than 0 and 1 counts from the end."""
        if whence == 0:
            pos = offset
        elif whence == 1:
            pos = self._position + offset
        else:
            pos = self._size + offset
        if pos < 0:
            raise OSError("negative seek position")
        self._position = pos
        return pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._size - self._position)
        if n <= 0:
            return 0
        self._raw.seek(self._start + self._position)
        data = self._raw.read(n)
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


#: What ``scan_reader`` returns for zips: their members were read, so no trailing-zip check.
_ZIP_FORMATS = frozenset({"zip", "pytorch-zip", "torchscript", "keras", "npz"})
#: Containers whose own members may be zips lying near their end (checked as members).
_CONTAINERS = ("tar", "pytorch-legacy-tar", "7z", "gzip", "bz2", "xz", "lzma", "zlib",
               "joblib-zfile", "lz4", "rar", "empty")


def scan_reader(
    ctx: FileContext, r: ByteReader, raw: BinaryIO, location: str, *, name: str, depth: int,
) -> str:
    """Detect the format of ``r`` (a seekable region of ``raw``) and scan it; returns the format.

    A file that is also a zip to ``zipfile`` (an archive found from the end behind some other
    format) is refused as a polyglot and its members are scanned as well.
    """
    start = r.tell()
    end = r.end if r.end is not None else start
    fmt = _scan_by_content(ctx, r, raw, location, name=name, depth=depth)
    if fmt not in _ZIP_FORMATS and not fmt.startswith(_CONTAINERS):
        zip_archive.scan_trailing_zip(ctx, raw, start, end, location, name=name, depth=depth,
                                      fmt=fmt)
    return fmt


def _scan_by_content(
    ctx: FileContext, r: ByteReader, raw: BinaryIO, location: str, *, name: str, depth: int,
) -> str:
    start = r.tell()
    end = r.end if r.end is not None else start
    size = end - start
    head = r.peek(512)
    lower = name.lower()
    if not head:
        if lower.endswith(tuple(CLAIMED_FORMATS)):
            ctx.error(location, "empty file where a model file is expected")
        return "empty"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return zip_archive.scan_zip(ctx, raw, start, end, location, name=name, depth=depth)
    if tar.looks_like_tar(head):
        return tar.scan_tar(ctx, raw, start, end, location, depth=depth)
    compression = compressed.compression_of(head)
    if compression is not None:
        fmt = compressed.scan_compressed(ctx, r, compression, location, name=name, depth=depth)
        if fmt is not None:
            return fmt
        r = ByteReader(raw, start, end)  # a weak magic that starts no stream: read on
    if head.startswith(compressed.LZ4_MAGIC):
        ctx.error(location, "lz4-compressed data (joblib compress='lz4') is not supported; "
                  "decompress it and scan the contents")
        return "lz4"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        try:
            import py7zr  # noqa: F401  (the optional [scan] extra; imported only for 7z files)
        except ImportError:
            ctx.error(location, "7z archive not scanned: install the optional extra (pip install "
                      "'weightvault[scan]'), or extract it and scan the contents")
            return "7z"
        from weightvault.scan.formats import sevenzip

        return sevenzip.scan_7z(ctx, raw, start, end, location, depth=depth)
    if head.startswith(b"Rar!\x1a\x07"):
        ctx.error(location, "rar archive: not supported; extract it and scan the contents")
        return "rar"
    if head.startswith(b"GGUF"):
        from weightvault.scan.formats import gguf

        gguf.scan_gguf(ctx, r, location)
        return "gguf"
    if head.startswith(b"\x93NUMPY"):
        from weightvault.scan.formats import numpy_files

        numpy_files.scan_npy(ctx, r, location)
        return "numpy"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        from weightvault.scan.formats import keras

        keras.scan_hdf5(ctx, RegionFile(raw, start, end), location)  # type: ignore[arg-type]
        return "hdf5"
    if template_files.is_template_file(lower):  # text, by name (a pickle fails as text)
        return template_files.scan_template_file(ctx, r, location, name=name)
    if len(head) >= 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= size - 8 or header_len < 100_000_000 or lower.endswith(
            ".safetensors"
        ):
            from weightvault.scan.formats import safetensors

            safetensors.scan_safetensors(ctx, r, location)
            return "safetensors"
    if lower.endswith(".onnx") or (head[0] == 0x08 and len(head) >= 4 and 1 <= head[1] <= 20):
        from weightvault.scan.formats import onnx

        if onnx.scan_onnx(ctx, r, location, claimed=lower.endswith(".onnx")):
            return "onnx"
        r = ByteReader(raw, start, end)
    if looks_like_pickle_start(head):
        claimed = lower.endswith(PICKLE_SUFFIXES)
        try:
            result = scan_pickle_file(r, ctx, location, claimed=claimed)
        except Truncated as exc:  # pragma: no cover - the machine converts these
            ctx.error(location, f"truncated: {exc}")
            return "pickle"
        if result is not None:
            if lower.endswith(NON_PICKLE_SUFFIXES):
                ctx.find(
                    Severity.UNKNOWN, "structure", "<disguised pickle>",
                    f"a pickle named like a non-pickle format ({name})", location or ".",
                )
            return result
    for suffix, expected in CLAIMED_FORMATS.items():
        if lower.endswith(suffix):
            ctx.error(location, f"named {suffix} but the content is not {expected} "
                      "(truncated or unknown bytes)")
            return "unknown"
    return "data"
