"""7z archives, read with the optional ``py7zr`` package (``pip install 'weightvault[scan]'``).

This module imports ``py7zr`` (a large import: compression and crypto back-ends) and is itself
imported only when a 7z file is met. Nothing is ever extracted to the file system: py7zr hands
each member's bytes to a writer of ours, which counts them against the archive's cap and keeps
them in an anonymous temporary file (never under the member's own name), where the member is
scanned by content like a zip member. Before anything is expanded the declared sizes are checked
against the same bounds as zip members (total decompressed bytes, compression ratio), and the
bytes actually produced are capped as they arrive. Encrypted archives are an error.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import py7zr
from py7zr.exceptions import CrcError, PasswordRequired
from py7zr.helpers import get_sanitized_output_path
from py7zr.io import Py7zIO, WriterFactory
from py7zr.py7zr import ArchiveFile

from weightvault.scan._engine import FileContext, join_location
from weightvault.scan._io import LimitExceeded
from weightvault.scan.formats import RegionFile
from weightvault.scan.formats.members import (
    check_depth,
    check_member_name,
    report_bomb,
    scan_member_bytes,
)
from weightvault.scan.policy import Severity

__all__ = ["scan_7z"]

_SIGNATURE_HEADER = 32
_MAX_LINK_TARGET = 4096
#: py7zr's Deflate and Deflate64 decoders ignore the output limit it passes them: one read block
#: of packed bytes (about 1 MiB) could expand to about 1 GB in memory before our writer's cap sees
#: a byte. Folders using them are expanded only when their packed size bounds that (1032:1).
_UNBOUNDED_CODERS = {b"\x04\x01\x08": "Deflate", b"\x04\x01\x09": "Deflate64"}
_MAX_UNBOUNDED_PACKED = 64 << 10


class _Member:
    __slots__ = ("is_link", "name")

    def __init__(self, name: str, *, is_link: bool) -> None:
        self.name = name
        self.is_link = is_link


class _MemberWriter(Py7zIO):
    """One member's bytes as py7zr decompresses them: counted, then spooled (links: kept)."""

    def __init__(self, factory: _ScanningFactory, member: _Member) -> None:
        self._factory = factory
        self.member = member
        self.size_written = 0
        self.link_target = bytearray()

    def write(self, s: bytes | bytearray) -> int:
        factory = self._factory
        factory.produced += len(s)
        if factory.produced > factory.limit:
            raise LimitExceeded(
                f"7z members expand to more than the limit of {factory.limit} bytes "
                "(compression bomb?)"
            )
        self.size_written += len(s)
        if self.member.is_link:
            self.link_target += s[: _MAX_LINK_TARGET - len(self.link_target)]
        else:
            factory.spool.write(s)
        return len(s)

    def read(self, size: int | None = None) -> bytes:
        return b""  # py7zr never reads a member back in writer mode

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0  # appending only: py7zr rewinds when a member is done

    def flush(self) -> None:
        return None

    def size(self) -> int:
        return self.size_written


@dataclass(eq=False)
class _ScanningFactory(WriterFactory):
    """Gives py7zr one writer per member; a member is scanned once the next one starts (or the
    extraction ends), so this works whether or not the installed py7zr calls ``close()``."""

    ctx: FileContext
    location: str
    depth: int
    limit: int
    members: dict[str, _Member]
    spool: BinaryIO
    produced: int = 0
    pending: _MemberWriter | None = None
    scan_failure: BaseException | None = None

    def create(self, filename: str) -> Py7zIO:
        self.finish()
        member = self.members.get(filename) or _Member(Path(filename).name, is_link=False)
        self.pending = _MemberWriter(self, member)
        return self.pending

    def finish(self) -> None:
        """Scan the member written last (if any); the spool is then reused for the next one."""
        writer, self.pending = self.pending, None
        if writer is None:
            return
        member = writer.member
        location = join_location(self.location, member.name)
        try:
            if member.is_link:
                _check_link(self.ctx, member.name, bytes(writer.link_target), location)
            else:
                self.spool.flush()  # readers may use os.pread on the descriptor
                scan_member_bytes(
                    self.ctx, self.spool, 0, writer.size_written, location, member.name,
                    self.depth + 1,
                )
        except BaseException as exc:
            self.scan_failure = exc  # our own scanner's problem: not a 7z error
            raise
        finally:
            self.spool.seek(0)
            self.spool.truncate()


