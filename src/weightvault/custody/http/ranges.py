"""HTTP ``Range`` requests and the response headers of a pull (the only place they are read or
written): one range, ``bytes=START-`` or ``bytes=START-END``."""

from __future__ import annotations

import urllib.parse

from weightvault.custody.egress import ByteRange, Pull
from weightvault.errors import FormatError, InputError

__all__ = ["RangeNotSatisfiable", "pull_headers", "range_of"]


class RangeNotSatisfiable(InputError):
    """The range starts past the end (HTTP 416)."""

    def __init__(self, total: int) -> None:
        super().__init__(f"Range: not satisfiable (size {total})")
        self.total = total


def range_of(header: str | None) -> ByteRange | None:
    """The byte range a ``Range`` header asks for, resolved once the file's size is known (the
    header is checked then too, after the pull is authorized); None without a header."""
    if header is None:
        return None
    return lambda total: parse_range(header, total)


def parse_range(header: str, total: int) -> tuple[int, int]:
    """``bytes=START-`` or ``bytes=START-END`` (one range) of ``total`` bytes: ``[start, end)``."""
    if len(header) > 100 or not header.startswith("bytes="):
        raise FormatError("Range: expected bytes=START-[END]")
    spec = header[len("bytes=") :]
    if "," in spec or "-" not in spec:
        raise FormatError("Range: one range only, bytes=START-[END]")
    first, last = spec.split("-", 1)
    if not _ascii_digits(first) or (last and not _ascii_digits(last)):
        raise FormatError("Range: expected bytes=START-[END]")
    start = int(first)
    end = int(last) + 1 if last else total
    end = min(end, total)
    if start >= total or start >= end:
        raise RangeNotSatisfiable(total)
    return start, end


def _ascii_digits(text: str) -> bool:
    """``0-9`` only: ``str.isdigit`` also accepts e.g. ``\u00b2``, which ``int`` refuses."""
    return text.isascii() and text.isdigit()


def pull_headers(pull: Pull, *, ranged: bool) -> dict[str, str]:
    """Response headers of a pull (``Content-Range`` when a range was asked for)."""
    headers = {
        "Content-Length": str(pull.length),
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        # Percent-encoded: header values are latin-1, file paths are any Unicode.
        "X-Weightvault-Path": urllib.parse.quote(pull.path, safe="/"),
    }
    if ranged:
        headers["Content-Range"] = f"bytes {pull.start}-{pull.end - 1}/{pull.total}"
    return headers
