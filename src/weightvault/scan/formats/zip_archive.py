"""Zip archives (PyTorch checkpoints, TorchScript, Keras v3, ``.npz`` included), member by member.

A zip is read as each of its loaders reads it (:mod:`weightvault.scan.formats.zip_views`):
PyTorch's reader (miniz) and Python's ``zipfile`` (``numpy.load``, Keras). When the two list
different members, or one cannot open what the other can, the archive is refused and every member
either lists is scanned; so is a file another format's loader reads from its start while
``zipfile`` finds a zip at its end (a polyglot). Members are found through the central directory,
their local header only gives the data offset (as both readers do), and the "encrypted" flag does
not stop us reading plain data. Duplicate names, names that differ only in case where PyTorch
looks records up case-insensitively, local names that differ from central ones, overlapping
member data, traversal names and bomb-like ratios are findings. Members are expanded when stored,
deflated, bzip2- or LZMA-compressed (methods 0, 8, 12, 14); any other method, and real
encryption, is an error.
"""

from __future__ import annotations

import re
import struct
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from weightvault.scan._engine import FileContext, join_location
from weightvault.scan._io import ByteReader, DecompressingStream, Truncated, pread
from weightvault.scan.formats import zip_views
from weightvault.scan.formats.members import (
    check_depth,
    check_member_name,
    scan_member_bytes,
    spool_and_scan,
)
from weightvault.scan.formats.zip_views import ZipMember
from weightvault.scan.policy import Severity

if TYPE_CHECKING:
    import zipfile

__all__ = ["DISAGREE", "TorchLayout", "is_storage_name", "scan_trailing_zip", "scan_zip"]

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
#: The folders of raw tensor storages (``data/0``); TorchScript keeps the tensors of constants
#: and traced inputs in storages of their own.
_STORAGE_FOLDERS = ("data",)
_JIT_STORAGE_FOLDERS = ("data", "constants", "traced_inputs")
_TORCH_METADATA = frozenset(
    {"version", "byteorder", ".format_version", ".storage_alignment", "serialization_id"}
)
_TORCH_METADATA_VALUE = re.compile(rb"^[0-9A-Za-z_.]{0,63}\n?$")
_LOCAL_READ = 30 + 512
#: Local file header fields the scanner uses: signature, flags, name length, extra length.
_LOCAL_HEADER = struct.Struct("<4s2xH18xHH")


def scan_trailing_zip(
    ctx: FileContext, raw: BinaryIO, start: int, end: int, location: str, *, name: str,
    depth: int, fmt: str,
) -> None:
    """A file that a loader reads from its start (a pickle, an array, tensors) and ``zipfile``
    reads as an archive (it finds a zip from the end): a polyglot. Loaders disagree about what
    the file is, so it is refused, and the zip's members are scanned too."""
    from weightvault.scan.formats import RegionFile

    size = end - start
    if size < 22:
        return
    window = min(size, (1 << 16) + 22)
    if b"PK\x05\x06" not in pread(raw, window, end - window):
        return
    views = zip_views.read_views(raw, start, end, RegionFile(raw, start, end))  # type: ignore[arg-type]
    members = views.python or views.torch
    if not members:
        return
    ctx.find(
        Severity.DANGEROUS, "archive", DISAGREE,
        f"the file is {fmt} to a loader that reads it from the start and a zip archive of "
        f"{len(members)} member(s) to zipfile, which finds the archive from the end: loaders "
        "disagree about what the file is", location or ".",
    )
    scan_zip(ctx, raw, start, end, location, name=name, depth=depth)


#: Findings of a zip on which two readers disagree carry this subject.
DISAGREE = "<zip readers disagree>"


class TorchLayout(NamedTuple):
    """How ``torch.load`` / ``torch.jit.load`` see a zip (``PyTorchStreamReader``)."""

    prefix: bytes
    """``archive/``: the first member's folder; every member must be under it."""
    records: dict[bytes, ZipMember]
    """Record name (prefix removed, as ``get_all_records`` returns it) -> member."""
    checkpoint: bool
    """``data.pkl`` is found (miniz matches names case-insensitively)."""
    torchscript: bool
    """``constants.pkl`` (exact name) is a record: ``torch.load`` hands the file to
    ``torch.jit.load``, and no Python unpickler ever reads its pickles."""
    jit_loadable: bool
    """``constants.pkl`` is found case-insensitively: ``torch.jit.load`` compiles its code."""
    case_clash: bool
    """Two record names differ only in case (which one miniz finds is not defined)."""