def _check_link(ctx: FileContext, name: str, target_bytes: bytes, location: str) -> None:
    target = target_bytes.decode("utf-8", "replace")
    resolved = os.path.normpath(os.path.join(os.path.dirname(name), target))
    if target.startswith(("/", "\\")) or resolved.startswith(".."):
        ctx.find(
            Severity.DANGEROUS, "archive", name,
            f"link to {target!r} points outside the archive", location,
        )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, CrcError):
        return "member data does not match its CRC (corrupt archive)"
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def scan_7z(
    ctx: FileContext, raw: BinaryIO, start: int, end: int, location: str, *, depth: int,
) -> str:
    """Every member of a 7z archive, by content, within the zip bounds; links that escape and
    unsafe names are findings."""
    if not check_depth(ctx, location, depth):
        return "7z"
    size = end - start
    region = io.BufferedReader(RegionFile(raw, start, end), 1 << 16)
    try:
        archive = py7zr.SevenZipFile(region, mode="r")
    except PasswordRequired:
        ctx.error(location, "encrypted 7z archive (encrypted header) cannot be scanned; decrypt "
                  "it and scan the contents")
        return "7z"
    except Exception as exc:  # hostile input to a third-party parser: any failure is an error
        ctx.error(location, f"7z: unreadable: {_describe(exc)}")
        return "7z"
    with archive:
        if archive.needs_password():
            ctx.error(location, "encrypted 7z archive: its members cannot be scanned; decrypt "
                      "it and scan the contents")
            return "7z"
        coder = _unbounded_folder(archive)
        if coder is not None:
            ctx.error(location, f"7z folder compressed with {coder} is larger than "
                      f"{_MAX_UNBOUNDED_PACKED >> 10} KiB packed; not expanded, because its "
                      "output cannot be bounded in memory (repack with LZMA2, or unpack and "
                      "scan the files)")
            return "7z"
        files = list(archive.files)
        if len(files) > ctx.limits.max_archive_members:
            ctx.error(location, f"7z has {len(files)} members, over the limit of "
                      f"{ctx.limits.max_archive_members}; not scanned")
            return "7z"
        _check_trailing_data(ctx, raw, start, end, location, depth)
        declared = sum(int(f.uncompressed or 0) for f in files if not f.is_directory)
        if declared > ctx.limits.max_decompressed_bytes:
            report_bomb(ctx, location, f"7z members declare {declared} bytes, over the limit of "
                        f"{ctx.limits.max_decompressed_bytes}; archive not expanded")
            return "7z"
        ratio = declared / max(size, 1)
        if declared > (1 << 20) and ratio > ctx.limits.max_compression_ratio:
            report_bomb(ctx, location, f"7z compression ratio {ratio:.0f}:1 (compression "
                        "bomb?); archive not expanded")
            return "7z"
        limit = min(
            ctx.limits.max_decompressed_bytes, max(declared, 1 << 20),
            size * ctx.limits.max_compression_ratio + (1 << 20),
        )
        with tempfile.TemporaryDirectory(prefix="wv-7z-") as anchor_dir, \
                tempfile.TemporaryFile(prefix="wv-scan-") as spool:
            # py7zr checks member names against a destination folder even when it writes to
            # our writers only: an empty folder of ours, so the checks never depend on the
            # working directory. Nothing is ever written there.
            anchor = Path(anchor_dir)
            members, targets = _plan(ctx, files, anchor, location)
            factory = _ScanningFactory(ctx, location, depth, limit, members, spool)
            try:
                if targets is None or targets:
                    archive.extract(path=anchor, targets=targets, factory=factory)
            except Exception as exc:  # hostile input to a third-party parser, as above
                if exc is factory.scan_failure:
                    raise
                if isinstance(exc, LimitExceeded):
                    factory.pending = None  # a bomb's partial member is not scanned
                    report_bomb(ctx, location, str(exc))
                else:
                    ctx.error(location, f"7z: cannot extract: {_describe(exc)}")
            factory.finish()  # the last member (or what a failing one produced: still scanned)
    return "7z"


