"""Per-row-group digests of dataset shards, so a reader can verify only what it reads.

A dataset signed as a whole (OMS) can only be checked by hashing every byte. The row-group
predicate (``https://weightvault.dev/attestation/row-groups/v1``), bound to the dataset's root
digest, adds one SHA-256 per byte range a reader loads on its own:

* Parquet: each row group's column chunks (one contiguous range per row group);
* Arrow IPC (file or stream format): each record batch's message (metadata and body);
* JSONL: ranges of whole lines, ``lines_per_group`` lines each (default 10,000);

and, for every file, the ``metadata`` ranges: every byte outside the groups (Parquet's footer,
magic and page indexes; Arrow's schema, dictionaries and footer), which say how to read the
groups. The predicate::

    {"hashType": "sha256",
     "files": [{"name": "train-0.parquet", "format": "parquet", "size": 123456,
                "metadata": [{"start": 0, "end": 4, "digest": HEX}, ...],
                "groups": [{"start": 4, "end": 60000, "rows": 1000, "digest": HEX}, ...]}]}

:func:`verify_row_groups` reads the metadata ranges and the requested groups' ranges (and
nothing else) and compares their digests. The ranges come from the signed predicate, not from
the file, so a tampered footer cannot point the check elsewhere; a reader that parses the file
afterwards reads checked bytes as long as the file does not change in between.
"""

from __future__ import annotations

import bisect
import hashlib
import hmac
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightvault._readers import SizedReader
from weightvault.attest._layouts import (
    DEFAULT_LINES_PER_GROUP,
    ROW_GROUP_FORMATS,
    ByteRange,
    layout_shard,
    shard_format,
)
from weightvault.errors import FormatError, InputError, VerificationError
from weightvault.hashing import HashAlgorithm, HashJob, hash_jobs

if TYPE_CHECKING:
    from weightvault.attest._sign import VerifiedAttestation

__all__ = [
    "VerifiedShard",
    "check_row_groups_predicate",
    "open_verified_shard",
    "row_groups_predicate",
    "verify_row_groups",
]

_HEX = frozenset("0123456789abcdef")


def _int(obj: dict[str, Any], name: str, where: str) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FormatError(f"{where}.{name}: expected a non-negative integer")
    return value


def _ranges(items: Any, where: str, size: int, *, rows: bool) -> None:
    if not isinstance(items, list):
        raise FormatError(f"{where}: expected a list")
    for index, item in enumerate(items):
        at = f"{where}[{index}]"
        allowed = {"start", "end", "digest", "rows"} if rows else {"start", "end", "digest"}
        if not isinstance(item, dict):
            raise FormatError(f"{at}: expected an object")
        for key in item:
            if key not in allowed:
                raise FormatError(f"{at}.{key}: unknown field")
        start, end = _int(item, "start", at), _int(item, "end", at)
        if rows:
            _int(item, "rows", at)
        if not start <= end <= size:
            raise FormatError(f"{at}: range [{start}, {end}) not inside the file's {size} bytes")
        digest = item.get("digest")
        if not isinstance(digest, str) or len(digest) != 64 or set(digest) - _HEX:
            raise FormatError(f"{at}.digest: not 64 lowercase hex digits")


def check_row_groups_predicate(predicate: Any, where: str = "predicate") -> None:
    """Refuse a row-group predicate that lacks a field or holds a wrong one, naming it."""
    if not isinstance(predicate, dict):
        raise FormatError(f"{where}: expected an object")
    for key in predicate:
        if key not in ("hashType", "files"):
            raise FormatError(f"{where}.{key}: unknown field")
    if predicate.get("hashType") != "sha256":
        raise FormatError(f"{where}.hashType: expected sha256")
    files = predicate.get("files")
    if not isinstance(files, list) or not files:
        raise FormatError(f"{where}.files: expected a non-empty list")
    names: set[str] = set()
    for index, entry in enumerate(files):
        at = f"{where}.files[{index}]"
        if not isinstance(entry, dict):
            raise FormatError(f"{at}: expected an object")
        for key in entry:
            if key not in ("name", "format", "size", "metadata", "groups"):
                raise FormatError(f"{at}.{key}: unknown field")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise FormatError(f"{at}.name: expected a non-empty string")
        if name in names:
            raise FormatError(f"{at}.name: {name!r} listed twice")
        names.add(name)
        if entry.get("format") not in ROW_GROUP_FORMATS:
            raise FormatError(f"{at}.format: expected one of {', '.join(ROW_GROUP_FORMATS)}")
        size = _int(entry, "size", at)
        _ranges(entry.get("metadata"), f"{at}.metadata", size, rows=False)
        _ranges(entry.get("groups"), f"{at}.groups", size, rows=True)


