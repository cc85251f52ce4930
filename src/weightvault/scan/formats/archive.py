"""Zip and tar archives (PyTorch checkpoints, Keras v3, ``.npz`` included) and compressed streams.

Zip members are read the way PyTorch's reader (miniz) reads them, not the way ``zipfile`` does:
the central directory names the members, the local header is only skipped, and the "encrypted"
flag does not stop us reading plain data. Each disagreement between the two headers, each
traversal name and each bomb-like ratio is a finding, so container tricks that make other scanners
skip a member (or crash) are visible instead. Members are expanded when stored, deflated, bzip2- or
LZMA-compressed (methods 0, 8, 12, 14); any other method, and real encryption, is an error.
"""

from __future__ import annotations

import os
import re
import struct
from typing import TYPE_CHECKING, BinaryIO

from weightvault.scan._engine import FileContext, join_location
from weightvault.scan._io import ByteReader, DecompressingStream, LimitExceeded, Truncated
from weightvault.scan.policy import Severity

if TYPE_CHECKING:
    import zipfile

__all__ = [
    "COMPRESSION_MAGIC", "check_depth", "looks_like_zlib", "report_bomb", "scan_compressed",
    "scan_member_bytes", "scan_tar", "scan_zip", "unsafe_member_name",
]

COMPRESSION_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
)

# zip compression methods (``zipfile`` itself is imported only when its parser is needed)
ZIP_STORED, ZIP_DEFLATED, ZIP_BZIP2, ZIP_LZMA, ZIP_AES = 0, 8, 12, 14, 99
_ZIP_KINDS = {ZIP_DEFLATED: "deflate", ZIP_BZIP2: "bz2", ZIP_LZMA: "lzma1"}
#: Names of the methods APPNOTE 4.4.5 lists that are not expanded (for the error message).
_ZIP_METHOD_NAMES = {
    1: "shrink", 2: "reduce", 3: "reduce", 4: "reduce", 5: "reduce", 6: "implode",
    9: "deflate64", 10: "PKWARE DCL implode", 16: "IBM z/OS CMPSC", 18: "IBM TERSE",
    19: "IBM LZ77 z", 20: "zstandard (old id)", 93: "zstandard", 94: "MP3", 95: "xz",
    96: "JPEG", 97: "WavPack", 98: "PPMd", ZIP_AES: "AES encryption",
}
#: General-purpose flag bits: 0 encrypted, 6 strong encryption; 1 (LZMA) end-of-stream marker.
_FLAG_ENCRYPTED, _FLAG_STRONG_ENCRYPTION = 0x1, 0x40
#: LZMA1 dictionary sizes liblzma accepts (``LZMA_DICT_SIZE_MIN``; 1.5 GiB is its maximum).
_LZMA_DICT_MIN, _LZMA_DICT_MAX = 4096, 3 << 29
#: What ``zipfile`` raises on hostile archives (``BadZipFile`` is an ``Exception`` subclass:
#: it is added where ``zipfile`` is imported).
_ZIP_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, EOFError, NotImplementedError, RuntimeError, struct.error,
)
_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
_STORAGE_MEMBER = re.compile(r"(^|/)data/\d+$")
_TORCH_METADATA = frozenset(
    {"version", "byteorder", ".format_version", ".storage_alignment", "serialization_id"}
)
_TORCH_METADATA_VALUE = re.compile(rb"^[0-9A-Za-z_.]{0,63}\n?$")
_LOCAL_READ = 30 + 512
#: Local file header fields the scanner uses: signature, flags, name length, extra length.
_LOCAL_HEADER = struct.Struct("<4s2xH18xHH")
_DRIVE = re.compile(r"^[A-Za-z]:")


def looks_like_zlib(head: bytes) -> bool:
    """A zlib stream header (joblib's ``compress=`` default) : CMF 0x78 and a valid FCHECK."""
    return (
        len(head) >= 2 and head[0] == 0x78 and (head[0] * 256 + head[1]) % 31 == 0
        and not head[1] & 0x20  # no preset dictionary: excludes text such as "x " and "x?"
    )


