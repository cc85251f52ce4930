"""Which custody version (and which grant) a suspect file found in the wild comes from.

Three levels of match, strongest first:

* **root digest**: a suspect folder whose OMS root digest (``files``/SHA-256, what
  ``weightvault sign`` makes by default) equals a registered version's: the whole version;
* **file digest**: a file whose SHA-256 equals one of a version's files (as its push entry in
  the audit log records it);
* **tensor digest**: a file whose tensors (dtype, shape and bytes, names ignored) are a
  version's tensors, whatever the container: a copy re-saved from safetensors to a PyTorch
  ``.bin`` (or back), renamed, or with its metadata changed is still identified. PyTorch pickles
  are read only through the scanner's restricted converter
  (:func:`weightvault.scan.convert_checkpoint`: scanned first, nothing imported or run), never
  with ``pickle``.

File digests come from the verified audit log alone. Tensor digests of the registered versions
need their weights: with a custody data folder and its KEK the stored ciphertext is opened
(safetensors files are read through the decrypting random-access reader, so no plaintext
reaches the disk; a PyTorch file is decrypted into a private temporary folder, removed at once).

For a matched version, the grants whose pulls released it are named (from the pull entries of
the log): those are the copies that left custody.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from weightvault._dataclass_json import field_dict
from weightvault.errors import FormatError, InputError, WeightvaultError
from weightvault.incident.timeline import Timeline

__all__ = ["FileMatch", "SuspectCheck", "check_files", "tensor_digests"]

_CHUNK = 16 << 20
_TORCH_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
MIN_TENSOR_FRACTION = 0.5
"""A file is called a re-saved copy of a version file when at least this share of its tensors
(by bytes) are that file's tensors."""


@dataclass(frozen=True)
class FileMatch:
    """What one suspect file (or folder) matched."""

    path: str
    sha256: str | None
    match: str
    """``root``, ``file``, ``tensors`` or ``none``."""
    version: str | None = None
    version_file: str | None = None
    tensors_matched: int = 0
    tensors_total: int = 0
    bytes_fraction: float = 0.0
    grants: tuple[dict[str, Any], ...] = ()
    """Grants under which this version file was pulled: id, grantee, time, bytes."""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            **field_dict(self),
            "bytes_fraction": round(self.bytes_fraction, 4),
            "grants": list(self.grants),
        }


@dataclass(frozen=True)
class SuspectCheck:
    """The answer for every suspect path given."""

    model: str
    matches: tuple[FileMatch, ...]
    tensor_reference: bool
    """Whether the versions' tensor digests were available (a data folder with its KEK)."""

    @property
    def identified(self) -> bool:
        return any(m.match != "none" for m in self.matches)

    def to_json(self) -> dict[str, Any]:
        return {
            **field_dict(self),
            "identified": self.identified,
            "matches": [m.to_json() for m in self.matches],
        }


# -- tensor digests -------------------------------------------------------------------------------