def is_storage_name(name: str, folders: tuple[str, ...]) -> bool:
    """``FOLDER/<decimal digits>`` at the end of ``name`` (``(^|/)FOLDER/\\d+$`` as
    ``re.search`` reads it: ``$`` also matches before one final newline), without a regex: this
    runs for every member of every checkpoint."""
    if name.endswith("\n"):
        name = name[:-1]
    head, slash, last = name.rpartition("/")
    return bool(slash) and last.isdecimal() and head.rpartition("/")[2] in folders


def _torch_layout(members: list[ZipMember]) -> TorchLayout | None:
    """The records PyTorch's reader exposes, or ``None`` when it refuses the layout (no folder,
    or a member outside the first member's folder)."""
    if not members:
        return None
    first = members[0].raw_name
    slash = first.find(b"/")
    if slash < 0:
        return None
    prefix = first[: slash + 1]
    records: dict[bytes, ZipMember] = {}
    for member in members:
        if not member.raw_name.startswith(prefix):
            return None
        records.setdefault(member.raw_name[len(prefix):], member)
    lowered = {name.lower() for name in records}
    return TorchLayout(
        prefix, records, b"data.pkl" in lowered, b"constants.pkl" in records,
        b"constants.pkl" in lowered, len(lowered) != len(records),
    )


def _describe_views(views: zip_views.ZipViews) -> str:
    torch_list = views.torch or []
    python_list = views.python or []
    torch_names = {m.raw_name for m in torch_list}
    python_names = {m.raw_name for m in python_list}
    torch_keys = {m.key() for m in torch_list}
    python_keys = {m.key() for m in python_list}
    changed = sorted({m.raw_name for m in torch_list if m.key() not in python_keys
                      and m.raw_name in python_names}
                     | {m.raw_name for m in python_list if m.key() not in torch_keys
                        and m.raw_name in torch_names})

    def names(items: list[bytes]) -> str:
        items = sorted(items, key=lambda n: (not n.endswith(b".pkl"), n))  # pickles first
        shown = ", ".join(repr(n.decode("utf-8", "replace")) for n in items[:3])
        return shown + (f" and {len(items) - 3} more" if len(items) > 3 else "")

    parts = []
    if changed:
        parts.append(f"{names(changed)} read from different bytes")
    if torch_names - python_names:
        parts.append(f"only torch.load sees {names(sorted(torch_names - python_names))}")
    if python_names - torch_names:
        parts.append(f"only zipfile / numpy.load see {names(sorted(python_names - torch_names))}")
    if not parts:
        parts.append("they list the same members in a different order")
    cause = "; ".join(views.differences[:2]) or "the archive's end records"
    return f"torch.load and zipfile read different members ({cause}): " + "; ".join(parts)


