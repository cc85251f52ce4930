"""Tar archives (the oldest PyTorch checkpoints among them), recognized as ``tarfile`` accepts them.

Every regular member is scanned by content; links and special files that escape the archive are
findings. A file ``tarfile`` cannot read is also read the way ``torch.load`` falls back to: as a
pickle from its first byte.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from weightvault.scan._engine import FileContext, join_location
from weightvault.scan._io import ByteReader
from weightvault.scan.formats.members import check_depth, check_member_name, scan_member_bytes
from weightvault.scan.policy import Severity

__all__ = ["looks_like_tar", "scan_tar"]


def looks_like_tar(head: bytes) -> bool:
    """A tar header as ``tarfile.open(mode="r:")`` accepts it (what ``torch.load`` tries first on
    files that are not zips): a non-empty 512-byte block whose checksum field matches, with or
    without the "ustar" magic (old v7 archives have none)."""
    if len(head) < 512:
        return False
    block = head[:512]
    if not block.strip(b"\x00"):
        return False
    field = block[148:156]
    if field[:1] in (b"\x80", b"\xff"):  # base-256 encoding
        value = int.from_bytes(field[1:], "big")
        if field[:1] == b"\xff":
            value -= 256 ** 7
    else:
        text = field.split(b"\x00", 1)[0].strip()
        try:
            value = int(text or b"0", 8)
        except ValueError:
            return False
    unsigned = 256 + sum(block[:148]) + sum(block[156:])
    signed = 256 + sum(b - 256 if b > 127 else b for b in block[:148] + block[156:])
    return value in (unsigned, signed)



def _scan_after_tar_failure(
    ctx: FileContext, raw: BinaryIO, start: int, end: int, location: str,
) -> None:
    """``torch.load`` tries a tar first and, when ``tarfile`` raises, unpickles the same file
    from its first byte: a tar header's name field can hold a pickle. Scan it as that pickle."""
    from weightvault.scan.formats.pickle import looks_like_pickle_start, scan_pickle_file

    reader = ByteReader(raw, start, end)
    if looks_like_pickle_start(reader.peek(2)):
        scan_pickle_file(reader, ctx, location, claimed=False)


def scan_tar(
    ctx: FileContext, raw: BinaryIO, start: int, end: int, location: str, *, depth: int,
) -> str:
    """Every regular member of a tar; links and special files that escape are findings."""
    import tarfile

    from weightvault.scan.formats import RegionFile

    if not check_depth(ctx, location, depth):
        return "tar"
    region = RegionFile(raw, start, end)
    try:
        archive = tarfile.open(fileobj=region, mode="r:")
    except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
        ctx.error(location, f"tar: unreadable: {exc}")
        _scan_after_tar_failure(ctx, raw, start, end, location)
        return "tar"
    count = 0
    members: list[tarfile.TarInfo] = []
    with archive:
        try:
            for member in archive:
                count += 1
                if count > ctx.limits.max_archive_members:
                    ctx.error(location, "tar has too many members; stopped")
                    break
                members.append(member)
        except (tarfile.TarError, OSError, ValueError, EOFError) as exc:
            ctx.error(location, f"tar: malformed after {count} members: {exc}")
            _scan_after_tar_failure(ctx, raw, start, end, location)
    # torch.load finds members with tarfile's getmember: exact names, the last copy wins.
    names = {m.name for m in members}
    legacy_torch = {"pickle", "storages", "tensors"} <= names
    for member in members:
        member_loc = join_location(location, member.name)
        check_member_name(ctx, member.name, member_loc)
        if member.issym() or member.islnk():
            target = member.linkname
            resolved = os.path.normpath(os.path.join(os.path.dirname(member.name), target))
            if target.startswith("/") or resolved.startswith(".."):
                ctx.find(
                    Severity.DANGEROUS, "archive", member.name,
                    f"link to {target!r} points outside the archive", member_loc,
                )
            continue
        if member.isdev() or member.isfifo():
            ctx.find(
                Severity.UNKNOWN, "archive", member.name,
                "device or FIFO member", member_loc,
            )
            continue
        if not member.isfile():
            continue
        data_start = start + member.offset_data
        data_end = data_start + member.size
        if data_end > end:
            ctx.error(member_loc, "tar member data runs past the end of the archive")
            continue
        if legacy_torch and member.name in ("storages", "tensors"):
            from weightvault.scan.formats.torch_legacy import scan_legacy_tar_member

            scan_legacy_tar_member(ctx, ByteReader(raw, data_start, data_end), member_loc,
                                   member.name)
            continue
        claimed = legacy_torch and member.name == "pickle"
        scan_member_bytes(ctx, raw, data_start, data_end, member_loc,
                          "pickle.pkl" if claimed else member.name, depth + 1)
    return "pytorch-legacy-tar" if legacy_torch else "tar"

