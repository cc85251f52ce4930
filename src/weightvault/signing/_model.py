"""Signing model trees: from files to a manifest, to a bundle, to a file.

The one pipeline every method shares:

    plan_model (walk once) -> hash jobs -> Manifest -> in-toto payload -> Signer.sign
    -> bundle JSON -> file

:func:`plan_model` lists the model once and returns the files a signature will cover, so a
caller can look at them (scan them, size a progress bar) before anything is hashed;
:func:`prepare_signature` returns the bundle without writing it (the seam for logging it in a
transparency log first). Verification lives in :mod:`weightvault.signing._verify`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Unpack

from weightvault._fs import atomic_output
from weightvault.errors import FormatError, UsageError
from weightvault.hashing import HashJob, ProgressCallback, hash_jobs
from weightvault.oms.dsse import INTOTO_PAYLOAD_TYPE
from weightvault.oms.manifest import Manifest, Resource, Serialization, shard_name
from weightvault.signing._base import Signer, SignerIdentity
from weightvault.signing.options import ManifestKeywords, ManifestOptions, PathLike
from weightvault.tree import ModelFile, ModelTree, normalize_ignore_path, walk_model
from weightvault.tree.s3 import S3Object, is_object_url, walk_object_store

__all__ = [
    "SIGNATURE_FILE_NAME",
    "ModelPlan",
    "SignResult",
    "SignedModel",
    "compute_manifest",
    "default_signature_path",
    "digest",
    "hash_files",
    "is_signature_file",
    "plan_model",
    "prepare_signature",
    "sign",
    "sign_manifest",
    "signature_path_for",
    "write_signature",
]

SIGNATURE_FILE_NAME = "model.sig"
#: Largest signature file read (a manifest for a multi-terabyte model is well below this).
MAX_SIGNATURE_BYTES = 64 * 1024 * 1024
#: Every Sigstore bundle (OMS signatures included) names this media type near its start.
_BUNDLE_MARK = b"application/vnd.dev.sigstore.bundle"
_SNIFF_BYTES = 64 * 1024


def default_signature_path(model_path: PathLike) -> Path:
    """``MODEL/model.sig`` for a folder; ``model.sig`` beside a single-file model.

    A model in a bucket has none: its signature is a local file whose path must be given.
    """
    if is_object_url(model_path):
        raise UsageError(
            f"{model_path}: a model in object storage has no default signature file;"
            " give a local path for it",
            remedy="signature-path",
        )
    root = Path(model_path)
    if root.is_dir():
        return root / SIGNATURE_FILE_NAME
    return root.parent / SIGNATURE_FILE_NAME


def signature_path_for(model_path: PathLike, signature_path: PathLike | None = None) -> Path:
    """The signature file of a model: ``signature_path`` when one is given, else the model's
    default (:func:`default_signature_path`)."""
    if signature_path is not None:
        return Path(signature_path)
    return default_signature_path(model_path)


def _model_name(root: Path) -> str:
    name = root.name
    if not name or name == "..":
        name = os.path.basename(os.path.abspath(root))
    return name


def signature_ignore(root: Path, signature_path: Path | None) -> list[str]:
    """The signature file's name inside the model (so signing twice keeps working)."""
    if signature_path is None or is_object_url(str(signature_path)) or not root.is_dir():
        return []
    name = normalize_ignore_path(root, os.path.abspath(signature_path))
    return [name] if name else []