def _pread(raw: BinaryIO, size: int, offset: int) -> bytes:
    """One positioned read: ``os.pread`` on real files (one system call, no buffer churn)."""
    try:
        fd = raw.fileno()
    except (AttributeError, OSError, ValueError):
        raw.seek(offset)
        return raw.read(size)
    return os.pread(fd, size, offset)


def unsafe_member_name(name: str) -> str | None:
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


def check_depth(ctx: FileContext, location: str, depth: int) -> bool:
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
    from weightvault.scan.formats import scan_reader

    reader = ByteReader(raw, start, end)
    fmt = scan_reader(ctx, reader, raw, location, name=name, depth=depth)
    ctx.formats.append(fmt)


def report_bomb(ctx: FileContext, location: str, message: str) -> None:
    """A member or archive that expands past the limits: a finding, and an error (not scanned)."""
    ctx.find(Severity.SUSPICIOUS, "archive", "<compression bomb>", message, location or ".")
    ctx.error(location, f"not scanned: {message}")


def _spool_and_scan(
    ctx: FileContext, stream: DecompressingStream, location: str, name: str, depth: int,
) -> None:
    """Copy a decompressing stream to a temporary file (bounded), then scan it seekably.

    Two bounds apply: the stream's own cap (a bomb: a finding and an error) and
    ``max_spool_bytes`` of temporary disk space per member (an error: not scanned).
    """
    import tempfile

    cap = ctx.limits.max_spool_bytes
    with tempfile.TemporaryFile(prefix="wv-scan-") as spool:
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
            ctx.error(location, f"not scanned: {exc}")
            return
        size = spool.tell()
        spool.flush()  # readers below may use os.pread on the descriptor
        scan_member_bytes(ctx, spool, 0, size, location, name, depth)


def scan_compressed(
    ctx: FileContext, r: ByteReader, kind: str, location: str, *, name: str, depth: int,
) -> str:
    """gzip / bz2 / xz / zlib stream (compressed joblib files, ``.tar.gz``): expand and scan."""
    if not check_depth(ctx, location, depth + 1):
        return kind
    start = r.tell()
    compressed = (r.end or start) - start
    limit = min(
        ctx.limits.max_decompressed_bytes,
        max(compressed, 1) * ctx.limits.max_compression_ratio + (64 << 20),
    )
    stream = DecompressingStream(r, kind, max_output=limit)
    inner_name = name[: -len(os.path.splitext(name)[1])] if os.path.splitext(name)[1] else name
    try:
        _spool_and_scan(ctx, stream, join_location(location, f"<{kind}>"), inner_name, depth + 1)
    except Truncated as exc:
        ctx.error(location, f"{kind} stream: {exc}")
    return f"{kind}"


class _Entry:
    """The central-directory fields the scanner needs (``zipfile.ZipInfo``'s names)."""

    __slots__ = (
        "compress_size", "compress_type", "file_size", "filename", "flag_bits", "header_offset",
        "orig_filename",
    )

    def __init__(self, name: str, flags: int, method: int, csize: int, size: int,
                 offset: int) -> None:
        self.orig_filename = name
        nul = name.find("\x00")
        self.filename = name[:nul] if nul >= 0 else name
        self.flag_bits = flags
        self.compress_type = method
        self.compress_size = csize
        self.file_size = size
        self.header_offset = offset

    def is_dir(self) -> bool:
        return self.filename.endswith("/")


#: Central directory header fields the scanner uses: signature, flags, method, compressed and
#: uncompressed sizes, name / extra / comment lengths, local header offset (46 bytes in all).
_CENTRAL = struct.Struct("<4s4xHH8xLLHHH8xL")