def _range_jobs(path: Path, name: str, ranges: Iterable[ByteRange]) -> list[HashJob]:
    return [HashJob(path, name, r.end - r.start, r.start, r.end) for r in ranges]


def _digests(jobs: list[HashJob], max_workers: int | None) -> list[bytes]:
    """SHA-256 of each range, by the shared hashing engine (parallel, interruptible)."""
    return hash_jobs(jobs, HashAlgorithm.SHA256, max_workers=max_workers) if jobs else []


def row_groups_predicate(
    dataset_path: str | os.PathLike[str],
    *,
    lines_per_group: int = DEFAULT_LINES_PER_GROUP,
    ignore_paths: Sequence[str] = (),
    max_workers: int | None = None,
) -> dict[str, Any]:
    """The row-group predicate of a dataset: every Parquet, Arrow and JSONL file in it (a
    folder, listed as signing lists it), or the one file it is (named ``"."``, as OMS names a
    single-file model's resource). The ranges are hashed in parallel (``max_workers``
    threads, default every core), which does not change the result."""
    from weightvault.signing import default_signature_path, plan_model

    root = Path(dataset_path)
    plan = plan_model(
        root, signature_path=default_signature_path(root), ignore_paths=tuple(ignore_paths)
    )
    shards = [
        (f.name, f.path, layout_shard(f.path, lines_per_group=lines_per_group))
        for f in plan.tree.files
        if shard_format(f.path if plan.tree.is_single_file else f.name) is not None
    ]
    if not shards:
        raise InputError(f"{root}: no Parquet, Arrow or JSONL files to take row groups of")
    jobs = [
        job
        for name, path, layout in shards
        for job in _range_jobs(path, name, (*layout.metadata, *layout.groups))
    ]
    digests = iter(_digests(jobs, max_workers))
    files = []
    for name, _path, layout in shards:
        files.append(
            {
                "name": name,
                "format": layout.format,
                "size": layout.size,
                "metadata": [
                    {"start": r.start, "end": r.end, "digest": next(digests).hex()}
                    for r in layout.metadata
                ],
                "groups": [
                    {"start": r.start, "end": r.end, "rows": r.rows, "digest": next(digests).hex()}
                    for r in layout.groups
                ],
            }
        )
    return {"hashType": "sha256", "files": files}


def _shard_entry(attestation: VerifiedAttestation, name: str | None) -> dict[str, Any]:
    from weightvault.attest._predicates import ROW_GROUPS

    if attestation.predicate_type != ROW_GROUPS:
        raise ValueError("attestation: not a row-groups attestation")
    entries: list[dict[str, Any]] = attestation.predicate["files"]
    if name is None:
        if len(entries) != 1:
            raise InputError("the row-groups attestation covers several files; name one")
        return entries[0]
    for entry in entries:
        if entry["name"] == name:
            return entry
    raise InputError(f"{name}: not among the attested files")