class _PlainReader:
    """A plaintext file with the reading interface of crypt's decrypting reader, so one
    safetensors header parser (:func:`weightvault.crypt.read_safetensors_index`) serves both."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self._handle = path.open("rb")
        self.size = os.fstat(self._handle.fileno()).st_size

    def read(self, offset: int, size: int) -> bytes:
        data = os.pread(self._handle.fileno(), size, offset)
        if len(data) != size:
            raise FormatError(f"{self.name}: shorter than its safetensors header says")
        return data

    def close(self) -> None:
        self._handle.close()


@dataclass(frozen=True)
class _Tensors:
    """Tensor digest -> (tensor name, byte count) of one file."""

    by_digest: dict[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(n for _name, n in self.by_digest.values())


def _safetensors_tensors(reader: Any) -> _Tensors:
    """Digest of each tensor: SHA-256 over ``dtype``, shape and its bytes (names left out)."""
    from weightvault.crypt import EncryptedFile, read_safetensors_index

    index, _metadata = read_safetensors_index(cast(EncryptedFile, reader))
    out: dict[str, tuple[str, int]] = {}
    for name, info in index.items():
        hasher = hashlib.sha256(f"{info.dtype}:{list(info.shape)}\n".encode("ascii"))
        position = info.start
        while position < info.end:
            piece = reader.read(position, min(_CHUNK, info.end - position))
            hasher.update(piece)
            position += len(piece)
        out.setdefault(hasher.hexdigest(), (name, info.end - info.start))
    return _Tensors(out)


def _looks_like_safetensors(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{"


@contextmanager
def _private_folder() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="wv-incident-"))
    try:
        folder.chmod(0o700)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def tensor_digests(path: Path) -> dict[str, tuple[str, int]] | None:
    """Tensor digest -> (name, bytes) of a safetensors or PyTorch file; None for other files.

    A PyTorch pickle is first scanned and converted by the restricted converter; a file it
    refuses (a dangerous import) raises :class:`~weightvault.errors.UnsafeFileError`.
    """
    if _looks_like_safetensors(path):
        reader = _PlainReader(path)
        try:
            return _safetensors_tensors(reader).by_digest
        finally:
            reader.close()
    if path.suffix.lower() not in _TORCH_SUFFIXES:
        return None
    from weightvault.scan import convert_checkpoint

    with _private_folder() as folder:
        converted = folder / "converted.safetensors"
        convert_checkpoint(path, converted)
        reader = _PlainReader(converted)
        try:
            return _safetensors_tensors(reader).by_digest
        finally:
            reader.close()


def _reference_tensors(
    data_dir: Path, model: str, wanted: set[str]
) -> dict[tuple[str, str], dict[str, tuple[str, int]]]:
    """Tensor digests of the registered files ``(version, path)`` of ``model`` in ``wanted``
    versions, read from the data folder's ciphertext with the service KEK."""
    from sqlalchemy import select

    from weightvault.crypt import open_encrypted, parse_identity
    from weightvault.crypt.stream import decrypt_file
    from weightvault.custody.blobs import open_blob_store
    from weightvault.custody.config import ServiceConfig
    from weightvault.custody.store import Store, VersionFile

    config = ServiceConfig(data_dir=data_dir)
    kek = parse_identity(config.kek_spec)
    blobs = open_blob_store(config.blobs, data_dir)
    store = Store(config.database_url)
    try:
        with store.session(read_only=True) as session:
            rows = list(
                session.scalars(
                    select(VersionFile)
                    .where(VersionFile.model == model)
                    .order_by(VersionFile.version, VersionFile.index)
                )
            )
    finally:
        store.dispose()
    out: dict[tuple[str, str], dict[str, tuple[str, int]]] = {}
    with _private_folder() as folder:
        for row in rows:
            torch_file = row.path.lower().endswith(_TORCH_SUFFIXES)
            if row.version not in wanted or not (row.path.endswith(".safetensors") or torch_file):
                continue
            sealed = folder / "stored.wvenc"
            with sealed.open("wb") as handle:
                for piece in blobs.read_range(row.blob_key, 0, blobs.size(row.blob_key)):
                    handle.write(piece)
            try:
                if torch_file:
                    plain = folder / Path(row.path).name
                    decrypt_file(sealed, plain, [kek], force=True, expected_sha256=row.sha256)
                    found = tensor_digests(plain)
                    plain.unlink()
                else:
                    with open_encrypted(sealed, [kek], name=row.path) as reader:
                        found = _safetensors_tensors(reader).by_digest
            except WeightvaultError:
                continue  # a stored file that is not a tensor file after all
            finally:
                sealed.unlink(missing_ok=True)
            if found:
                out[(row.version, row.path)] = found
    return out


# -- matching -------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while piece := handle.read(_CHUNK):
                hasher.update(piece)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    return hasher.hexdigest()


