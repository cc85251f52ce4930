"""Walking roots for copies of custody models and for weight files nobody registered.

One pass lists the roots (no symlink is followed) and sniffs each file's first bytes; then every
weight file, and every other file whose size equals a reference file's, is hashed by the
parallel hashing engine (:func:`weightvault.hashing.hash_jobs`, SHA-256 like the custody
records), so the walk runs at the speed signing hashes. Each file is then one of:

* ``exact-copy``: its SHA-256 is a registered file's;
* ``encrypted-copy``: a ``.wvenc`` file whose header context names a registered version (the
  header is read; nothing is decrypted);
* ``resaved-copy`` / ``partial-copy``: a safetensors or PyTorch file holding all (or a large
  share) of a registered version's tensors, found by tensor digests. Only files holding a
  tensor of a dtype and shape some registered tensor has are read a second time (their tensors
  hashed by the same engine, by byte range); PyTorch files go through the scanner's safe path
  (:func:`weightvault.scan.convert.checkpoint_tensors`: scanned first, nothing executed);
* ``unknown-weights`` / ``unknown-encrypted``: a weight file (by format) that matches nothing.

A finding is *stray* when it lies outside every approved folder (the custody data folder is
always approved: it is where the registered copies live).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightvault.errors import InputError, WeightvaultError
from weightvault.hashing import HashJob, ProgressDisplay, hash_jobs, reporting
from weightvault.inventory.references import ReferenceFile, References, TensorKey, tensor_digest

__all__ = [
    "INVENTORY_FORMAT",
    "WEIGHT_FORMATS",
    "Finding",
    "InventoryReport",
    "sniff",
    "take_inventory",
]

INVENTORY_FORMAT = "weightvault.dev/inventory@v1"
_HEAD = 256
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
_PICKLE_START = tuple(bytes([0x80, proto]) for proto in (2, 3, 4, 5))
_TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
WEIGHT_FORMATS = frozenset(
    {
        "safetensors",
        "pytorch-zip",
        "pytorch-legacy",
        "pickle",
        "gguf",
        "numpy",
        "numpy-npz",
        "hdf5",
        "onnx",
        "weightvault-encrypted",
    }
)
_SMALL_TENSOR = 4096
"""Tensors smaller than this (biases, norms, often constant) never make a partial match alone."""


def sniff(head: bytes, size: int, name: str) -> str | None:
    """The weight format a file's first bytes (and name) show, or None for anything else."""
    from weightvault.crypt.format import MAGIC

    lower = name.lower()
    if head.startswith(MAGIC):
        return "weightvault-encrypted"
    if len(head) >= 9 and head[8:9] == b"{":
        length = int.from_bytes(head[:8], "little")
        if 2 <= length <= size - 8:
            return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        if lower.endswith(_TORCH_SUFFIXES) or b"data.pkl" in head:
            return "pytorch-zip"
        if lower.endswith(".npz"):
            return "numpy-npz"
        return None
    if head.startswith(_TORCH_LEGACY_MAGIC):
        return "pytorch-legacy"
    if head.startswith(_PICKLE_START) and lower.endswith((*_TORCH_SUFFIXES, ".pkl", ".pickle")):
        return "pickle"
    if head.startswith(b"GGUF"):
        return "gguf"
    if head.startswith(b"\x93NUMPY"):
        return "numpy"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "hdf5"
    if lower.endswith(".onnx") and size > 0:
        return "onnx"
    return None


@dataclass(frozen=True)
class Finding:
    """A weight file (or a copy of a registered file) found under the roots."""

    path: Path
    size: int
    format: str
    kind: str
    sha256: str | None
    approved: bool
    matches: tuple[dict[str, Any], ...] = ()
    """What it matched: ``{"model", "version", "path"}`` (+ ``tensors``, ``of``,
    ``byte_fraction`` for tensor matches)."""

    @property
    def is_custody_copy(self) -> bool:
        return self.kind in ("exact-copy", "encrypted-copy", "resaved-copy", "partial-copy")

    @property
    def stray(self) -> bool:
        return not self.approved

    def describe(self) -> str:
        if not self.matches:
            return self.kind
        first = self.matches[0]
        what = f"{first['model']}@{first['version']}"
        if first.get("path"):
            what += f":{first['path']}"
        if "tensors" in first:
            what += f" ({first['tensors']} of {first['of']} tensors, {first['byte_fraction']:.0%})"
        return f"{self.kind} of {what}"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "size": self.size,
            "format": self.format,
            "kind": self.kind,
            "sha256": self.sha256,
            "approved": self.approved,
            "stray": self.stray,
            "matches": [dict(m) for m in self.matches],
        }