def _check_shard(
    path: str | os.PathLike[str],
    row_group_indices: Iterable[int],
    attestation: VerifiedAttestation,
    name: str | None,
) -> list[ByteRange]:
    """Read and check the metadata ranges and the chosen groups (returned)."""
    entry = _shard_entry(attestation, name)
    shard = Path(path)
    indices = list(row_group_indices)
    groups = entry["groups"]
    for index in indices:
        if isinstance(index, bool) or not 0 <= index < len(groups):
            raise InputError(f"row group {index}: {entry['name']} has {len(groups)} row groups")
    try:
        size = shard.stat().st_size
    except OSError as exc:
        raise InputError(f"{shard}: cannot be read ({exc.strerror})") from exc
    if size != entry["size"]:
        raise VerificationError(
            f"{shard}: {size} bytes, the attestation says {entry['size']}; the file changed"
        )
    metadata = [ByteRange(m["start"], m["end"]) for m in entry["metadata"]]
    chosen = [ByteRange(groups[i]["start"], groups[i]["end"], groups[i]["rows"]) for i in indices]
    digests = _digests(_range_jobs(shard, str(shard), (*metadata, *chosen)), max_workers=None)
    # 1. The metadata (how the groups are read), then 2. each requested group.
    for item, digest, recorded in zip(metadata, digests, entry["metadata"], strict=False):
        if not hmac.compare_digest(digest, bytes.fromhex(recorded["digest"])):
            raise VerificationError(
                f"{shard}: metadata bytes {item.start}-{item.end} do not match the attestation"
            )
    for index, item, digest in zip(indices, chosen, digests[len(metadata) :], strict=True):
        if not hmac.compare_digest(digest, bytes.fromhex(groups[index]["digest"])):
            raise VerificationError(
                f"{shard}: row group {index} (bytes {item.start}-{item.end}) does not match"
                " the attestation"
            )
    return chosen


def verify_row_groups(
    path: str | os.PathLike[str],
    row_group_indices: Iterable[int],
    attestation: VerifiedAttestation,
    *,
    name: str | None = None,
) -> tuple[ByteRange, ...]:
    """Check the metadata and the given row groups of one shard against a *verified* row-group
    attestation (:func:`~weightvault.attest.verify_attestation`), reading only those bytes.

    ``name`` is the shard's name inside the dataset (``train/part-0.parquet``); it may be left
    out when the attestation covers one file. Returns the groups' byte ranges (with their row
    counts); raises :class:`VerificationError` naming the first range that differs.
    """
    return tuple(_check_shard(path, row_group_indices, attestation, name))