def _fast_central_directory(raw: BinaryIO, start: int, end: int) -> list[_Entry] | None:
    """Parse a plain zip's central directory in one read; ``None`` for anything unusual
    (archive comment, zip64, prepended data), which then goes through ``zipfile``."""
    size = end - start
    if size < 22:
        return None
    eocd = _pread(raw, 22, end - 22)
    if len(eocd) != 22 or eocd[:4] != b"PK\x05\x06":
        return None
    disk, cd_disk, _, entries, cd_size, cd_offset, comment = struct.unpack("<4H2LH", eocd[4:])
    if disk or cd_disk or comment or entries == 0xFFFF or 0xFFFFFFFF in (cd_size, cd_offset):
        return None
    if cd_offset + cd_size != size - 22:
        # PyTorch (miniz) always adds a zip64 end record + locator; accept it only when it
        # repeats the same numbers (a disagreement is exactly what parser-confusion tricks use).
        tail = _pread(raw, 76, end - 98)
        if len(tail) != 76 or tail[:4] != b"PK\x06\x06" or tail[56:60] != b"PK\x06\x07":
            return None
        z_entries, z_size, z_offset = struct.unpack("<3Q", tail[32:56])
        (z_record_at,) = struct.unpack("<Q", tail[64:72])
        if (z_entries, z_size, z_offset) != (entries, cd_size, cd_offset) or (
            z_record_at != size - 98 or cd_offset + cd_size != size - 98
        ):
            return None
    blob = _pread(raw, cd_size, start + cd_offset)
    if len(blob) != cd_size:
        return None
    out: list[_Entry] = []
    pos = 0
    for _ in range(entries):
        if pos + 46 > cd_size:
            return None
        (
            signature, flags, method, csize, usize, name_len, extra_len, comment_len, offset
        ) = _CENTRAL.unpack_from(blob, pos)
        if signature != b"PK\x01\x02":
            return None
        if 0xFFFFFFFF in (csize, usize, offset):
            return None
        raw_name = blob[pos + 46 : pos + 46 + name_len]
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        out.append(_Entry(name, flags, method, csize, usize, offset))
        pos += 46 + name_len + extra_len + comment_len
    return out if pos == cd_size else None


def _end_records_disagree(raw: BinaryIO, start: int, end: int) -> bool:
    """True when the classic and the zip64 end records give different numbers."""
    if end - start < 98:
        return False
    tail = _pread(raw, 98, end - 98)
    if tail[:4] != b"PK\x06\x06" or tail[56:60] != b"PK\x06\x07" or tail[76:80] != (
        b"PK\x05\x06"
    ):
        return False
    z_entries, z_size, z_offset = struct.unpack("<3Q", tail[32:56])
    _, _, _, entries, cd_size, cd_offset, _ = struct.unpack("<4H2LH", tail[80:98])
    plain = (entries, cd_size, cd_offset)
    zip64 = (z_entries, z_size, z_offset)
    return any(
        p not in (0xFFFF, 0xFFFFFFFF) and p != z for p, z in zip(plain, zip64, strict=True)
    )