@dataclass(frozen=True)
class InventoryReport:
    """Everything the walk found."""

    roots: tuple[Path, ...]
    approved: tuple[Path, ...]
    reference_source: str
    reference_versions: int
    tensor_note: str
    files_seen: int
    bytes_hashed: int
    findings: tuple[Finding, ...]
    errors: tuple[tuple[str, str], ...] = ()

    @property
    def stray_copies(self) -> list[Finding]:
        """Copies of custody models outside the approved folders."""
        return [f for f in self.findings if f.is_custody_copy and f.stray]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": INVENTORY_FORMAT,
            "roots": [str(r) for r in self.roots],
            "approved": [str(a) for a in self.approved],
            "references": {
                "source": self.reference_source,
                "versions": self.reference_versions,
                "tensor_matching": self.tensor_note or "on",
            },
            "files_seen": self.files_seen,
            "bytes_hashed": self.bytes_hashed,
            "stray_copies": len(self.stray_copies),
            "findings": [f.to_json() for f in self.findings],
            "errors": [{"path": p, "error": e} for p, e in self.errors],
        }


@dataclass
class _Entry:
    path: Path
    size: int
    format: str | None
    sha256: str | None = None
    kind: str = ""
    matches: list[dict[str, Any]] = field(default_factory=list)


def _walk(roots: Sequence[Path], errors: list[tuple[str, str]]) -> Iterable[_Entry]:
    """Regular files under ``roots`` (symlinks neither followed nor reported), sniffed."""

    def on_error(exc: OSError) -> None:
        errors.append((str(exc.filename), exc.strerror or str(exc)))

    for root in roots:
        if root.is_file() and not root.is_symlink():
            listing: Iterable[tuple[str, list[str], list[str]]] = [
                (str(root.parent), [], [root.name])
            ]
        else:
            listing = os.walk(root, onerror=on_error, followlinks=False)
        for folder, dirs, names in listing:
            dirs.sort()  # a stable order, whatever the file system's
            for name in sorted(names):
                path = Path(folder, name)
                try:
                    status = os.lstat(path)
                    if not stat.S_ISREG(status.st_mode):
                        continue
                    with open(path, "rb") as handle:
                        head = handle.read(_HEAD)
                except OSError as exc:
                    errors.append((str(path), exc.strerror or str(exc)))
                    continue
                yield _Entry(path, status.st_size, sniff(head, status.st_size, name))


def _hash_all(
    entries: list[_Entry],
    errors: list[tuple[str, str]],
    workers: int | None,
    progress: ProgressDisplay | None,
) -> int:
    """SHA-256 every entry through the hashing engine; an unreadable file is an error entry,
    not the end of the walk. Returns the bytes hashed."""
    jobs = [HashJob(e.path, str(e.path), e.size) for e in entries]
    total = sum(j.size for j in jobs)
    try:
        with reporting(total, progress) as advance:
            digests = hash_jobs(jobs, "sha256", max_workers=workers, progress=advance)
    except InputError:
        digests = []
        for job in jobs:  # find the file that failed; hash the others
            try:
                digests.extend(hash_jobs([job], "sha256", max_workers=1))
            except InputError as exc:
                errors.append((str(job.path), exc.one_line()))
                digests.append(b"")
    for entry, digest in zip(entries, digests, strict=True):
        entry.sha256 = digest.hex() if digest else None
    return total


def _match_encrypted(entry: _Entry, refs: References | None) -> None:
    from weightvault.crypt.format import read_header

    try:
        with open(entry.path, "rb") as handle:
            header = read_header(handle, str(entry.path))
    except (WeightvaultError, OSError):
        entry.kind = "unknown-encrypted"
        return
    context = header.context
    version = None
    if refs is not None:
        version = refs.versions_by_set_id.get(context.set_id)
        if version is None and context.manifest_digest:
            version = refs.versions_by_manifest.get(context.manifest_digest)
    if version is None:
        entry.kind = "unknown-encrypted"
        entry.matches = [{"model": context.model, "version": None, "path": context.path}]
        return
    entry.kind = "encrypted-copy"
    entry.matches = [{"model": version[0], "version": version[1], "path": context.path}]


class _PlainReader:
    """A plaintext file with the reader interface crypt's safetensors index parser takes."""

    def __init__(self, path: Path, size: int) -> None:
        self.name = str(path)
        self.size = size
        self._path = path

    def read(self, offset: int, size: int) -> bytes:
        with open(self._path, "rb") as handle:
            handle.seek(offset)
            return handle.read(size)


_Layout = list[tuple[str, str, tuple[int, ...], int, int]]
"""``(name, dtype, shape, start, end)`` of each tensor."""


def _safetensors_layout(entry: _Entry) -> _Layout:
    from weightvault.crypt import read_safetensors_index

    index, _metadata = read_safetensors_index(_PlainReader(entry.path, entry.size))  # type: ignore[arg-type]
    return [(n, t.dtype, t.shape, t.start, t.end) for n, t in index.items()]


