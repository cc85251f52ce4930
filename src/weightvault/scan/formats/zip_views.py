"""A zip archive as each loader reads it: PyTorch's reader (miniz) and Python's ``zipfile``.

``torch.load`` does not use ``zipfile``: it reads checkpoints with miniz 3.0.2
(``caffe2/serialize/inline_container.cc``), and the two readers locate the central directory
differently. miniz takes the last end-of-central-directory signature with at least 22 bytes after
it, follows the zip64 locator to the absolute offset it records, and reads the central directory
and every local header at their recorded absolute offsets. ``zipfile`` (Python 3.11 - 3.13, and
``numpy.load`` through it) reads the zip64 record that sits right before the locator, ignoring
the locator's offset, reads the central directory that ends where the end records begin, and
shifts every recorded offset by the difference ("data prepended before the archive"). An archive
built to exploit either difference shows one reader a benign set of members and the other a
payload. :func:`read_views` therefore computes both member lists and says whether they agree; the
caller refuses an archive on which they do not.

Both views are lists of :class:`ZipMember`: the raw name bytes, method, sizes and the absolute
offset of the member's local header. Members are located the same way by both readers once their
local header is found (30 bytes + the *local* name and extra lengths), so equal lists mean equal
member bytes.

Where the archive has none of the features on which the readers can differ (end record last with
no comment, no zip64 locator or one pointing at the record right before it, no prepended data,
entry count and central directory size consistent, no zip64 extra fields, well-formed extra
fields, no name ``zipfile`` cannot decode), the ``zipfile`` view is provably the miniz view and
``zipfile`` is not run: that keeps a 2 GB checkpoint's scan at one read of its central directory.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, NamedTuple

from weightvault.scan._io import pread

__all__ = ["ZipMember", "ZipReadError", "ZipViews", "read_miniz", "read_views"]

_EOCD = b"PK\x05\x06"
_LOCATOR = b"PK\x06\x07"
_ZIP64_RECORD = b"PK\x06\x06"
_CENTRAL = b"PK\x01\x02"
_EOCD_SIZE, _LOCATOR_SIZE, _ZIP64_SIZE, _CENTRAL_SIZE, _LOCAL_SIZE = 22, 20, 56, 46, 30
_U16_MAX, _U32_MAX = 0xFFFF, 0xFFFFFFFF
#: miniz searches back from the end in 4 KiB blocks that overlap by 3 bytes, and gives up after
#: the first block that starts 64 KiB + 22 bytes or more before the end.
_SEARCH_BLOCK = 4096
#: ``zipfile`` refuses entries that need a newer extractor (``MAX_EXTRACT_VERSION``).
_ZIPFILE_MAX_EXTRACT = 63
_FLAG_UTF8 = 0x800
#: miniz refuses archives whose local headers are masked (central directory encryption).
_FLAG_LOCAL_MASKED = 0x2000
_CENTRAL_FIELDS = struct.Struct("<4s2xHHH4x4xLLHHHH6xL")
"""signature, version needed, flags, method, compressed, uncompressed, name / extra / comment
lengths, disk number start, local header offset (46 bytes)."""


class ZipReadError(Exception):
    """The reader cannot open the archive (its own words, as close as the scanner knows them)."""


class ZipMember(NamedTuple):
    """One central-directory entry as a reader sees it."""

    raw_name: bytes
    flags: int
    method: int
    compress_size: int
    file_size: int
    header_offset: int
    """Absolute offset of the local header within the region the archive occupies."""
    name: str
    """The name decoded as ``zipfile`` decodes it (UTF-8 flag, else cp437)."""

    @classmethod
    def make(cls, raw_name: bytes, flags: int, method: int, compress_size: int, file_size: int,
             header_offset: int) -> ZipMember:
        name = raw_name.decode("utf-8", "replace") if flags & _FLAG_UTF8 else raw_name.decode(
            "cp437")
        return cls(raw_name, flags, method, compress_size, file_size, header_offset, name)

    def is_dir(self) -> bool:
        return self.raw_name.endswith(b"/")

    def key(self) -> tuple[bytes, int, int, int, int]:
        """What must be equal for two readers to deliver the same bytes under the same name."""
        return (self.raw_name, self.method, self.compress_size, self.file_size,
                self.header_offset)


class _Miniz(NamedTuple):
    members: list[ZipMember]
    differences: list[str]
    """The features of this archive on which ``zipfile`` may read it differently (none: it
    provably reads the same list)."""
    central_start: int
    central_end: int

    @property
    def zipfile_agrees(self) -> bool:
        return not self.differences


class ZipViews(NamedTuple):
    """Both readers' member lists (``None`` where that reader fails, with its error)."""

    torch: list[ZipMember] | None
    torch_error: str | None
    python: list[ZipMember] | None
    python_error: str | None
    central_start: int
    central_end: int
    differences: tuple[str, ...] = ()
    """Why the readers may differ (the features of the archive that make them)."""

    @property
    def agree(self) -> bool:
        if self.torch is None or self.python is None:
            return self.torch is None and self.python is None
        return [m.key() for m in self.torch] == [m.key() for m in self.python]

    def union(self) -> list[ZipMember]:
        """Every member either reader lists, torch's order first, each copy once."""
        out: list[ZipMember] = []
        seen: set[tuple[bytes, int, int, int, int]] = set()
        for members in (self.torch, self.python):
            for member in members or ():
                if member.key() not in seen:
                    seen.add(member.key())
                    out.append(member)
        return out