def scan_zip(
    ctx: FileContext, raw: BinaryIO, start: int, end: int, location: str, *, name: str,
    depth: int,
) -> str:
    """Every member of a zip, by content, as both PyTorch's reader and ``zipfile`` list them.

    When the two readers disagree on the member list the archive is refused (a dangerous
    finding) and every member either of them lists is scanned; when one of them cannot open it
    at all, that is an error and the other reader's members are scanned. PyTorch storages are
    only sniffed for an embedded pickle.
    """
    from weightvault.scan.formats import RegionFile

    if not check_depth(ctx, location, depth):
        return "zip"
    # A whole top-level file is opened directly: the Python-level region wrapper is slower.
    region: BinaryIO = raw if (start == 0 and depth == 0) else RegionFile(raw, start, end)  # type: ignore[assignment]
    views = zip_views.read_views(raw, start, end, region)
    if views.torch is None and views.python is None:
        ctx.error(location, f"zip: unreadable central directory: {views.python_error}")
        return "zip"
    if views.agree:
        members = views.torch or []
    else:
        members = views.union()
        if views.torch is not None and views.python is not None:
            ctx.find(Severity.DANGEROUS, "archive", DISAGREE, _describe_views(views),
                     location or ".")
        elif views.torch is None:
            ctx.error(location, f"zip: torch.load's reader (miniz) cannot open it "
                      f"({views.torch_error}) while zipfile reads {len(members)} member(s); "
                      "the readers disagree")
        else:
            ctx.error(location, f"zip: zipfile cannot open it ({views.python_error}) while "
                      f"torch.load's reader (miniz) reads {len(members)} member(s); the "
                      "readers disagree")
    if len(members) > ctx.limits.max_archive_members:
        ctx.error(
            location, f"zip has {len(members)} members, over the limit of "
            f"{ctx.limits.max_archive_members}; not scanned",
        )
        return "zip"
    names = [m.name for m in members]
    layout = _torch_layout(members)
    name_set = set(names)
    is_keras = "config.json" in name_set and (
        "metadata.json" in name_set or "model.weights.h5" in name_set
    )
    is_npz = bool(names) and all(n.endswith(".npy") for n in names)
    if layout is not None and layout.torchscript:
        fmt = "torchscript"
    elif layout is not None and layout.checkpoint:
        fmt = "pytorch-zip"
    else:
        fmt = "keras" if is_keras else "npz" if is_npz else "zip"
    if layout is not None and layout.case_clash and (layout.checkpoint or layout.jit_loadable):
        _check_case_duplicates(ctx, layout, location)

    archive: zipfile.ZipFile | None = None
    spans: list[tuple[int, int, str]] = []
    per_member: list[tuple[bytes, int, int]] = []
    duplicates: set[bytes] = set()
    for view in (views.torch, views.python) if views.torch is not views.python else (members,):
        listed = {m.raw_name for m in view or ()}
        if len(listed) != len(view or ()):
            counted: set[bytes] = set()
            for member in view or ():
                if member.raw_name in counted:
                    duplicates.add(member.raw_name)
                counted.add(member.raw_name)
    try:
        seen: set[bytes] = set()
        for member in members:
            filename = member.name
            member_loc = join_location(location, filename)
            if member.raw_name in duplicates and member.raw_name in seen:
                ctx.find(
                    Severity.DANGEROUS, "archive", filename,
                    "duplicate member name: readers disagree on which copy they load "
                    "(zipfile the last, PyTorch's reader whichever its search finds)",
                    member_loc,
                )
            seen.add(member.raw_name)
            check_member_name(ctx, filename, member_loc)
            if member.is_dir() and member.compress_size == 0:
                continue
            before = len(ctx.findings)
            span = _scan_zip_member(ctx, raw, start, end, member, member_loc, fmt, depth)
            per_member.append((member.raw_name, before, len(ctx.findings)))
            if span is not None:
                spans.append((span[0], span[1], filename))
            if is_keras and filename == "config.json":
                archive = _scan_keras_member(ctx, region, archive, filename, member_loc)
        _check_overlaps(ctx, spans, views, start, location)
        if layout is not None and layout.jit_loadable:
            from weightvault.scan.formats.torchscript import judge_torchscript

            judge_torchscript(ctx, raw, start, layout, location, per_member)
    finally:
        if archive is not None:
            archive.close()
    return fmt


def _scan_keras_member(
    ctx: FileContext, region: BinaryIO, archive: zipfile.ZipFile | None, filename: str,
    member_loc: str,
) -> zipfile.ZipFile | None:
    """Keras reads its config with ``zipfile``: so does this check."""
    import zipfile

    from weightvault.scan.formats.keras import scan_keras_config

    try:
        if archive is None:
            archive = zipfile.ZipFile(region)
        keras_info = archive.getinfo(filename)
    except (zipfile.BadZipFile, KeyError, *_ZIP_ERRORS) as exc:  # type: ignore[misc]
        ctx.error(member_loc, f"keras config unreadable: {exc}")
    else:
        scan_keras_config(ctx, archive, keras_info, member_loc)
    return archive


def _check_case_duplicates(ctx: FileContext, layout: TorchLayout, location: str) -> None:
    by_lower: dict[bytes, list[bytes]] = {}
    for record in layout.records:
        by_lower.setdefault(record.lower(), []).append(record)
    clashes = [names for names in by_lower.values() if len(names) > 1]
    for names in clashes[:3]:
        shown = " and ".join(repr((layout.prefix + n).decode("utf-8", "replace"))
                             for n in names[:2])
        ctx.find(
            Severity.DANGEROUS, "archive", DISAGREE,
            f"{shown} differ only in case: PyTorch's reader matches record names "
            "case-insensitively and may load either, zipfile keeps them apart",
            location or ".",
        )


def _check_overlaps(
    ctx: FileContext, spans: list[tuple[int, int, str]], views: zip_views.ZipViews, start: int,
    location: str,
) -> None:
    """Member data that overlaps other members or the central directory: no writer does that;
    it is how one stored byte range is read under two names (and how overlap bombs work)."""
    if views.central_end > views.central_start:
        spans = [*spans, (start + views.central_start, start + views.central_end,
                          "<central directory>")]
    spans.sort()
    reach, reach_name = -1, ""
    for begin, finish, member_name in spans:
        if begin < reach:
            ctx.find(
                Severity.DANGEROUS, "archive", DISAGREE,
                f"member {member_name!r} overlaps {reach_name!r}: the same bytes are read "
                "under two names", join_location(location, member_name),
            )
            return
        if finish > reach:
            reach, reach_name = finish, member_name