class VerifiedShard(SizedReader):
    """A shard opened for a reader (``pyarrow.parquet.ParquetFile``, ``pyarrow.ipc.open_file``,
    line by line) that only ever hands out checked bytes: the first read that touches a row
    group (or a metadata range) reads that whole range once, hashes it and compares it with the
    attestation, then serves it from memory; a range that differs raises
    :class:`VerificationError` before any of its bytes are returned. The metadata ranges and
    the groups last read (up to :attr:`KEPT_BYTES`) stay in memory.

    Readers may read more than they parse: pyarrow opens a Parquet file by reading its last
    64 KiB, which may reach into the last row groups (they are then checked too, read or not);
    :meth:`parquet_file` hands pyarrow the checked footer instead, so only the groups read are.
    """

    KEPT_BYTES = 256 << 20
    """Row groups kept in memory once checked, oldest dropped first beyond this many bytes
    (always at least the last one); a group dropped and read again is checked again."""

    def __init__(self, path: Path, entry: dict[str, Any]) -> None:
        super().__init__()
        self._path = path
        try:
            self._handle = open(path, "rb")
            size = os.fstat(self._handle.fileno()).st_size
        except OSError as exc:
            raise InputError(f"{path}: cannot be read ({exc.strerror})") from exc
        if size != entry["size"]:
            self._handle.close()
            raise VerificationError(
                f"{path}: {size} bytes, the attestation says {entry['size']}; the file changed"
            )
        self._size = size
        self._format = entry["format"]
        spans: list[tuple[int, int, str, str | int]] = [
            (m["start"], m["end"], m["digest"], "metadata") for m in entry["metadata"]
        ]
        spans += [(g["start"], g["end"], g["digest"], i) for i, g in enumerate(entry["groups"])]
        self._spans = sorted((s for s in spans if s[1] > s[0]), key=lambda span: span[0])
        self._starts = [span[0] for span in self._spans]
        self._loaded: dict[int, memoryview] = {}
        self._recent: list[int] = []
        self._kept_bytes = 0
        self.checks = 0
        """Ranges read and checked so far (a range evicted and read again counts twice)."""

    def close(self) -> None:
        self._handle.close()
        self._loaded.clear()
        super().close()

    def _span_bytes(self, index: int) -> memoryview:
        """The bytes of span ``index``, read (once, into one buffer) and checked on first use."""
        if index in self._loaded:
            return self._loaded[index]
        start, end, digest, label = self._spans[index]
        data = bytearray(end - start)
        view = memoryview(data)
        self._handle.seek(start)
        filled = 0
        while filled < len(data):
            count = self._handle.readinto(view[filled:])
            if not count:
                break  # the file shrank: the digest below differs
            filled += count
        if not hmac.compare_digest(hashlib.sha256(view[:filled]).digest(), bytes.fromhex(digest)):
            what = (
                f"metadata bytes {start}-{end} do not"
                if label == "metadata"
                else f"row group {label} (bytes {start}-{end}) does not"
            )
            raise VerificationError(f"{self._path}: {what} match the attestation")
        self.checks += 1
        self._loaded[index] = view.toreadonly()
        if label != "metadata":
            self._recent.append(index)
            self._kept_bytes += len(data)
            while len(self._recent) > 1 and self._kept_bytes > self.KEPT_BYTES:
                evicted = self._loaded.pop(self._recent.pop(0))
                self._kept_bytes -= len(evicted)
        return self._loaded[index]

    def parquet_file(self, **options: Any) -> Any:
        """A ``pyarrow.parquet.ParquetFile`` over this shard, given its footer (checked) so
        that it reads nothing but the row groups asked for (``options``: ParquetFile's)."""
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        if self._format != "parquet":
            raise ValueError(f"{self._path}: a {self._format} file, not Parquet")
        last = len(self._spans) - 1
        footer = self._span_bytes(last)  # the span that ends the file: the Thrift footer
        metadata = pq.read_metadata(io.BytesIO(b"PAR1" + footer))
        return pq.ParquetFile(self, metadata=metadata, **options)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._position < self._size:
            index = bisect.bisect_right(self._starts, self._position) - 1
            data = self._span_bytes(index)
            offset = self._position - self._spans[index][0]
            count = min(len(view) - done, len(data) - offset)
            view[done : done + count] = data[offset : offset + count]
            done += count
            self._position += count
        return done

    def read_buffer(self, size: int | None = -1) -> memoryview:
        """Up to ``size`` checked bytes as a read-only view, not copied where they lie in one
        range (pyarrow calls this, when a file has it, instead of ``read``)."""
        left = self._size - self._position
        wanted = left if size is None or size < 0 else min(size, left)
        if wanted <= 0:
            return memoryview(b"")
        index = bisect.bisect_right(self._starts, self._position) - 1
        data = self._span_bytes(index)
        offset = self._position - self._spans[index][0]
        if offset + wanted <= len(data):
            self._position += wanted
            return data[offset : offset + wanted]
        out = bytearray(wanted)
        got = self.readinto(out)
        return memoryview(out)[:got].toreadonly()

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` checked bytes (all that is left for ``-1``/``None``)."""
        return bytes(self.read_buffer(size))


def open_verified_shard(
    path: str | os.PathLike[str],
    attestation: VerifiedAttestation,
    *,
    name: str | None = None,
) -> VerifiedShard:
    """Open a shard so that every byte a reader gets was checked against a *verified*
    row-groups attestation, by the same read that delivers it (no second pass, and no window
    for the file to change between a check and the read). ``name`` as for
    :func:`verify_row_groups`. Use it as a file: ``pq.ParquetFile(shard).read_row_groups([3])``.
    """
    return VerifiedShard(Path(path), _shard_entry(attestation, name))
