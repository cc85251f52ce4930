"""What every container (zip, tar, 7z, compressed stream) does with its members.

A member's name is checked for traversal, nesting is bounded, and its bytes are scanned by
content like a file of their own; compressed members are expanded into a bounded temporary file
first.
"""

from __future__ import annotations

import re
from typing import BinaryIO

from weightvault.scan._engine import FileContext
from weightvault.scan._io import ByteReader, DecompressingStream, LimitExceeded, Truncated
from weightvault.scan.policy import Severity

__all__ = [
    "check_depth", "check_member_name", "report_bomb", "scan_member_bytes", "spool_and_scan",
    "unsafe_member_name",
]

_DRIVE = re.compile(r"^[A-Za-z]:")


def unsafe_member_name(name: str) -> str | None:
    """Why extracting a member under ``name`` would write outside the target folder, if it
    would: an absolute path, a ``..`` component or a NUL byte."""
    if ".." not in name and "\\" not in name and "\x00" not in name and ":" not in name[:2] and (
        not name.startswith("/")
    ):
        return None
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "absolute path"
    parts = re.split(r"[\\/]", name)
    if ".." in parts:
        return "parent-directory component '..'"
    if "\x00" in name:
        return "NUL byte in the name"
    return None


def check_member_name(ctx: FileContext, name: str, location: str) -> None:
    """A dangerous finding when extracting the member ``name`` writes outside the target."""
    problem = unsafe_member_name(name)
    if problem:
        ctx.find(
            Severity.DANGEROUS, "archive", name,
            f"path traversal in member name ({problem}): extraction writes outside the target "
            "folder", location,
        )


def check_depth(ctx: FileContext, location: str, depth: int) -> bool:
    """False (and an error) when archives are nested deeper than the limit."""
    if depth > ctx.limits.max_archive_depth:
        ctx.error(
            location,
            f"archives nested more than {ctx.limits.max_archive_depth} deep; not followed",
        )
        return False
    return True


def scan_member_bytes(
    ctx: FileContext, raw: BinaryIO, start: int, end: int, location: str, name: str, depth: int,
) -> None:
    """Scan ``raw[start:end]`` by content, as a file named ``name``."""
    from weightvault.scan.formats import scan_reader

    reader = ByteReader(raw, start, end)
    fmt = scan_reader(ctx, reader, raw, location, name=name, depth=depth)
    ctx.formats.append(fmt)


def report_bomb(ctx: FileContext, location: str, message: str) -> None:
    """A member or archive that expands past the limits: a finding, and an error (not scanned)."""
    ctx.find(Severity.UNKNOWN, "archive", "<compression bomb>", message, location or ".")
    ctx.error(location, f"not scanned: {message}")


def spool_and_scan(
    ctx: FileContext, stream: DecompressingStream, location: str, name: str, depth: int,
) -> None:
    """Copy a decompressing stream to a temporary file (bounded), then scan it seekably.

    Two bounds apply: the stream's own cap (a bomb: a finding and an error) and
    ``max_spool_bytes`` of temporary disk space per member (an error: not scanned). Data that
    ends early or turns corrupt is an error, and what decompressed before that point is still
    scanned: a streaming loader (``pickle.load`` on ``gzip.open``) consumes it before failing.
    """
    import tempfile

    cap = ctx.limits.max_spool_bytes
    with tempfile.TemporaryFile(prefix="wv-scan-") as spool:
        failure = ""
        try:
            written = 0
            while chunk := stream.read(1 << 20):
                written += len(chunk)
                if written > cap:
                    ctx.error(location, f"not scanned: expands past {cap} bytes, the limit of "
                              "temporary space for one compressed member")
                    return
                spool.write(chunk)
        except LimitExceeded as exc:
            report_bomb(ctx, location, str(exc))
            return
        except Truncated as exc:  # corrupt or cut-off compressed data: never "clean"
            failure = str(exc)
        size = spool.tell()
        spool.flush()  # readers below may use os.pread on the descriptor
        if failure:
            ctx.error(location, f"not scanned completely: {failure}"
                      + (f" (the {size} bytes before it were scanned)" if size else ""))
            if not size:
                return
        errors_before = len(ctx.errors)
        scan_member_bytes(ctx, spool, 0, size, location, name, depth)
        if failure:  # the cut-off content's own complaints say the same thing again
            del ctx.errors[errors_before:]
