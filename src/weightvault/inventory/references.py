"""What a copy of a custody model looks like: the reference digests inventory compares against.

The references come from the custody data folder (its database and blob store), because that is
where every registered version is listed with what identifies each kind of copy:

* **exact copies**: each file's plaintext SHA-256, recorded when the version was pushed;
* **encrypted copies**: the ``.wvenc`` header context the service wrote (``set_id`` is the
  version's upload id and ``manifest_digest`` the SHA-256 of its signature), which re-wrapped
  deliveries to grantees keep;
* **re-saved copies** (same tensors, another container or file): per-tensor digests. These are
  not stored by the service, so they are computed here from the stored ciphertext, decrypted
  in memory with the service KEK (a keyring file or a ``pkcs11:`` key), and only for the stored
  safetensors files that hold a tensor of a dtype and shape some candidate file also holds:
  an inventory that finds no plausible re-saved copy decrypts nothing but headers.

A tensor digest is ``DTYPE:SHAPE:SHA-256`` of the tensor's raw little-endian C-order bytes
(its name is left out: a re-save may rename tensors).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from weightvault.errors import InputError, WeightvaultError

if TYPE_CHECKING:
    from weightvault.crypt import Identity
    from weightvault.custody.config import ServiceConfig
    from weightvault.signing import Verifier

__all__ = [
    "ReferenceFile",
    "References",
    "TensorKey",
    "add_signed_manifest",
    "custody_references",
    "tensor_digest",
]

TensorKey = tuple[str, tuple[int, ...]]
"""A tensor's dtype (safetensors names: ``F32``, ``BF16`` ...) and shape."""

_READ = 16 << 20


def tensor_digest(dtype: str, shape: tuple[int, ...], sha256_hex: str) -> str:
    """``F32:64x64:<hex>``: what two copies of one tensor share whatever their container."""
    return f"{dtype}:{'x'.join(map(str, shape)) or 'scalar'}:{sha256_hex}"


@dataclass(frozen=True)
class ReferenceFile:
    """One file of a registered version."""

    model: str
    version: str
    path: str
    size: int
    sha256: str

    @property
    def label(self) -> str:
        return f"{self.model}@{self.version}:{self.path}"


@dataclass(frozen=True)
class _StoredTensors:
    """A stored safetensors file: its tensors' positions (from the decrypted header)."""

    ref: ReferenceFile
    blob: Path
    tensors: tuple[tuple[str, str, tuple[int, ...], int, int], ...]
    """``(name, dtype, shape, start, end)`` in the plaintext."""


@dataclass
class References:
    """Reference digests of every custody model version."""

    source: str
    by_sha256: dict[str, list[ReferenceFile]] = field(default_factory=dict)
    versions_by_set_id: dict[str, tuple[str, str]] = field(default_factory=dict)
    versions_by_manifest: dict[str, tuple[str, str]] = field(default_factory=dict)
    version_count: int = 0
    model_count: int = 0
    tensor_note: str = ""
    """What stands in the way of finding re-saved copies (``not looked for: ...``), if anything;
    read as "re-saved copies ..."."""
    _stored: list[_StoredTensors] = field(default_factory=list)
    _kek: Identity | None = None
    _digests: dict[int, list[str]] = field(default_factory=dict)
    """Tensor digests of ``_stored[i]``, computed on first need."""

    @property
    def sizes(self) -> frozenset[int]:
        """Sizes of the reference files (manifests record none: their entry is -1)."""
        return frozenset(f.size for files in self.by_sha256.values() for f in files)

    @property
    def tensor_matching(self) -> bool:
        """Whether re-saved copies can be looked for (the KEK opened)."""
        return self._kek is not None

    @property
    def file_count(self) -> int:
        return sum(len(files) for files in self.by_sha256.values())

    def tensor_keys(self) -> frozenset[TensorKey]:
        """Dtype and shape of every reference tensor (known from headers alone)."""
        return frozenset((t[1], t[2]) for s in self._stored for t in s.tensors)

    def tensor_index(
        self, wanted: Iterable[TensorKey]
    ) -> dict[str, list[tuple[ReferenceFile, str, int]]]:
        """Tensor digest -> ``(file, tensor name, bytes)`` for the stored files holding any
        tensor of the ``wanted`` dtypes and shapes (decrypting and hashing those files on first
        need)."""
        wanted_set = set(wanted)
        index: dict[str, list[tuple[ReferenceFile, str, int]]] = {}
        for i, stored in enumerate(self._stored):
            if not any((t[1], t[2]) in wanted_set for t in stored.tensors):
                continue
            digests = self._digests.get(i)
            if digests is None:
                digests = self._digests[i] = self._hash_stored(stored)
            for (name, _dtype, _shape, start, end), digest in zip(
                stored.tensors, digests, strict=True
            ):
                index.setdefault(digest, []).append((stored.ref, name, end - start))
        return index

    def tensor_totals(self, ref: ReferenceFile) -> tuple[int, int]:
        """How many tensors a stored safetensors file holds, and their bytes."""
        tensors = [t for s in self._stored if s.ref == ref for t in s.tensors]
        return len(tensors), sum(end - start for *_x, start, end in tensors)

    def _hash_stored(self, stored: _StoredTensors) -> list[str]:
        from weightvault.crypt import open_encrypted

        assert self._kek is not None
        digests = []
        with open_encrypted(stored.blob, [self._kek], name=stored.ref.label) as reader:
            for _name, dtype, shape, start, end in stored.tensors:
                hasher = hashlib.sha256()
                for offset in range(start, end, _READ):
                    hasher.update(reader.read(offset, min(_READ, end - offset)))
                digests.append(tensor_digest(dtype, shape, hasher.hexdigest()))
        return digests