def _tensor_digests(
    entry: _Entry, wanted: frozenset[TensorKey], workers: int | None
) -> list[tuple[str, int]] | None:
    """``(tensor digest, nbytes)`` for each tensor of ``entry``, or None when no tensor has a
    dtype and shape in ``wanted`` (then the file cannot hold a registered tensor)."""
    if entry.format == "safetensors":
        layout = _safetensors_layout(entry)
        if not any((dtype, shape) in wanted for _n, dtype, shape, _s, _e in layout):
            return None
        jobs = [HashJob(entry.path, f"{entry.path}:{n}", e - s, s, e) for n, _d, _h, s, e in layout]
        digests = hash_jobs(jobs, "sha256", max_workers=workers)
        return [
            (tensor_digest(dtype, shape, digest.hex()), end - start)
            for (_n, dtype, shape, start, end), digest in zip(layout, digests, strict=True)
        ]
    from weightvault.scan.convert import checkpoint_tensors

    infos = [info for info, _data in checkpoint_tensors(entry.path)]
    if not any((i.dtype, i.shape) in wanted for i in infos):
        return None
    result = []
    for info, data in checkpoint_tensors(entry.path):
        hasher = hashlib.sha256()
        for piece in data:
            hasher.update(piece)
        result.append((tensor_digest(info.dtype, info.shape, hasher.hexdigest()), info.nbytes))
    return result


def _match_tensors(entry: _Entry, refs: References, workers: int | None) -> None:
    wanted = refs.tensor_keys()
    try:
        digests = _tensor_digests(entry, wanted, workers)
    except (WeightvaultError, OSError):
        return  # unreadable, or not parseable as tensors: stays unknown weights
    if not digests:
        return
    index = refs.tensor_index({_key_of(d) for d, _n in digests})
    # Which tensors of each registered file this file holds (by digest, whatever the name).
    held: dict[ReferenceFile, dict[str, int]] = {}
    for digest, _nbytes in digests:
        for ref, name, nbytes in index.get(digest, []):
            held.setdefault(ref, {})[name] = nbytes
    if not held:
        return
    ref, names = max(held.items(), key=lambda item: (sum(item[1].values()), item[0].label))
    matched = sum(names.values())
    large = sum(n for n in names.values() if n >= _SMALL_TENSOR)
    count, whole = refs.tensor_totals(ref)
    if matched == whole:
        entry.kind = "resaved-copy"
    elif large and (large >= whole / 2 or large >= 16 << 20):
        entry.kind = "partial-copy"
    else:
        return
    entry.matches = [
        {
            "model": ref.model,
            "version": ref.version,
            "path": ref.path,
            "tensors": len(names),
            "of": count,
            "byte_fraction": round(matched / whole, 4) if whole else 0.0,
        }
    ]


def _key_of(digest: str) -> TensorKey:
    dtype, shape, _hex = digest.split(":")
    dims = () if shape == "scalar" else tuple(int(d) for d in shape.split("x"))
    return dtype, dims


def _exact(entry: _Entry, files: list[ReferenceFile]) -> None:
    entry.kind = "exact-copy"
    entry.matches = [{"model": f.model, "version": f.version, "path": f.path} for f in files]


def take_inventory(
    roots: Sequence[Path],
    references: References | None = None,
    *,
    approved: Sequence[Path] = (),
    home: Path | None = None,
    workers: int | None = None,
    progress: ProgressDisplay | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> InventoryReport:
    """Walk ``roots`` and classify every weight file and every copy of a registered file.

    ``home`` (the custody data folder) is approved like ``approved``. Raises
    :class:`InputError` when a root does not exist; unreadable files and folders below the
    roots are listed in the report's ``errors``.
    """
    for root in roots:
        if not root.exists():
            raise InputError(f"{root}: no such file or folder")
    errors: list[tuple[str, str]] = []
    sizes = references.sizes if references is not None else frozenset()
    entries = list(_walk(roots, errors))
    seen = len(entries)
    relevant = [e for e in entries if e.format is not None or e.size in sizes]
    to_hash = [e for e in relevant if e.format != "weightvault-encrypted"]
    if on_stage is not None:
        on_stage(f"hashing {len(to_hash)} of {seen} files")
    hashed = _hash_all(to_hash, errors, workers, progress)
    for entry in relevant:
        if entry.format == "weightvault-encrypted":
            _match_encrypted(entry, references)
            continue
        exact = references.by_sha256.get(entry.sha256 or "") if references is not None else None
        if exact:
            _exact(entry, exact)
            continue
        if entry.format is None:
            continue
        entry.kind = "unknown-weights"
        if (
            references is not None
            and entry.sha256 is not None
            and entry.format in ("safetensors", "pytorch-zip", "pytorch-legacy")
            and references.tensor_matching
        ):
            _match_tensors(entry, references, workers)
    approved_dirs = tuple(Path(os.path.realpath(a)) for a in (*approved, *([home] if home else [])))

    def is_approved(path: Path) -> bool:
        real = Path(os.path.realpath(path))
        return any(real == a or a in real.parents for a in approved_dirs)

    findings = tuple(
        Finding(
            path=e.path,
            size=e.size,
            format=e.format or "other",
            kind=e.kind,
            sha256=e.sha256,
            approved=is_approved(e.path),
            matches=tuple(e.matches),
        )
        for e in relevant
        if e.kind
    )
    return InventoryReport(
        roots=tuple(roots),
        approved=approved_dirs,
        reference_source=references.source if references is not None else "none",
        reference_versions=references.version_count if references is not None else 0,
        tensor_note=references.tensor_note if references is not None else "no references",
        files_seen=seen,
        bytes_hashed=hashed,
        findings=findings,
        errors=tuple(errors),
    )