def _pulls(timeline: Timeline) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """``(version, file path)`` -> the pulls that released it (grant, grantee, time, bytes)."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for event in timeline.events:
        if event.kind != "pull" or not event.grant_id or not event.version:
            continue
        grant = timeline.grants.get(event.grant_id)
        file_path = str(event.entry.detail.get("file", ""))
        out.setdefault((event.version, file_path), []).append(
            {
                "grant_id": event.grant_id,
                "grantee": grant.grantee if grant else event.principal,
                "time": event.time,
                "bytes": event.nbytes,
                "log_index": event.proof.index,
            }
        )
    return out


def _version_pulls(
    pulls: dict[tuple[str, str], list[dict[str, Any]]], version: str
) -> tuple[dict[str, Any], ...]:
    seen: dict[str, dict[str, Any]] = {}
    for (pulled_version, _path), items in pulls.items():
        if pulled_version == version:
            for item in items:
                seen.setdefault(item["grant_id"], item)
    return tuple(seen.values())


def _folder_root_digest(folder: Path) -> str:
    from weightvault.signing import digest

    return "sha256:" + digest(folder).root_digest.hex()


def check_files(
    paths: Sequence[Path], timeline: Timeline, *, data_dir: Path | None = None
) -> SuspectCheck:
    """Identify each suspect path (a file, or a folder: its root digest, then each file)."""
    by_digest: dict[str, tuple[str, str]] = {}
    for version, facts in timeline.versions.items():
        for file_path, _size, sha in facts.files:
            by_digest.setdefault(sha, (version, file_path))
    roots = {facts.root_digest: version for version, facts in timeline.versions.items()}
    pulls = _pulls(timeline)
    files: list[Path] = []
    matches: list[FileMatch] = []
    for path in paths:
        if path.is_dir():
            root = _folder_root_digest(path)
            root_version = roots.get(root)
            matches.append(
                FileMatch(
                    path=str(path),
                    sha256=None,
                    match="root" if root_version else "none",
                    version=root_version,
                    grants=_version_pulls(pulls, root_version) if root_version else (),
                    note=f"root digest {root}",
                )
            )
            files += sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    reference: dict[tuple[str, str], dict[str, tuple[str, int]]] | None = None
    for path in files:
        sha = _sha256(path)
        if sha in by_digest:
            version, file_path = by_digest[sha]
            matches.append(
                FileMatch(
                    path=str(path),
                    sha256=sha,
                    match="file",
                    version=version,
                    version_file=file_path,
                    grants=tuple(pulls.get((version, file_path), [])),
                )
            )
            continue
        try:
            suspect = tensor_digests(path)
        except WeightvaultError as exc:
            matches.append(
                FileMatch(str(path), sha, "none", note=f"tensors not read: {exc.one_line()}")
            )
            continue
        if suspect is None or data_dir is None:
            why = "not a tensor file" if suspect is None else "no data folder for tensor digests"
            matches.append(FileMatch(str(path), sha, "none", note=why))
            continue
        if reference is None:
            reference = _reference_tensors(data_dir, timeline.model, set(timeline.versions))
        matches.append(_best_tensor_match(path, sha, suspect, reference, pulls))
    return SuspectCheck(
        model=timeline.model, matches=tuple(matches), tensor_reference=reference is not None
    )


def _best_tensor_match(
    path: Path,
    sha: str,
    suspect: dict[str, tuple[str, int]],
    reference: dict[tuple[str, str], dict[str, tuple[str, int]]],
    pulls: dict[tuple[str, str], list[dict[str, Any]]],
) -> FileMatch:
    total = sum(n for _name, n in suspect.values()) or 1
    best: tuple[float, int, tuple[str, str]] | None = None
    for key, tensors in reference.items():
        common = suspect.keys() & tensors.keys()
        fraction = sum(suspect[d][1] for d in common) / total
        if common and (best is None or fraction > best[0]):
            best = (fraction, len(common), key)
    if best is None or best[0] < MIN_TENSOR_FRACTION:
        note = f"best tensor overlap {best[0]:.0%}" if best else "no tensor in common"
        return FileMatch(str(path), sha, "none", tensors_total=len(suspect), note=note)
    fraction, count, (version, file_path) = best
    return FileMatch(
        path=str(path),
        sha256=sha,
        match="tensors",
        version=version,
        version_file=file_path,
        tensors_matched=count,
        tensors_total=len(suspect),
        bytes_fraction=fraction,
        grants=tuple(pulls.get((version, file_path), [])),
        note="same tensors in another container or with other names",
    )
