"""Bounded, buffered byte readers over files, file slices and decompression streams.

Parsers read through :class:`ByteReader` so that large payloads (tensor bytes in a pickle, a
safetensors data section, GGUF tensors) are *skipped by seeking*, never read into memory, and so
that a declared length beyond the end of the data is a truncation error instead of a huge read.
"""

from __future__ import annotations

import os
import zlib
from typing import BinaryIO, Protocol

__all__ = [
    "ByteReader", "DecompressingStream", "LimitExceeded", "RawStream", "Truncated", "pread",
]

_CHUNK = 1 << 16
#: The first refill of a reader is small: most formats are told apart by their first bytes and
#: then read elsewhere (a zip by its central directory), so 64 KiB would mostly be wasted copying.
_FIRST_CHUNK = 1 << 12


class Truncated(Exception):
    """The data ended before a declared length (a malformed or truncated file)."""


class LimitExceeded(Truncated):
    """Decompressed data grew past its cap (a compression bomb, or a size that lied)."""


def pread(raw: BinaryIO, size: int, offset: int) -> bytes:
    """One positioned read: ``os.pread`` on real files (one system call, no buffer churn);
    nothing for an empty or negative range."""
    if size <= 0 or offset < 0:
        return b""
    try:
        fd = raw.fileno()
    except (AttributeError, OSError, ValueError):
        raw.seek(offset)
        return raw.read(size)
    return os.pread(fd, size, offset)