def _unbounded_folder(archive: py7zr.SevenZipFile) -> str | None:
    """The name of a decoder whose output py7zr cannot cap, if a large folder uses one."""
    streams = getattr(archive.header, "main_streams", None)
    if streams is None or streams.unpackinfo is None or streams.packinfo is None:
        return None
    packed_sizes = list(streams.packinfo.packsizes or [])
    position = 0
    for folder in streams.unpackinfo.folders:
        packed_streams = max(1, len(getattr(folder, "packed_indices", None) or [0]))
        packed = sum(packed_sizes[position : position + packed_streams])
        position += packed_streams
        for coder in folder.coders:
            name = _UNBOUNDED_CODERS.get(bytes(coder.get("method", b"")))
            if name is not None and packed > _MAX_UNBOUNDED_PACKED:
                return name
    return None


def _plan(
    ctx: FileContext, files: list[ArchiveFile], anchor: Path, location: str,
) -> tuple[dict[str, _Member], list[str] | None]:
    """Which members py7zr will hand to our writers, under which output names; findings for
    unsafe and duplicate names. Replicates the naming of ``SevenZipFile._extract``."""
    refused: set[str] = set()
    seen: set[str] = set()
    for f in files:
        name = f.filename
        member_loc = join_location(location, name)
        if name in seen:
            ctx.find(
                Severity.UNKNOWN, "archive", name,
                "duplicate member name: readers disagree on which copy they load", member_loc,
            )
        seen.add(name)
        check_member_name(ctx, name, member_loc)
        try:
            get_sanitized_output_path(name, anchor)
        except Exception:  # py7zr refuses the name (Bad7zFile): it will not hand it to us
            if name not in refused:
                refused.add(name)
                ctx.error(member_loc, "member with an unsafe name not expanded; its content is "
                          "not scanned")
    members: dict[str, _Member] = {}
    counts: dict[str, int] = {}
    for f in files:
        name = f.filename
        if name in refused:
            continue
        if name not in counts:
            out_name = name
            counts[name] = 0
        else:
            out_name = f"{name}_{counts[name]}"
            counts[name] += 1
        member = _Member(name, is_link=bool(f.is_symlink or f.is_junction))
        with contextlib.suppress(Exception):  # if refused here, py7zr refuses it too (an error)
            members[get_sanitized_output_path(out_name, anchor).as_posix()] = member
    if not refused:
        return members, None
    return members, sorted({f.filename for f in files} - refused)


def _check_trailing_data(
    ctx: FileContext, raw: BinaryIO, start: int, end: int, location: str, depth: int,
) -> None:
    """Bytes after the archive's end header belong to no member: a place to hide a file."""
    raw.seek(start + 12)
    fields = raw.read(16)
    if len(fields) != 16:
        return
    next_offset, next_size = struct.unpack("<QQ", fields)
    archive_end = start + _SIGNATURE_HEADER + next_offset + next_size
    if start < archive_end < end:
        where = join_location(location, "<data after the archive>")
        ctx.find(
            Severity.UNKNOWN, "archive", "<data after the archive>",
            f"{end - archive_end} bytes after the end of the 7z archive belong to no member",
            where,
        )
        scan_member_bytes(ctx, raw, archive_end, end, where, "<data after the archive>",
                          depth + 1)