def _find_end_record(tail: bytes, tail_start: int, size: int) -> int:
    """miniz ``mz_zip_reader_locate_header_sig``: the last EOCD signature followed by >= 22
    bytes, within the blocks miniz searches; -1 when none."""
    lowest = max(size - _SEARCH_BLOCK, 0)
    while lowest > 0 and size - lowest < _U16_MAX + _EOCD_SIZE:
        lowest = max(lowest - (_SEARCH_BLOCK - 3), 0)
    at = tail.rfind(_EOCD, max(lowest - tail_start, 0), size - _EOCD_SIZE + 4 - tail_start)
    return at + tail_start if at >= 0 else -1


def _extra_fields_well_formed(extra: bytes) -> bool:
    """``zipfile``'s ``_decodeExtra`` raises on a field whose length runs past the block."""
    pos = 0
    while len(extra) - pos >= 4:
        (length,) = struct.unpack_from("<H", extra, pos + 2)
        if pos + 4 + length > len(extra):
            return False
        pos += 4 + length
    return True


def read_miniz(raw: BinaryIO, start: int, end: int) -> _Miniz:
    """The member list miniz 3.0.2 (``mz_zip_reader_read_central_dir``) builds, or
    :class:`ZipReadError` where miniz fails to open the archive."""
    size = end - start
    if size < _EOCD_SIZE:
        raise ZipReadError("not a zip archive (too small)")
    # Most archives end with their end record: the last block is searched first. A signature
    # found there is the last one in the whole search window too, so the result is the same.
    eocd_at = -1
    for tail_len in (min(size, _SEARCH_BLOCK), min(size, _U16_MAX + _EOCD_SIZE + _SEARCH_BLOCK)):
        tail_start = size - tail_len
        tail = pread(raw, tail_len, start + tail_start)
        if len(tail) != tail_len:
            raise ZipReadError("failed reading the end of the archive")
        eocd_at = _find_end_record(tail, tail_start, size)
        if eocd_at >= 0 or tail_start == 0:
            break
    if eocd_at < 0:
        raise ZipReadError("failed finding the central directory")
    eocd = tail[eocd_at - tail_start : eocd_at - tail_start + _EOCD_SIZE]
    (this_disk, cd_disk, entries_here, total, cd_size, cd_offset,
     comment_len) = struct.unpack_from("<4H2LH", eocd, 4)
    # zipfile takes the same record only when it is the last 22 bytes with no comment.
    differences: list[str] = []
    if eocd_at != size - _EOCD_SIZE or comment_len:
        differences.append("an archive comment or data after the end record")

    zip64 = False
    locator = b""
    record = b""
    if _LOCATOR_SIZE <= eocd_at < _LOCATOR_SIZE + _ZIP64_SIZE and pread(
        raw, 4, start + eocd_at - _LOCATOR_SIZE
    ) == _LOCATOR:
        differences.append("a zip64 locator too close to the start")
    if eocd_at >= _LOCATOR_SIZE + _ZIP64_SIZE:
        locator = pread(raw, _LOCATOR_SIZE, start + eocd_at - _LOCATOR_SIZE)
        if locator[:4] == _LOCATOR:
            (record_at,) = struct.unpack_from("<Q", locator, 8)
            if record_at > size - _ZIP64_SIZE:
                raise ZipReadError("not a zip archive (zip64 locator points past the end)")
            record = pread(raw, _ZIP64_SIZE, start + record_at)
            zip64 = record[:4] == _ZIP64_RECORD
            # zipfile reads the record right before the locator, whatever the locator says.
            before = pread(raw, 4, start + eocd_at - _LOCATOR_SIZE - _ZIP64_SIZE)
            (disk_with_record,) = struct.unpack_from("<L", locator, 4)
            (disks,) = struct.unpack_from("<L", locator, 16)
            if (
                record_at != eocd_at - _LOCATOR_SIZE - _ZIP64_SIZE or not zip64
                or before != _ZIP64_RECORD or disk_with_record != 0 or disks != 1
            ):
                differences.append("a zip64 locator that points elsewhere than the zip64 "
                                   "record before it")
    if zip64:
        (disks,) = struct.unpack_from("<L", locator, 16)
        (record_size, this_disk64, cd_disk64, entries_here64, total64, cd_size64,
         cd_offset64) = struct.unpack_from("<Q4x2L4Q", record, 4)
        if record_size < _ZIP64_SIZE - 12:
            raise ZipReadError("invalid zip64 end record")
        if disks != 1:
            raise ZipReadError("multi-disk archives are not supported")
        if total64 > _U32_MAX or entries_here64 > _U32_MAX:
            raise ZipReadError("too many files")
        if cd_size64 > _U32_MAX:
            raise ZipReadError("unsupported central directory size")
        total, entries_here, cd_size, cd_offset = total64, entries_here64, cd_size64, cd_offset64
        this_disk, cd_disk = this_disk64, cd_disk64
    if total != entries_here:
        raise ZipReadError("multi-disk archives are not supported")
    if (this_disk | cd_disk) != 0 and (this_disk != 1 or cd_disk != 1):
        raise ZipReadError("multi-disk archives are not supported")
    if cd_size < total * _CENTRAL_SIZE or cd_offset + cd_size > size:
        raise ZipReadError("invalid central directory (sizes)")
    # zipfile reads the directory that ends where the end records begin ("concat" is zero
    # only when the recorded offset says the same).
    records_at = eocd_at - (_LOCATOR_SIZE + _ZIP64_SIZE if zip64 else 0)
    if cd_offset + cd_size != records_at:
        differences.append("data before the archive, or a central directory away from its "
                           "recorded offset")

    members: list[ZipMember] = []
    blob = pread(raw, cd_size, start + cd_offset) if total else b""
    if len(blob) != (cd_size if total else 0):
        raise ZipReadError("failed reading the central directory")
    pos = 0
    for _ in range(total):
        remaining = cd_size - pos
        if remaining < _CENTRAL_SIZE or blob[pos : pos + 4] != _CENTRAL:
            raise ZipReadError("invalid central directory entry")
        (_, version_needed, flags, method, csize, usize, name_len, extra_len, comment_len,
         disk_start, offset) = _CENTRAL_FIELDS.unpack_from(blob, pos)
        name_at = pos + _CENTRAL_SIZE
        name_end = name_at + name_len
        extra = blob[name_end : name_end + extra_len] if extra_len else b""
        if extra_len and max(csize, usize, offset) == _U32_MAX:
            if "zip64 extra fields" not in differences:
                differences.append("zip64 extra fields")
            csize, usize, offset = _zip64_extra(extra, csize, usize, offset)
        if csize != _U32_MAX and usize != _U32_MAX and (
            (method == 0 and usize != csize) or (usize and not csize)
        ):
            raise ZipReadError("invalid central directory entry (sizes)")
        if disk_start == _U16_MAX or (disk_start != this_disk and disk_start != 1):
            raise ZipReadError("multi-disk archives are not supported")
        if csize != _U32_MAX and offset + _LOCAL_SIZE + csize > size:
            raise ZipReadError("invalid central directory entry (offset)")
        if flags & _FLAG_LOCAL_MASKED:
            raise ZipReadError("unsupported encryption")
        header_size = _CENTRAL_SIZE + name_len + extra_len + comment_len
        if header_size > remaining:
            raise ZipReadError("invalid central directory entry (lengths)")
        raw_name = blob[name_at:name_end]
        if version_needed > _ZIPFILE_MAX_EXTRACT or (
            extra_len and not _extra_fields_well_formed(extra)
        ):
            differences.append(f"entry {len(members)}: a version or extra field zipfile refuses")
        try:
            name = raw_name.decode("ascii")  # the same in UTF-8 and cp437
        except UnicodeDecodeError:
            if flags & _FLAG_UTF8:
                try:
                    name = raw_name.decode("utf-8")
                except UnicodeDecodeError:
                    name = raw_name.decode("utf-8", "replace")
                    differences.append(f"entry {len(members)}: a name that is not UTF-8")
            else:
                name = raw_name.decode("cp437")
        members.append(ZipMember(raw_name, flags, method, csize, usize, offset, name))
        pos += header_size
    if pos != cd_size:  # zipfile reads entries until cd_size bytes are used up
        differences.append("an entry count that does not match the central directory's size")
    return _Miniz(members, differences[:8], cd_offset, cd_offset + cd_size)


