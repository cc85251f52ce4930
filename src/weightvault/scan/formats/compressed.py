"""Compressed streams, recognized by content as joblib recognizes them, whatever the file's name.

gzip, bz2, xz, legacy lzma, zlib and joblib's own "ZF" files are expanded within the scan limits
and their content scanned; LZ4 frames are recognized (and refused, as not expandable here).
"""

from __future__ import annotations

import os
from typing import NamedTuple

from weightvault.scan._engine import FileContext, join_location
from weightvault.scan._io import ByteReader, DecompressingStream, LimitExceeded, Truncated
from weightvault.scan.formats.members import check_depth, spool_and_scan
from weightvault.scan.policy import Severity

__all__ = ["LZ4_MAGIC", "Compression", "compression_of", "looks_like_zlib", "scan_compressed"]


def looks_like_zlib(head: bytes) -> bool:
    """A zlib stream header (joblib's ``compress=`` default) : CMF 0x78 and a valid FCHECK."""
    return (
        len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0
        and not head[1] & 0x20  # no preset dictionary: excludes text such as "x " and "x?"
    )


class Compression(NamedTuple):
    """A compressed stream recognized by its first bytes."""

    kind: str
    """The :class:`DecompressingStream` kind (``xz`` also reads legacy .lzma files)."""
    label: str
    """What the report calls it: ``gzip``, ``lzma``, ``joblib-zfile`` ..."""
    offset: int
    """Where the compressed stream starts (after a joblib "ZF" header)."""
    strong: bool
    """Magic long enough that data failing to decompress is an error, not some other format."""


#: joblib chooses a decompressor by these prefixes (``joblib.compressor``), whatever the file's
#: name; ``gzip.open``, ``bz2.open`` and ``lzma.open`` read the same streams.
_JOBLIB_ZFILE_HEADER = 2 + 19  # b"ZF" + the length in hex, padded to len(hex(2**64))


def compression_of(head: bytes) -> Compression | None:
    """The compressed format ``head`` starts with, judged as joblib detects it."""
    if head.startswith(b"\x1f\x8b"):
        return Compression("gzip", "gzip", 0, len(head) >= 3 and head[2] == 8)
    if head.startswith(b"BZh"):
        return Compression("bz2", "bz2", 0, head[3:4] in (b"1", b"2", b"3", b"4", b"5", b"6",
                                                          b"7", b"8", b"9"))
    if head.startswith(b"\xfd7zXZ\x00"):
        return Compression("xz", "xz", 0, True)
    if head.startswith(b"\x5d\x00"):
        return Compression("xz", "lzma", 0, False)
    if head.startswith(b"ZF") and len(head) >= _JOBLIB_ZFILE_HEADER + 2:
        length = head[2:_JOBLIB_ZFILE_HEADER].decode("latin-1").strip().rstrip("L")
        try:
            int(length, 16)
        except ValueError:
            return None
        offset = _JOBLIB_ZFILE_HEADER + (head[_JOBLIB_ZFILE_HEADER] == 0x20)
        return Compression("zlib", "joblib-zfile", offset, True)
    if looks_like_zlib(head):
        return Compression("zlib", "zlib", 0, False)
    return None


#: LZ4 frames (``joblib.dump(..., compress="lz4")`` with the lz4 package installed).
LZ4_MAGIC = b"\x04\x22\x4d\x18"



def scan_compressed(
    ctx: FileContext, r: ByteReader, compression: Compression, location: str, *, name: str,
    depth: int,
) -> str | None:
    """A gzip / bz2 / xz / lzma / zlib stream (compressed joblib files, ``.tar.gz``), found by
    content: expand and scan. ``None`` when a weak magic (2-byte zlib or lzma prefixes) turns
    out not to start a stream at all: then the caller reads the file as something else (no
    loader can decompress it either)."""
    if not check_depth(ctx, location, depth + 1):
        return compression.label
    r.skip(compression.offset)
    start = r.tell()
    compressed = (r.end or start) - start
    limit = min(
        ctx.limits.max_decompressed_bytes,
        max(compressed, 1) * ctx.limits.max_compression_ratio + (64 << 20),
    )
    multistream = compression.label in ("gzip", "bz2", "xz", "lzma")
    stream = DecompressingStream(r, compression.kind, max_output=limit, multistream=multistream)
    if not compression.strong:
        try:
            first = stream.read(1)
        except LimitExceeded:
            first = b"x"
        except Truncated:
            return None
        if not first:
            return None
        stream.unread(first)
    inner_name = name[: -len(os.path.splitext(name)[1])] if os.path.splitext(name)[1] else name
    inner = join_location(location, f"<{compression.label}>")
    try:
        spool_and_scan(ctx, stream, inner, inner_name, depth + 1)
    except Truncated as exc:
        ctx.error(location, f"{compression.label} stream: {exc}")
    trailing = stream.trailing
    if trailing:
        ctx.find(
            Severity.UNKNOWN, "structure", "<trailing data>",
            f"{trailing} bytes after the {compression.label} stream that are not a compressed "
            "stream (decompressors disagree on whether to fail or ignore them)",
            location or ".",
        )
    return compression.label