def _scan_zip_member(
    ctx: FileContext, raw: BinaryIO, start: int, end: int, info: ZipMember,
    location: str, fmt: str, depth: int,
) -> tuple[int, int] | None:
    """Scan one member; returns the byte range its local header and data occupy."""
    # 1. The local header, read as both readers do: its lengths give the data offset.
    header_at = start + info.header_offset
    header = pread(raw, _LOCAL_READ, header_at) if header_at >= start else b""
    if len(header) < 30:
        ctx.error(location, "zip member has no local header at its recorded offset")
        return None
    signature, flags, name_len, extra_len = _LOCAL_HEADER.unpack_from(header)
    if signature != b"PK\x03\x04":
        ctx.error(location, "zip member has no local header at its recorded offset")
        return None
    local_name = header[30 : 30 + name_len]
    if len(local_name) < name_len:
        local_name = pread(raw, name_len, header_at + 30)
    if local_name != info.raw_name:
        ctx.find(
            Severity.DANGEROUS, "archive", info.name,
            f"local header names the member {local_name.decode('utf-8', 'replace')!r}, the "
            "central directory names it differently: torch.load reads it, zipfile refuses it "
            "(readers disagree)", location,
        )
    compression = info.method
    data_start = header_at + 30 + name_len + extra_len
    data_end = data_start + info.compress_size
    if compression == ZIP_AES:
        ctx.error(location, "AES-encrypted member (zip method 99) cannot be scanned; decrypt the "
                  "archive and scan the contents")
        return header_at, data_end
    encrypted = (info.flags | flags) & (_FLAG_ENCRYPTED | _FLAG_STRONG_ENCRYPTION)
    if encrypted:
        ctx.find(
            Severity.UNKNOWN, "archive", info.name,
            "member flagged as encrypted; lenient readers ignore the flag and read plain "
            "data, so it was scanned as plain data", location,
        )
    if data_end > end:
        ctx.error(location, "zip member data runs past the end of the archive")
        return None
    if not encrypted:
        _scan_zip_member_data(
            ctx, raw, info, header, header_at, data_start, data_end, location, fmt, depth,
        )
        return header_at, data_end
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
    return header_at, data_end


def _zip_lzma_filters(
    raw: BinaryIO, data_start: int, data_end: int, max_output: int,
) -> tuple[list[dict[str, int]], int]:
    """The raw LZMA1 filter chain of a method-14 member, and the length of its header.

    APPNOTE 5.8.8: 2 bytes LZMA SDK version, 2 bytes (little-endian) size of the properties, then
    the 5 LZMA1 properties: ``(pb * 5 + lp) * 9 + lc`` in one byte, the dictionary size in 4
    (little-endian). A malformed header raises :class:`Truncated`.
    """
    head = pread(raw, min(9, max(data_end - data_start, 0)), data_start)
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
    ctx: FileContext, raw: BinaryIO, info: ZipMember, header: bytes,
    header_at: int, data_start: int, data_end: int, location: str, fmt: str, depth: int,
) -> None:
    compression = info.method
    # 2. PyTorch storages are raw tensor bytes: only a pickle hidden there is of interest.
    if (fmt == "pytorch-zip" and is_storage_name(info.name, _STORAGE_FOLDERS)) or (
        fmt == "torchscript" and is_storage_name(info.name, _JIT_STORAGE_FOLDERS)
    ):
        if compression != ZIP_STORED:
            ctx.find(
                Severity.UNKNOWN, "archive", info.name,
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
                    Severity.UNKNOWN, "structure", "<pickle in storage>",
                    f"a tensor storage member holds a pickle{note}", location,
                )
        return

    # 3. PyTorch's small metadata members (version, byteorder, ...) hold a word or a number.
    if fmt in ("pytorch-zip", "torchscript") and compression == ZIP_STORED and (
        info.name.rsplit("/", 1)[-1] in _TORCH_METADATA and info.compress_size <= 64
    ):
        offset_in_header = data_start - header_at
        text = header[offset_in_header : offset_in_header + info.compress_size]
        if len(text) == info.compress_size and _TORCH_METADATA_VALUE.match(text):
            return

    # 4. Everything else by content.
    if compression == ZIP_STORED:
        if info.file_size != info.compress_size:
            ctx.find(
                Severity.UNKNOWN, "archive", info.name,
                "stored member whose sizes disagree (central directory vs data)", location,
            )
        scan_member_bytes(ctx, raw, data_start, data_end, location, info.name, depth + 1)
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
            Severity.UNKNOWN, "archive", info.name,
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
    spool_and_scan(ctx, stream, location, info.name, depth + 1)