def custody_references(config: ServiceConfig, *, tensors: bool = True) -> References:
    """The references of every version registered in the custody deployment ``config`` names.

    Opens the database read-only and creates nothing. ``tensors=False`` skips the KEK (no
    re-saved copies found); so does a KEK that cannot be opened, which is noted, not raised.
    """
    from sqlalchemy import select

    from weightvault.custody.bootstrap import is_custody_folder
    from weightvault.custody.store import ModelVersion, Store, VersionFile

    data = config.data_dir
    if not data.is_dir() or not is_custody_folder(data):
        raise InputError(f"{data}: not a custody data folder")
    url = config.database_url
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
        raise InputError(f"{url[len('sqlite:///') :]}: no custody database there")
    refs = References(source=f"custody data folder {data}")
    store = Store(url)
    try:
        with store.session(read_only=True) as session:
            versions = session.scalars(select(ModelVersion)).all()
            files = session.scalars(select(VersionFile).order_by(VersionFile.index)).all()
    finally:
        store.dispose()
    refs.version_count = len(versions)
    refs.model_count = len({v.model for v in versions})
    for version in versions:
        key = (version.model, version.version)
        refs.versions_by_set_id[version.blob_prefix] = key
        digest = "sha256:" + hashlib.sha256(version.signature).hexdigest()
        refs.versions_by_manifest[digest] = key
    blob_files: list[tuple[ReferenceFile, str]] = []
    for f in files:
        ref = ReferenceFile(f.model, f.version, f.path, f.size, f.sha256)
        refs.by_sha256.setdefault(f.sha256, []).append(ref)
        blob_files.append((ref, f.blob_key))
    if not tensors:
        refs.tensor_note = "not looked for: tensor matching was turned off"
        return refs
    _load_stored_tensors(refs, config, blob_files)
    return refs


def _load_stored_tensors(
    refs: References, config: ServiceConfig, blob_files: list[tuple[ReferenceFile, str]]
) -> None:
    """Open the KEK and read the tensor layout of each stored safetensors file."""
    from weightvault.crypt import open_encrypted, parse_identity, read_safetensors_index

    if config.blobs.startswith("s3://"):
        refs.tensor_note = "not looked for: the blobs are in S3"
        return
    blob_root = Path(config.blobs) if config.blobs else config.data_dir / "blobs"
    try:
        refs._kek = parse_identity(config.kek_spec)
    except WeightvaultError as exc:
        refs.tensor_note = f"not looked for: the service KEK cannot be opened ({exc.one_line()})"
        return
    for ref, blob_key in blob_files:
        if not ref.path.endswith(".safetensors"):
            continue
        blob = blob_root / blob_key
        try:
            with open_encrypted(blob, [refs._kek], name=ref.label) as reader:
                index, _metadata = read_safetensors_index(reader)
        except WeightvaultError as exc:
            refs.tensor_note = (
                f"not matched against {ref.label}: its stored file cannot be read "
                f"({exc.one_line()})"
            )
            continue
        tensors = tuple(
            (name, t.dtype, t.shape, t.start, t.end)
            for name, t in sorted(index.items(), key=lambda item: item[1].start)
        )
        refs._stored.append(_StoredTensors(ref, blob, tensors))


def add_signed_manifest(refs: References, signature: bytes, verifier: Verifier) -> str:
    """Add the files a signed OMS manifest lists (``files`` serialization, SHA-256) to ``refs``;
    returns the version label (``MODEL@sha256:ROOT12``).

    The signature must verify with ``verifier`` first: a manifest is only a reference once its
    signer vouches for it. Manifests list digests only (no sizes, no tensors), so they find
    exact copies of weight files and files encrypted with the signature as their manifest
    (``encrypt --manifest``), nothing else.
    """
    from weightvault.errors import UsageError
    from weightvault.oms.manifest import parse_statement

    verified = verifier.verify(signature)
    manifest = parse_statement(verified.payload)
    if manifest.serialization.method != "files":
        raise UsageError(
            f"manifest of {manifest.model_name}: {manifest.serialization.method} serialization; "
            "only whole-file (files) manifests can be matched"
        )
    version = f"sha256:{manifest.root_digest.hex()[:12]}"
    for resource in manifest.resources:
        if resource.algorithm != "sha256":
            raise UsageError(
                f"manifest of {manifest.model_name}: hashed with {resource.algorithm}; "
                "inventory compares SHA-256 digests (sign with the default hash)"
            )
        ref = ReferenceFile(manifest.model_name, version, resource.name, -1, resource.digest.hex())
        refs.by_sha256.setdefault(ref.sha256, []).append(ref)
    refs.versions_by_manifest["sha256:" + hashlib.sha256(signature).hexdigest()] = (
        manifest.model_name,
        version,
    )
    refs.version_count += 1
    refs.model_count += 1
    described = f"signed manifest of {manifest.model_name}"
    refs.source = f"{refs.source}; {described}" if refs.source else described
    return f"{manifest.model_name}@{version}"