def _zip64_extra(extra: bytes, csize: int, usize: int, offset: int) -> tuple[int, int, int]:
    """miniz's reading of the zip64 extended information field: the first field with id 1,
    its values read from there to the end of the extra block (not bounded by the field)."""
    pos = 0
    remaining = len(extra)
    while remaining:
        if remaining < 4:
            raise ZipReadError("invalid zip64 extra field")
        field_id, field_len = struct.unpack_from("<HH", extra, pos)
        if field_len + 4 > remaining:
            raise ZipReadError("invalid zip64 extra field")
        if field_id == 1:
            break
        pos += 4 + field_len
        remaining -= 4 + field_len
    if remaining >= 4:
        remaining -= 4
        pos += 4
        if usize == _U32_MAX and remaining >= 8:
            (usize,) = struct.unpack_from("<Q", extra, pos)
            pos, remaining = pos + 8, remaining - 8
        if csize == _U32_MAX and remaining >= 8:
            (csize,) = struct.unpack_from("<Q", extra, pos)
            pos, remaining = pos + 8, remaining - 8
        if offset == _U32_MAX and remaining >= 8:
            (offset,) = struct.unpack_from("<Q", extra, pos)
    return csize, usize, offset


def _read_zipfile(region: BinaryIO) -> list[ZipMember]:
    """The member list of the running Python's ``zipfile`` (what ``numpy.load`` uses)."""
    import zipfile

    try:
        with zipfile.ZipFile(region) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError,
            RuntimeError, struct.error, UnicodeDecodeError, OverflowError) as exc:
        raise ZipReadError(str(exc) or type(exc).__name__) from exc
    out = []
    for info in infos:
        encoding = "utf-8" if info.flag_bits & _FLAG_UTF8 else "cp437"
        out.append(ZipMember.make(
            info.orig_filename.encode(encoding, "surrogateescape"), info.flag_bits,
            info.compress_type, info.compress_size, info.file_size, info.header_offset,
        ))
    return out


def read_views(raw: BinaryIO, start: int, end: int, region: BinaryIO) -> ZipViews:
    """Both readers' member lists; ``region`` is a seekable file object over ``[start, end)``
    (``zipfile`` is given it only when the archive is not plain enough to skip it)."""
    try:
        miniz = read_miniz(raw, start, end)
    except ZipReadError as exc:
        torch_members: list[ZipMember] | None = None
        torch_error: str | None = str(exc)
        differences: tuple[str, ...] = ()
        central = (0, 0)
    else:
        torch_members, torch_error = miniz.members, None
        differences = tuple(miniz.differences)
        central = (miniz.central_start, miniz.central_end)
        if not differences:
            return ZipViews(torch_members, None, torch_members, None, *central)
    try:
        python_members: list[ZipMember] | None = _read_zipfile(region)
        python_error = None
    except ZipReadError as exc:
        python_members, python_error = None, str(exc)
    return ZipViews(torch_members, torch_error, python_members, python_error, *central,
                    differences)