def scan_zip(
    ctx: FileContext, raw: BinaryIO, start: int, end: int, location: str, *, name: str,
    depth: int,
) -> str:
    """Every member of a zip, by content; PyTorch storages only sniffed for an embedded pickle."""
    from weightvault.scan.formats import RegionFile

    if not check_depth(ctx, location, depth):
        return "zip"
    # A whole top-level file is opened directly: the Python-level region wrapper is slower.
    region = raw if (start == 0 and depth == 0) else RegionFile(raw, start, end)
    fast = _fast_central_directory(raw, start, end)
    archive: zipfile.ZipFile | None = None
    if fast is None:
        import zipfile

        if _end_records_disagree(raw, start, end):
            ctx.find(
                Severity.SUSPICIOUS, "archive", "<end of central directory>",
                "the classic and zip64 end-of-central-directory records disagree: "
                "zip readers may list different members", location or ".",
            )
        try:
            archive = zipfile.ZipFile(region)
        except (zipfile.BadZipFile, *_ZIP_ERRORS) as exc:  # type: ignore[misc]
            ctx.error(location, f"zip: unreadable central directory: {exc}")
            return "zip"
    try:
        infos: list[_Entry] | list[zipfile.ZipInfo] = (
            fast if fast is not None else archive.infolist()  # type: ignore[union-attr]
        )
        if len(infos) > ctx.limits.max_archive_members:
            ctx.error(
                location, f"zip has {len(infos)} members, over the limit of "
                f"{ctx.limits.max_archive_members}; not scanned",
            )
            return "zip"
        names = [i.filename for i in infos]
        is_torch = any(n.endswith("/data.pkl") or n == "data.pkl" for n in names)
        is_torchscript = is_torch and any(
            "/code/" in n or n.endswith("/constants.pkl") for n in names
        )
        is_keras = "config.json" in names and (
            "metadata.json" in names or "model.weights.h5" in names
        )
        is_npz = bool(names) and all(n.endswith(".npy") for n in names)
        fmt = (
            "torchscript" if is_torchscript else "pytorch-zip" if is_torch
            else "keras" if is_keras else "npz" if is_npz else "zip"
        )
        seen: set[str] = set()
        total_declared = 0
        for info in infos:
            filename = info.filename
            member_loc = join_location(location, filename)
            if filename in seen:
                ctx.find(
                    Severity.SUSPICIOUS, "archive", filename,
                    "duplicate member name: readers disagree on which copy they load",
                    member_loc,
                )
            seen.add(filename)
            problem = unsafe_member_name(filename)
            if problem:
                ctx.find(
                    Severity.DANGEROUS, "archive", filename,
                    f"path traversal in member name ({problem}): extraction writes outside "
                    "the target folder", member_loc,
                )
            if info.is_dir():
                continue
            total_declared += info.file_size
            _scan_zip_member(ctx, raw, start, end, info, member_loc, fmt, depth)
            if is_keras and info.filename == "config.json":
                import zipfile

                from weightvault.scan.formats.keras import scan_keras_config

                try:
                    if archive is None:
                        archive = zipfile.ZipFile(region)
                    keras_info = archive.getinfo(info.filename)
                except (zipfile.BadZipFile, KeyError, *_ZIP_ERRORS) as exc:  # type: ignore[misc]
                    ctx.error(member_loc, f"keras config unreadable: {exc}")
                else:
                    scan_keras_config(ctx, archive, keras_info, member_loc)
        if is_torchscript:
            code = sorted(n for n in names if "/code/" in n and n.endswith(".py"))
            if code:
                ctx.find(
                    Severity.SUSPICIOUS, "structure", "<torchscript code>",
                    f"TorchScript archive with {len(code)} code file(s) that torch.jit.load "
                    "compiles and runs", join_location(location, code[0]),
                )
    finally:
        if archive is not None:
            archive.close()
    return fmt


def _scan_zip_member(
    ctx: FileContext, raw: BinaryIO, start: int, end: int, info: zipfile.ZipInfo | _Entry,
    location: str, fmt: str, depth: int,
) -> None:
    # 1. The local header, read as miniz does: only its lengths matter for the data offset.
    header_at = start + info.header_offset
    # (zipfile's offsets can be negative on hostile archives: no local header there either)
    header = _pread(raw, _LOCAL_READ, header_at) if header_at >= start else b""
    if len(header) < 30:
        ctx.error(location, "zip member has no local header at its recorded offset")
        return
    signature, flags, name_len, extra_len = _LOCAL_HEADER.unpack_from(header)
    if signature != b"PK\x03\x04":
        ctx.error(location, "zip member has no local header at its recorded offset")
        return
    local_name = header[30 : 30 + name_len]
    if len(local_name) < name_len:
        raw.seek(header_at + 30)
        local_name = raw.read(name_len)
    central = info.orig_filename
    if local_name.decode("utf-8", "replace") != central and local_name != central.encode(
        "cp437", "replace"
    ):
        ctx.find(
            Severity.SUSPICIOUS, "archive", info.filename,
            f"local header names the member {local_name.decode('utf-8', 'replace')!r}, "
            "the central directory names it differently (scanners disagree on what it is)",
            location,
        )
    compression = info.compress_type
    if compression == ZIP_AES:
        ctx.error(location, "AES-encrypted member (zip method 99) cannot be scanned; decrypt the "
                  "archive and scan the contents")
        return
    encrypted = (info.flag_bits | flags) & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION)
    if encrypted:
        ctx.find(
            Severity.SUSPICIOUS, "archive", info.filename,
            "member flagged as encrypted; lenient readers ignore the flag and read plain "
            "data, so it was scanned as plain data", location,
        )
    data_start = header_at + 30 + name_len + extra_len
    data_end = data_start + info.compress_size
    if data_end > end:
        ctx.error(location, "zip member data runs past the end of the archive")
        return
    if not encrypted:
        _scan_zip_member_data(
            ctx, raw, info, header, header_at, data_start, data_end, location, fmt, depth,
        )
        return
    errors_before, formats_before = len(ctx.errors), len(ctx.formats)
    _scan_zip_member_data(
        ctx, raw, info, header, header_at, data_start, data_end, location, fmt, depth,
    )
    if (
        len(ctx.errors) > errors_before
        or all(f in ("data", "unknown", "empty") for f in ctx.formats[formats_before:])
    ):
        # Plain data under the flag was scanned above; ciphertext reads as no known format.
        ctx.error(location, "encrypted member cannot be scanned (read as plain data it is no "
                  "known format); decrypt it and scan the contents")