class RawStream(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


class ByteReader:
    """Read a byte range ``[start, end)`` of ``raw`` with a small buffer.

    ``raw`` may be shared between readers (zip members of one file): every refill seeks first.
    When ``seekable`` is false ``raw`` is read strictly forward and ``end`` may be ``None``
    (unknown length, e.g. a decompression stream).
    """

    __slots__ = ("_buf", "_buf_pos", "_chunk", "_end", "_i", "_next", "_raw", "_seekable")

    def __init__(
        self, raw: RawStream | BinaryIO, start: int = 0, end: int | None = None, *,
        seekable: bool = True,
    ) -> None:
        self._raw = raw
        self._seekable = seekable
        self._end = end
        self._buf = b""
        self._i = 0
        self._buf_pos = start  # file offset of _buf[0]
        self._next = start  # file offset of the next byte to fetch from raw
        self._chunk = _FIRST_CHUNK  # refill size: _CHUNK after the first refill

    # -- position -------------------------------------------------------------------------------
    def tell(self) -> int:
        return self._buf_pos + self._i

    @property
    def end(self) -> int | None:
        return self._end

    def remaining(self) -> int | None:
        return None if self._end is None else self._end - self.tell()

    # -- refill ---------------------------------------------------------------------------------
    def _fill(self, want: int) -> bool:
        """Make at least ``want`` bytes available in the buffer; False at end of data."""
        avail = len(self._buf) - self._i
        if avail >= want:
            return True
        keep = self._buf[self._i :]
        self._buf_pos += self._i
        self._i = 0
        parts = [keep]
        have = len(keep)
        while have < want:
            size = max(self._chunk, want - have)
            self._chunk = _CHUNK
            if self._end is not None:
                size = min(size, self._end - self._next)
                if size <= 0:
                    break
            if self._seekable:
                self._raw.seek(self._next)  # type: ignore[union-attr]
            data = self._raw.read(size)
            if not data:
                break
            self._next += len(data)
            parts.append(data)
            have += len(data)
        self._buf = b"".join(parts) if len(parts) > 1 else keep
        return have >= want

    # -- reads ----------------------------------------------------------------------------------
    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or :class:`Truncated`."""
        i = self._i
        if i + n <= len(self._buf):
            self._i = i + n
            return self._buf[i : i + n]
        if not self._fill(n):
            raise Truncated(f"needed {n} bytes at offset {self.tell()}, data ended")
        i = self._i
        self._i = i + n
        return self._buf[i : i + n]

    def read_byte(self) -> int:
        """One byte as an int, or -1 at end of data."""
        i = self._i
        if i < len(self._buf):
            self._i = i + 1
            return self._buf[i]
        if not self._fill(1):
            return -1
        self._i += 1
        return self._buf[self._i - 1]

    def peek(self, n: int) -> bytes:
        """Up to ``n`` bytes without consuming them."""
        self._fill(n)
        return self._buf[self._i : self._i + n]

    def at_eof(self) -> bool:
        return not self._fill(1)

    def readline(self, limit: int) -> bytes:
        """Bytes up to (not including) the next ``\\n``; :class:`Truncated` if none within limit."""
        while True:
            j = self._buf.find(b"\n", self._i, self._i + limit + 1)
            if j >= 0:
                line = self._buf[self._i : j]
                self._i = j + 1
                return line
            have = len(self._buf) - self._i
            if have > limit:
                raise Truncated(f"line longer than {limit} bytes at offset {self.tell()}")
            if not self._fill(have + 1):
                raise Truncated(f"line without newline at offset {self.tell()}, data ended")

    def skip(self, n: int) -> None:
        """Advance ``n`` bytes without keeping them; seeks when possible."""
        if n < 0:
            raise Truncated(f"negative length {n} at offset {self.tell()}")
        avail = len(self._buf) - self._i
        if n <= avail:
            self._i += n
            return
        target = self.tell() + n
        if self._end is not None and target > self._end:
            raise Truncated(
                f"declared length {n} at offset {self.tell()} runs past the end ({self._end})"
            )
        if self._seekable:
            self._buf = b""
            self._i = 0
            self._buf_pos = target
            self._next = target
            return
        n -= avail
        self._buf_pos += len(self._buf)
        self._buf = b""
        self._i = 0
        while n > 0:
            data = self._raw.read(min(n, 1 << 20))
            if not data:
                raise Truncated(f"data ended {n} bytes short of a declared length")
            self._next += len(data)
            self._buf_pos += len(data)
            n -= len(data)

    def sub_reader(self, length: int) -> ByteReader:
        """A reader over the next ``length`` bytes (seekable sources only); skips them here."""
        start = self.tell()
        if self._end is not None and start + length > self._end:
            raise Truncated(f"declared length {length} at offset {start} runs past the end")
        if not self._seekable:
            raise Truncated("nested region in a non-seekable stream")
        self.skip(length)
        return ByteReader(self._raw, start, start + length, seekable=True)


class DecompressingStream:
    """A forward-only ``read(n)`` over compressed bytes, with a cap on the output size.

    The cap is how zip bombs and gzip bombs are bounded: crossing it raises
    :class:`LimitExceeded` with a message the caller turns into a finding; corrupt or truncated
    compressed data raises :class:`Truncated`.

    ``kind`` ``"lzma1"`` is a raw LZMA1 stream (zip method 14, after its properties header)
    decoded with ``filters``; such a stream may lack an end marker, so it also ends cleanly when
    its input runs out after exactly ``expected_output`` bytes. ``"xz"`` accepts both the .xz
    container and the legacy .lzma ("alone") format, as ``lzma.LZMAFile`` does.

    ``multistream`` follows the standard library's file readers (``gzip.open``,
    ``bz2.BZ2File``, ``lzma.LZMAFile``): streams that follow the first are decompressed and
    appended; data after the last stream that is not one is left alone and reported through
    :attr:`trailing` (so is any data after a single-stream reader's stream).
    """

    def __init__(
        self, source: ByteReader, kind: str, *, max_output: int,
        filters: list[dict[str, int]] | None = None, expected_output: int | None = None,
        multistream: bool = False,
    ) -> None:
        import bz2
        import lzma

        self._src = source
        self._kind = kind
        self._filters = filters
        self._max_output = max_output
        self._expected = expected_output
        self._multistream = multistream
        self._produced = 0
        self._pending = b""
        self._input = b""  # compressed bytes handed back by a finished stream
        self._eof = False
        self._failure: Truncated | None = None
        self._partial = b""  # bytes produced by the read in progress (kept if it fails)
        self.trailing = 0
        """Bytes after the last compressed stream (0 when none, or unknown until the end)."""
        self._errors = (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError, MemoryError)
        self._bz2 = bz2
        self._lzma = lzma
        self._dec = self._new_decoder()

    def _new_decoder(self) -> object:
        kind = self._kind
        if kind == "deflate":
            return zlib.decompressobj(-15)
        if kind == "zlib":
            return zlib.decompressobj()
        if kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        if kind == "bz2":
            return self._bz2.BZ2Decompressor()
        if kind == "xz":
            return self._lzma.LZMADecompressor()
        if kind == "lzma1":
            if self._filters is None:
                raise ValueError("lzma1 needs its filter chain")
            try:
                return self._lzma.LZMADecompressor(self._lzma.FORMAT_RAW, filters=self._filters)
            except (self._lzma.LZMAError, ValueError, MemoryError) as exc:
                raise Truncated(f"unsupported LZMA properties: {exc}") from exc
        raise ValueError(f"unknown compression {kind}")

    @property
    def produced(self) -> int:
        return self._produced

    def unread(self, data: bytes) -> None:
        """Put bytes already read back in front (a probe of the first output byte)."""
        self._pending = data + self._pending

    def _next_compressed(self) -> bytes:
        if self._input:
            chunk, self._input = self._input, b""
            return chunk
        chunk = self._src.peek(_CHUNK)
        self._src.skip(len(chunk))
        return chunk

    def _stream_ended(self, unused: bytes) -> None:
        """The current stream is complete: start the next one, or note what follows."""
        rest = unused or self._next_compressed()
        if not rest:
            self._eof = True
            return
        if self._multistream and self._starts_stream(rest):
            self._input = rest
            self._dec = self._new_decoder()
            return
        self._eof = True
        remaining = self._src.remaining()
        self.trailing = len(rest) + (remaining or 0)
        if self._kind == "gzip" and not rest.strip(b"\x00") and not remaining:
            self.trailing = 0  # zero padding after the last member: gzip skips it

    def _starts_stream(self, data: bytes) -> bool:
        if self._kind == "gzip":
            return data.startswith(b"\x1f\x8b")
        if self._kind == "bz2":
            return data.startswith(b"BZh")
        if self._kind == "xz":
            return data.startswith((b"\xfd7zXZ\x00", b"\x5d\x00"))
        return False

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes; ``b""`` at the end. Data decompressed before a failure is returned
        first, and the failure (:class:`Truncated`) raised by the next call."""
        if self._failure is not None and not self._pending:
            failure, self._failure = self._failure, None
            self._eof = True
            raise failure
        try:
            return self._read(n)
        except LimitExceeded:
            raise
        except Truncated as exc:
            if not self._partial:
                raise
            self._failure = exc
            blob, self._partial = self._partial, b""
            return blob

    def _read(self, n: int) -> bytes:
        if n < 0:
            n = 1 << 20
        out = [self._pending] if self._pending else []
        have = len(self._pending)
        self._partial = self._pending
        self._pending = b""
        while have < n and not self._eof:
            dec = self._dec
            want = max(n - have, _CHUNK)
            try:
                if isinstance(dec, type(zlib.decompressobj())):
                    tail = dec.unconsumed_tail
                    chunk = tail if tail else self._next_compressed()
                    if not chunk:
                        raise Truncated("compressed data ended before its end marker")
                    data = dec.decompress(chunk, want)
                else:
                    if dec.needs_input:  # type: ignore[attr-defined]
                        chunk = self._next_compressed()
                        if not chunk:
                            if self._expected is not None and self._produced == self._expected:
                                self._eof = True  # LZMA1 without an end marker: size reached
                                break
                            raise Truncated("compressed data ended before its end marker")
                    else:
                        chunk = b""
                    data = dec.decompress(chunk, want)  # type: ignore[attr-defined]
            except self._errors as exc:
                raise Truncated(f"corrupt compressed data: {exc}") from exc
            self._produced += len(data)
            if self._produced > self._max_output:
                raise LimitExceeded(
                    f"decompressed data exceeds the limit of {self._max_output} bytes "
                    "(compression bomb?)"
                )
            out.append(data)
            have += len(data)
            self._partial += data
            if dec.eof:  # type: ignore[attr-defined]
                self._stream_ended(dec.unused_data)  # type: ignore[attr-defined]
        blob = b"".join(out)
        if len(blob) > n:
            self._pending = blob[n:]
            blob = blob[:n]
        return blob