def is_signature_file(path: PathLike) -> bool:
    """Whether ``path`` holds a signature (a Sigstore bundle that parses), not model content.

    Signing leaves such files out (an older signature, or one written under another name, is
    never signed as part of the model): a signature over a signature file would break as soon
    as that file is replaced, and says nothing about the weights.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
            if not _may_be_bundle(head):
                return False
            data = head + handle.read(MAX_SIGNATURE_BYTES + 1 - len(head))
    except OSError:
        return False
    return _is_bundle(data)


def _may_be_bundle(head: bytes) -> bool:
    return head.lstrip().startswith(b"{") and _BUNDLE_MARK in head


def _is_bundle(data: bytes) -> bool:
    if len(data) > MAX_SIGNATURE_BYTES:
        return False
    from weightvault.oms.bundle import parse_bundle

    try:
        parse_bundle(data)
    except FormatError:
        return False
    return True


def _is_signature_object(source: S3Object) -> bool:
    """:func:`is_signature_file` for an object in a bucket (the same test, read by range)."""
    if source.size > MAX_SIGNATURE_BYTES:
        return False
    head = b"".join(source.chunks(0, min(source.size, _SNIFF_BYTES)))
    if not _may_be_bundle(head):
        return False
    return _is_bundle(head + b"".join(source.chunks(len(head), source.size)))


def _is_signature(f: ModelFile) -> bool:
    if f.size > MAX_SIGNATURE_BYTES or f.is_symlink:
        return False
    return _is_signature_object(f.source) if f.source is not None else is_signature_file(f.path)


def _jobs(files: Iterable[ModelFile], shard_size: int | None) -> list[tuple[str, HashJob]]:
    """One job per file, or (``shard_size``) files cut into shards; an empty file is one empty
    shard (model-signing drops it, which lets an empty file be added or removed unnoticed)."""
    jobs: list[tuple[str, HashJob]] = []
    for f in files:
        if shard_size is None:
            jobs.append((f.name, HashJob(f.path, f.name, f.size, reader=f.source)))
        elif f.size == 0:
            jobs.append((shard_name(f.name, 0, 0), HashJob(f.path, f.name, 0, 0, 0, f.source)))
        else:
            for start in range(0, f.size, shard_size):
                end = min(start + shard_size, f.size)
                job = HashJob(f.path, f.name, end - start, start, end, f.source)
                jobs.append((shard_name(f.name, start, end), job))
    return jobs


def hash_files(
    files: Iterable[ModelFile],
    serialization: Serialization,
    *,
    max_workers: int | None = None,
    progress: ProgressCallback | None = None,
    cluster: str | None = None,
) -> list[Resource]:
    """The resources ``files`` make under ``serialization`` (in the order of the jobs);
    ``cluster`` hashes them on a Ray cluster."""
    shard_size = serialization.shard_size if serialization.method == "shards" else None
    named = _jobs(files, shard_size)
    digests = hash_jobs(
        [job for _, job in named],
        serialization.hash_type,
        max_workers=max_workers,
        progress=progress,
        cluster=cluster,
    )
    algorithm = serialization.resource_algorithm
    return [Resource(name, d, algorithm) for (name, _), d in zip(named, digests, strict=True)]


@dataclass(frozen=True)
class ModelPlan:
    """A model listed once: the files a signature will cover and how they will be hashed."""

    model_path: Path
    tree: ModelTree
    """The files to hash (signature files already left out)."""
    options: ManifestOptions
    left_out: tuple[str, ...] = ()
    """Signature files found in the model, left out of it and recorded as ignored."""

    @property
    def total_size(self) -> int:
        """Bytes to hash."""
        return self.tree.total_size

    def serialization(self) -> Serialization:
        options = self.options
        return Serialization(
            options.method,
            options.hash_type,
            options.allow_symlinks,
            tuple(self.tree.ignored),
            options.recorded_shard_size,
        )

    def manifest(self, *, progress: ProgressCallback | None = None) -> Manifest:
        """Hash the planned files (``progress`` replaces the options' callback if given)."""
        resources = hash_files(
            self.tree.files,
            self.serialization(),
            max_workers=self.options.max_workers,
            progress=progress or self.options.progress,
            cluster=self.options.cluster,
        )
        return Manifest.build(_model_name(self.model_path), resources, self.serialization())


def plan_model(
    model_path: PathLike,
    *,
    signature_path: PathLike | None = None,
    options: ManifestOptions | None = None,
    **keywords: Unpack[ManifestKeywords],
) -> ModelPlan:
    """List the model once, leaving out ``signature_path`` and every signature file in it.

    A single-file model that is itself a signature, or one the signature would overwrite, is
    refused (:class:`UsageError`).
    """
    opts = ManifestOptions.merge(options, keywords)
    if is_object_url(model_path):
        tree = walk_object_store(
            str(model_path), ignore_paths=opts.ignore_paths, ignore_git_paths=opts.ignore_git_paths
        )
        root = tree.root
    else:
        root = Path(model_path)
        sig = Path(signature_path) if signature_path is not None else None
        if sig is not None and root.is_file() and os.path.realpath(sig) == os.path.realpath(root):
            raise UsageError(f"{root}: the signature would overwrite the model it signs")
        tree = walk_model(
            root,
            ignore_paths=[*opts.ignore_paths, *signature_ignore(root, sig)],
            ignore_git_paths=opts.ignore_git_paths,
            allow_symlinks=opts.allow_symlinks,
        )
    left_out = tuple(f.name for f in tree.files if _is_signature(f))
    if left_out and tree.is_single_file:
        raise UsageError(f"{root}: is a signature (a Sigstore bundle), not a model to sign")
    return ModelPlan(root, tree.without(left_out) if left_out else tree, opts, left_out)


def compute_manifest(
    model_path: PathLike,
    *,
    signature_path: PathLike | None = None,
    options: ManifestOptions | None = None,
    **keywords: Unpack[ManifestKeywords],
) -> Manifest:
    """Hash a model into the manifest a signature would carry (nothing is signed or written).

    Signature files inside the model are left out and recorded as ignored (verifiers, the
    ``model-signing`` one included, then skip them too); a single-file model that is itself a
    signature is refused.
    """
    plan = plan_model(model_path, signature_path=signature_path, options=options, **keywords)
    return plan.manifest()


def digest(
    model_path: PathLike,
    *,
    options: ManifestOptions | None = None,
    **keywords: Unpack[ManifestKeywords],
) -> Manifest:
    """The model's manifest: ``root_digest`` pins it, ``resources`` hold per-file digests.

    The default signature file (``model.sig``) is ignored, as when signing.
    """
    signature_path = default_signature_path(model_path)
    return compute_manifest(model_path, signature_path=signature_path, options=options, **keywords)


@dataclass(frozen=True)
class SignedModel:
    """A signature ready to be written: what :func:`sign` writes, returned before writing."""

    manifest: Manifest
    payload: bytes
    bundle_json: bytes = field(repr=False)
    signer: SignerIdentity
    left_out: tuple[str, ...] = ()
    """Signature files found in the model and left out of it (recorded as ignored)."""


@dataclass(frozen=True)
class SignResult:
    """What :func:`sign` did."""

    model_path: Path
    signature_path: Path
    manifest: Manifest
    signer: SignerIdentity
    left_out: tuple[str, ...] = ()
    """Signature files found in the model and left out of the signature."""

    def to_json(self) -> dict[str, Any]:
        return {
            "model": str(self.model_path),
            "signature": str(self.signature_path),
            "root_digest": self.manifest.root_digest.hex(),
            "serialization": self.manifest.serialization.to_json_obj(),
            "resources": len(self.manifest.resources),
            "signer": identity_json(self.signer),
            "left_out": list(self.left_out),
        }


def identity_json(identity: SignerIdentity | None) -> dict[str, Any] | None:
    if identity is None:
        return None
    return {
        "method": identity.method,
        "subject": identity.subject,
        "issuer": identity.issuer,
        "key_fingerprint": identity.key_fingerprint,
    }


def sign_manifest(
    manifest: Manifest, signer: Signer, *, left_out: tuple[str, ...] = ()
) -> SignedModel:
    """Sign ``manifest``'s in-toto statement; nothing is written."""
    payload = manifest.to_payload()
    bundle_json = signer.sign(INTOTO_PAYLOAD_TYPE, payload)
    return SignedModel(manifest, payload, bundle_json, signer.identity, left_out)


def prepare_signature(
    model_path: PathLike,
    signer: Signer,
    *,
    signature_path: PathLike | None = None,
    options: ManifestOptions | None = None,
    **keywords: Unpack[ManifestKeywords],
) -> SignedModel:
    """Hash and sign a model, returning the bundle without writing it."""
    sig = signature_path_for(model_path, signature_path)
    plan = plan_model(model_path, signature_path=sig, options=options, **keywords)
    return sign_manifest(plan.manifest(), signer, left_out=plan.left_out)


def write_signature(signed: SignedModel, signature_path: PathLike, *, force: bool = True) -> Path:
    """Write the bundle atomically; an existing signature is replaced only with ``force``
    (the default here; the command line asks for it explicitly)."""
    target = Path(signature_path)
    with atomic_output(target, force=force) as handle:
        handle.write(signed.bundle_json)
    return target


def sign(
    model_path: PathLike,
    signer: Signer,
    *,
    signature_path: PathLike | None = None,
    options: ManifestOptions | None = None,
    **keywords: Unpack[ManifestKeywords],
) -> SignResult:
    """Sign a model (a file or a folder) and write the signature (default ``model.sig``)."""
    sig = signature_path_for(model_path, signature_path)
    signed = prepare_signature(model_path, signer, signature_path=sig, options=options, **keywords)
    write_signature(signed, sig)
    return SignResult(Path(model_path), sig, signed.manifest, signed.signer, signed.left_out)