def _zip_lzma_filters(
    raw: BinaryIO, data_start: int, data_end: int, max_output: int,
) -> tuple[list[dict[str, int]], int]:
    """The raw LZMA1 filter chain of a method-14 member, and the length of its header.

    APPNOTE 5.8.8: 2 bytes LZMA SDK version, 2 bytes (little-endian) size of the properties, then
    the 5 LZMA1 properties: ``(pb * 5 + lp) * 9 + lc`` in one byte, the dictionary size in 4
    (little-endian). A malformed header raises :class:`Truncated`.
    """
    head = _pread(raw, min(9, max(data_end - data_start, 0)), data_start)
    if len(head) < 4:
        raise Truncated("LZMA header cut off")
    (props_size,) = struct.unpack("<H", head[2:4])
    if props_size != 5:
        raise Truncated(f"LZMA properties size is {props_size}, expected 5")
    if len(head) < 9:
        raise Truncated("LZMA properties cut off")
    lclppb = head[4]
    if lclppb >= 9 * 5 * 5:
        raise Truncated(f"invalid LZMA properties byte 0x{lclppb:02x}")
    lc, lp, pb = lclppb % 9, lclppb // 9 % 5, lclppb // 45
    if lc + lp > 4:
        raise Truncated(f"LZMA properties lc={lc} lp={lp} are not supported (lc + lp > 4)")
    (dict_size,) = struct.unpack("<I", head[5:9])
    # Output is capped at max_output, so no match can reach further back than that: a smaller
    # dictionary decodes the same bytes and keeps a hostile size from reserving gigabytes.
    dict_size = max(_LZMA_DICT_MIN, min(dict_size, max_output, _LZMA_DICT_MAX))
    import lzma

    return [{"id": lzma.FILTER_LZMA1, "dict_size": dict_size, "lc": lc, "lp": lp, "pb": pb}], 9


def _scan_zip_member_data(
    ctx: FileContext, raw: BinaryIO, info: zipfile.ZipInfo | _Entry, header: bytes,
    header_at: int, data_start: int, data_end: int, location: str, fmt: str, depth: int,
) -> None:
    compression = info.compress_type
    # 2. PyTorch storages are raw tensor bytes: only a pickle hidden there is of interest.
    if fmt in ("pytorch-zip", "torchscript") and _STORAGE_MEMBER.search(info.filename):
        if compression != ZIP_STORED:
            ctx.find(
                Severity.SUSPICIOUS, "archive", info.filename,
                "compressed tensor storage (PyTorch writes them stored)", location,
            )
        offset_in_header = data_start - header_at
        head = header[offset_in_header : offset_in_header + 2]
        if len(head) < 2 and info.compress_size >= 2:
            raw.seek(data_start)
            head = raw.read(2)
        stored = compression == ZIP_STORED
        if stored and len(head) == 2 and head[0] == 0x80 and head[1] <= 5:
            from weightvault.scan.formats.pickle import PickleError, PickleMachine

            machine = PickleMachine(ctx, location)
            note = ""
            try:
                run = machine.run_one(ByteReader(raw, data_start, data_end))
            except PickleError as exc:
                # Tensor bytes may start like a pickle by chance and fail at once. A stream
                # that imported well-formed names before failing is a payload with junk after
                # it (a loader stops at the payload's REDUCE): keep what it imported.
                run = exc.run  # type: ignore[attr-defined]
                if not run.imports or not all(
                    _DOTTED_NAME.fullmatch(f.subject) for f in run.findings if f.kind == "import"
                ):
                    return
                note = " (malformed after its imports)"
            if run.imports:
                ctx.findings.extend(run.findings)
                ctx.find(
                    Severity.SUSPICIOUS, "structure", "<pickle in storage>",
                    f"a tensor storage member holds a pickle{note}", location,
                )
        return

    # 3. PyTorch's small metadata members (version, byteorder, ...) hold a word or a number.
    if fmt in ("pytorch-zip", "torchscript") and compression == ZIP_STORED and (
        info.filename.rsplit("/", 1)[-1] in _TORCH_METADATA and info.compress_size <= 64
    ):
        offset_in_header = data_start - header_at
        text = header[offset_in_header : offset_in_header + info.compress_size]
        if len(text) == info.compress_size and _TORCH_METADATA_VALUE.match(text):
            return

    # 4. Everything else by content.
    if compression == ZIP_STORED:
        if info.file_size != info.compress_size:
            ctx.find(
                Severity.SUSPICIOUS, "archive", info.filename,
                "stored member whose sizes disagree (central directory vs data)", location,
            )
        scan_member_bytes(ctx, raw, data_start, data_end, location, info.filename, depth + 1)
        return
    kind = _ZIP_KINDS.get(compression)
    if kind is None:
        method = _ZIP_METHOD_NAMES.get(compression, "unknown")
        ctx.error(location, f"zip compression method {compression} ({method}) is not "
                  "supported; member not scanned")
        return
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > (1 << 20) and ratio > ctx.limits.max_compression_ratio:
        ctx.find(
            Severity.SUSPICIOUS, "archive", info.filename,
            f"compression ratio {ratio:.0f}:1 (zip bomb?); member not expanded", location,
        )
        ctx.error(location, "member not scanned: compression ratio over the limit")
        return
    limit = min(
        ctx.limits.max_decompressed_bytes,
        max(info.file_size, 1 << 20),
        info.compress_size * ctx.limits.max_compression_ratio + (1 << 20),
    )
    try:
        if kind == "lzma1":
            filters, skip = _zip_lzma_filters(raw, data_start, data_end, limit)
            stream = DecompressingStream(
                ByteReader(raw, data_start + skip, data_end), kind, max_output=limit,
                filters=filters, expected_output=info.file_size,
            )
        else:
            stream = DecompressingStream(
                ByteReader(raw, data_start, data_end), kind, max_output=limit,
            )
    except Truncated as exc:
        ctx.error(location, f"zip member not scanned: {exc}")
        return
    _spool_and_scan(ctx, stream, location, info.filename, depth + 1)


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
    names = {m.name for m in members}
    legacy_torch = {"sys_info", "pickle", "storages", "tensors"} <= names
    for member in members:
        member_loc = join_location(location, member.name)
        problem = unsafe_member_name(member.name)
        if problem:
            ctx.find(
                Severity.DANGEROUS, "archive", member.name,
                f"path traversal in member name ({problem})", member_loc,
            )
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
                Severity.SUSPICIOUS, "archive", member.name,
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
        scan_member_bytes(ctx, raw, data_start, data_end, member_loc, member.name, depth + 1)
    return "pytorch-legacy-tar" if legacy_torch else "tar"

