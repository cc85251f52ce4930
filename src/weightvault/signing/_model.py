"""Signing and verifying model trees: from files to a manifest, to a bundle, and back.

The one pipeline every method shares:

    walk_model -> hash jobs -> Manifest -> in-toto payload -> Signer.sign -> bundle JSON -> file

and for verification:

    bundle JSON -> Verifier.verify -> payload -> Manifest (signed) -> rehash the model with the
    signed parameters -> compare by file name (changed / missing / extra).

:func:`prepare_signature` is the seam for later steps (scanning before signing, logging the
bundle in a transparency log): it returns the bundle without writing it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from weightvault._fs import atomic_output
from weightvault.errors import FormatError, InputError, Reason, UsageError, VerificationError
from weightvault.hashing import HashAlgorithm, HashJob, ProgressCallback, hash_jobs
from weightvault.oms.dsse import INTOTO_PAYLOAD_TYPE
from weightvault.oms.manifest import (
    DEFAULT_SHARD_SIZE,
    Manifest,
    Resource,
    Serialization,
    component_key,
    parse_statement,
    shard_name,
    split_shard_name,
)
from weightvault.signing._base import Signer, SignerIdentity, Verifier
from weightvault.tree import (
    DEFAULT_IGNORED_NAMES,
    ModelFile,
    ModelTree,
    SymlinkError,
    normalize_ignore_path,
    walk_model,
)

__all__ = [
    "SIGNATURE_FILE_NAME",
    "SignResult",
    "SignedModel",
    "VerificationResult",
    "check",
    "compute_manifest",
    "default_signature_path",
    "digest",
    "prepare_signature",
    "sign",
    "verify",
    "write_signature",
]

SIGNATURE_FILE_NAME = "model.sig"
#: Largest signature file read (a manifest for a multi-terabyte model is well below this).
_MAX_SIGNATURE_BYTES = 64 * 1024 * 1024
#: Every Sigstore bundle (OMS signatures included) names this media type near its start.
_BUNDLE_MARK = b"application/vnd.dev.sigstore.bundle"
_SNIFF_BYTES = 64 * 1024

PathLike = str | os.PathLike[str]


def default_signature_path(model_path: PathLike) -> Path:
    """``MODEL/model.sig`` for a folder; ``model.sig`` beside a single-file model."""
    root = Path(model_path)
    if root.is_dir():
        return root / SIGNATURE_FILE_NAME
    return root.parent / SIGNATURE_FILE_NAME


def _model_name(root: Path) -> str:
    name = root.name
    if not name or name == "..":
        name = os.path.basename(os.path.abspath(root))
    return name


def _signature_ignore(root: Path, signature_path: Path | None) -> list[str]:
    """The signature file's name inside the model (so signing twice keeps working)."""
    if signature_path is None or not root.is_dir():
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
            if not head.lstrip().startswith(b"{") or _BUNDLE_MARK not in head:
                return False
            data = head + handle.read(_MAX_SIGNATURE_BYTES + 1 - len(head))
    except OSError:
        return False
    if len(data) > _MAX_SIGNATURE_BYTES:
        return False
    from weightvault.oms.bundle import parse_bundle

    try:
        parse_bundle(data)
    except FormatError:
        return False
    return True


def _signature_files(tree: ModelTree) -> list[str]:
    """Names of the files in ``tree`` that are signatures (see :func:`is_signature_file`)."""
    return [
        f.name
        for f in tree.files
        if f.size <= _MAX_SIGNATURE_BYTES and not f.is_symlink and is_signature_file(f.path)
    ]


def _file_jobs(tree_files: Iterable[ModelFile]) -> list[HashJob]:
    return [HashJob(f.path, f.name, f.size) for f in tree_files]


def _shard_jobs(tree_files: Iterable[ModelFile], shard_size: int) -> list[tuple[str, HashJob]]:
    """Cut files into shards; an empty file is one empty shard (model-signing drops it, which
    lets an empty file be added or removed unnoticed)."""
    jobs: list[tuple[str, HashJob]] = []
    for f in tree_files:
        if f.size == 0:
            jobs.append((shard_name(f.name, 0, 0), HashJob(f.path, f.name, 0, 0, 0)))
            continue
        for start in range(0, f.size, shard_size):
            end = min(start + shard_size, f.size)
            jobs.append(
                (shard_name(f.name, start, end), HashJob(f.path, f.name, end - start, start, end))
            )
    return jobs


def _resolve_serialization(
    serialization: str, algorithm: HashAlgorithm, shard_size: int | None
) -> tuple[Literal["files", "shards"], int | None]:
    if serialization not in ("files", "shards"):
        raise ValueError(f"unknown serialization {serialization!r} (expected files or shards)")
    if serialization == "shards":
        size = DEFAULT_SHARD_SIZE if shard_size is None else shard_size
        if size <= 0:
            raise ValueError("shard_size must be positive")
        if algorithm is HashAlgorithm.BLAKE3:
            # BLAKE3 is parallel inside one file; model-signing records such models as files,
            # and so does weightvault, so both tools produce the same manifest.
            return "files", None
        return "shards", size
    return "files", None


def _hash_tree(
    tree: ModelTree,
    serialization: Serialization,
    *,
    max_workers: int | None,
    progress: ProgressCallback | None,
    only: set[str] | None = None,
) -> list[Resource]:
    files = [f for f in tree.files if only is None or f.name in only]
    algorithm = serialization.resource_algorithm
    if serialization.method == "files":
        jobs = _file_jobs(files)
        digests = hash_jobs(
            jobs, serialization.hash_type, max_workers=max_workers, progress=progress
        )
        return [Resource(j.name, d, algorithm) for j, d in zip(jobs, digests, strict=True)]
    assert serialization.shard_size is not None
    named = _shard_jobs(files, serialization.shard_size)
    digests = hash_jobs(
        [j for _, j in named], serialization.hash_type, max_workers=max_workers, progress=progress
    )
    return [Resource(n, d, algorithm) for (n, _), d in zip(named, digests, strict=True)]


def compute_manifest(
    model_path: PathLike,
    *,
    hash_type: str = "sha256",
    serialization: str = "files",
    shard_size: int | None = None,
    ignore_paths: Iterable[PathLike] = (),
    ignore_git_paths: bool = True,
    allow_symlinks: bool = False,
    signature_path: PathLike | None = None,
    max_workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> Manifest:
    """Hash a model into the manifest a signature would carry (nothing is signed or written).

    Signature files inside the model are left out and recorded as ignored (verifiers, the
    ``model-signing`` one included, then skip them too); a single-file model that is itself a
    signature is refused.
    """
    return _compute_manifest(
        model_path,
        hash_type=hash_type,
        serialization=serialization,
        shard_size=shard_size,
        ignore_paths=ignore_paths,
        ignore_git_paths=ignore_git_paths,
        allow_symlinks=allow_symlinks,
        signature_path=signature_path,
        max_workers=max_workers,
        progress=progress,
    )[0]


def _compute_manifest(
    model_path: PathLike,
    *,
    hash_type: str,
    serialization: str,
    shard_size: int | None,
    ignore_paths: Iterable[PathLike],
    ignore_git_paths: bool,
    allow_symlinks: bool,
    signature_path: PathLike | None,
    max_workers: int | None,
    progress: ProgressCallback | None,
) -> tuple[Manifest, tuple[str, ...]]:
    """The manifest, and the signature files that were left out of it."""
    root = Path(model_path)
    algorithm = HashAlgorithm.parse(hash_type)
    method, size = _resolve_serialization(serialization, algorithm, shard_size)
    sig = Path(signature_path) if signature_path is not None else None
    if sig is not None and root.is_file() and os.path.realpath(sig) == os.path.realpath(root):
        raise UsageError(f"{root}: the signature would overwrite the model it signs")
    ignored = [*ignore_paths, *_signature_ignore(root, sig)]
    tree = walk_model(
        root, ignore_paths=ignored, ignore_git_paths=ignore_git_paths, allow_symlinks=allow_symlinks
    )
    left_out = _signature_files(tree)
    if left_out and tree.is_single_file:
        raise UsageError(f"{root}: is a signature (a Sigstore bundle), not a model to sign")
    if left_out:
        tree = walk_model(
            root,
            ignore_paths=[*ignored, *left_out],
            ignore_git_paths=ignore_git_paths,
            allow_symlinks=allow_symlinks,
        )
    params = Serialization(method, algorithm, allow_symlinks, tuple(tree.ignored), size)
    resources = _hash_tree(tree, params, max_workers=max_workers, progress=progress)
    return Manifest.build(_model_name(root), resources, params), tuple(left_out)


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
            "signer": _identity_json(self.signer),
            "left_out": list(self.left_out),
        }


def _identity_json(identity: SignerIdentity | None) -> dict[str, Any] | None:
    if identity is None:
        return None
    return {
        "method": identity.method,
        "subject": identity.subject,
        "issuer": identity.issuer,
        "key_fingerprint": identity.key_fingerprint,
    }


def prepare_signature(
    model_path: PathLike,
    signer: Signer,
    *,
    signature_path: PathLike | None = None,
    hash_type: str = "sha256",
    serialization: str = "files",
    shard_size: int | None = None,
    ignore_paths: Iterable[PathLike] = (),
    ignore_git_paths: bool = True,
    allow_symlinks: bool = False,
    max_workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> SignedModel:
    """Hash and sign a model, returning the bundle without writing it."""
    sig = Path(signature_path) if signature_path is not None else default_signature_path(model_path)
    manifest, left_out = _compute_manifest(
        model_path,
        hash_type=hash_type,
        serialization=serialization,
        shard_size=shard_size,
        ignore_paths=ignore_paths,
        ignore_git_paths=ignore_git_paths,
        allow_symlinks=allow_symlinks,
        signature_path=sig,
        max_workers=max_workers,
        progress=progress,
    )
    payload = manifest.to_payload()
    bundle_json = signer.sign(INTOTO_PAYLOAD_TYPE, payload)
    return SignedModel(manifest, payload, bundle_json, signer.identity, left_out)


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
    hash_type: str = "sha256",
    serialization: str = "files",
    shard_size: int | None = None,
    ignore_paths: Iterable[PathLike] = (),
    ignore_git_paths: bool = True,
    allow_symlinks: bool = False,
    max_workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> SignResult:
    """Sign a model (a file or a folder) and write the signature (default ``model.sig``)."""
    sig = Path(signature_path) if signature_path is not None else default_signature_path(model_path)
    signed = prepare_signature(
        model_path,
        signer,
        signature_path=sig,
        hash_type=hash_type,
        serialization=serialization,
        shard_size=shard_size,
        ignore_paths=ignore_paths,
        ignore_git_paths=ignore_git_paths,
        allow_symlinks=allow_symlinks,
        max_workers=max_workers,
        progress=progress,
    )
    write_signature(signed, sig)
    return SignResult(Path(model_path), sig, signed.manifest, signed.signer, signed.left_out)


def digest(
    model_path: PathLike,
    *,
    hash_type: str = "sha256",
    serialization: str = "files",
    shard_size: int | None = None,
    ignore_paths: Iterable[PathLike] = (),
    ignore_git_paths: bool = True,
    allow_symlinks: bool = False,
    max_workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> Manifest:
    """The model's manifest: ``root_digest`` pins it, ``resources`` hold per-file digests.

    The default signature file (``model.sig``) is ignored, as when signing.
    """
    return compute_manifest(
        model_path,
        hash_type=hash_type,
        serialization=serialization,
        shard_size=shard_size,
        ignore_paths=ignore_paths,
        ignore_git_paths=ignore_git_paths,
        allow_symlinks=allow_symlinks,
        signature_path=default_signature_path(model_path),
        max_workers=max_workers,
        progress=progress,
    )


@dataclass(frozen=True)
class VerificationResult:
    """The outcome of checking a model against a signature; lists every problem found."""

    model_path: Path
    signature_path: Path
    signer: SignerIdentity | None
    manifest: Manifest | None
    """The signed manifest (``None`` when the signature itself did not verify)."""
    signature_error: str | None = None
    changed: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    symlinks: tuple[str, ...] = ()
    """Files that are symlinks where the signature does not allow them."""
    unsigned: tuple[str, ...] = ()
    """Files the signature does not cover, left unchecked on request (``ignore_unsigned_files``);
    otherwise they are ``extra``."""

    @property
    def ok(self) -> bool:
        return not (
            self.signature_error or self.changed or self.missing or self.extra or self.symlinks
        )

    def problems(self) -> list[str]:
        """One line per problem, for people."""
        lines = []
        if self.signature_error:
            lines.append(self.signature_error)
        lines += [f"changed: {name}" for name in self.changed]
        lines += [f"missing: {name}" for name in self.missing]
        lines += [f"extra: {name}" for name in self.extra]
        lines += [f"symlink not allowed: {name}" for name in self.symlinks]
        return lines

    def summary(self) -> str:
        """One line: what failed, naming files (the first few)."""
        if self.ok:
            return f"{self.model_path}: signature OK"
        if self.signature_error:
            return f"{self.model_path}: {self.signature_error}"
        parts = []
        for label, names in (
            ("changed", self.changed),
            ("missing", self.missing),
            ("extra", self.extra),
            ("symlink not allowed", self.symlinks),
        ):
            if names:
                shown = ", ".join(names[:5]) + (
                    f" (+{len(names) - 5} more)" if len(names) > 5 else ""
                )
                parts.append(f"{label}: {shown}")
        return f"{self.model_path}: model does not match its signature; " + "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "model": str(self.model_path),
            "signature": str(self.signature_path),
            "signer": _identity_json(self.signer),
            "signature_error": self.signature_error,
            "root_digest": self.manifest.root_digest.hex()
            if self.manifest is not None and not self.manifest.legacy
            else None,
            "serialization": self.manifest.serialization.to_json_obj()
            if self.manifest is not None
            else None,
            "changed": list(self.changed),
            "missing": list(self.missing),
            "extra": list(self.extra),
            "symlinks": list(self.symlinks),
            "unsigned_ignored": list(self.unsigned),
        }


def read_signature(signature_path: PathLike) -> bytes:
    target = Path(signature_path)
    try:
        if target.is_dir():
            raise InputError(f"{target}: is a directory; expected a signature file")
        with open(target, "rb") as handle:
            data = handle.read(_MAX_SIGNATURE_BYTES + 1)
    except FileNotFoundError as exc:
        raise InputError(
            f"{target}: no such signature file",
            hint="sign the model first, or give the signature's path",
            remedy="signature-path",
            reason=Reason.NOT_FOUND,
        ) from exc
    except PermissionError as exc:
        raise InputError(f"{target}: permission denied reading the signature") from exc
    except OSError as exc:
        raise InputError(f"{target}: cannot read the signature ({exc.strerror})") from exc
    if len(data) > _MAX_SIGNATURE_BYTES:
        raise FormatError(f"{target}: too large to be a signature")
    return data


def _verify_ignores(signed: Manifest) -> list[str]:
    """Ignored paths to use when rehashing: the signed ones, or the old default (git paths)."""
    recorded = signed.serialization.ignore_paths
    if recorded is not None:
        return list(recorded)
    # Older signatures recorded nothing; their signers ignored git paths unless told otherwise,
    # so ignore them except where the signature covers them.
    names = [r.name for r in signed.resources]
    if signed.serialization.method == "shards":
        names = [split_shard_name(n, "resource")[0] for n in names]
    covered = {n.split("/")[0] for n in names}
    return [n for n in DEFAULT_IGNORED_NAMES if n not in covered]


def _file_of(resource_name: str, method: str) -> str:
    if method == "shards":
        return split_shard_name(resource_name, "resource")[0]
    return resource_name


def _compare(
    signed: Manifest,
    tree: ModelTree,
    *,
    max_workers: int | None,
    progress: ProgressCallback | None,
) -> tuple[list[str], list[str], list[str]]:
    method = signed.serialization.method
    signed_files: dict[str, list[Resource]] = {}
    for resource in signed.resources:
        signed_files.setdefault(_file_of(resource.name, method), []).append(resource)
    local_files = {f.name: f for f in tree.files}
    missing = [n for n in signed_files if n not in local_files]
    extra = [n for n in local_files if n not in signed_files]
    present = {n for n in signed_files if n in local_files}
    changed: set[str] = set()
    if method == "shards":
        # A file whose size differs from its signed extent changed; no need to read it.
        for name in list(present):
            last_end = max(split_shard_name(r.name, "resource")[2] for r in signed_files[name])
            if local_files[name].size != last_end:
                changed.add(name)
                present.discard(name)
    local = _hash_tree(
        tree, signed.serialization, max_workers=max_workers, progress=progress, only=present
    )
    local_by_file: dict[str, dict[str, bytes]] = {}
    for resource in local:
        local_by_file.setdefault(_file_of(resource.name, method), {})[resource.name] = (
            resource.digest
        )
    import hmac

    for name in present:
        want = {r.name: r.digest for r in signed_files[name]}
        have = local_by_file.get(name, {})
        if want.keys() != have.keys() or not all(
            hmac.compare_digest(want[k], have[k]) for k in want
        ):
            changed.add(name)
    return (
        sorted(changed, key=component_key),
        sorted(missing, key=component_key),
        sorted(extra, key=component_key),
    )


def check(
    model_path: PathLike,
    signature_path: PathLike | None,
    verifier: Verifier,
    *,
    ignore_paths: Iterable[PathLike] = (),
    ignore_unsigned_files: bool = False,
    max_workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> VerificationResult:
    """Check a model against its signature and report every problem (never raises for them).

    ``ignore_unsigned_files`` (``model-signing``'s option of that name) checks only the files the
    signature covers: files added since are listed as ``unsigned``, not as ``extra``. Every
    signed file must still be present and unchanged.

    Raises :class:`InputError` / :class:`FormatError` when the check cannot run (missing model
    or signature, malformed bundle or payload).
    """
    root = Path(model_path)
    if not root.exists() and not root.is_symlink():
        raise InputError(f"{root}: no such file or directory; check the model path")
    sig = Path(signature_path) if signature_path is not None else default_signature_path(root)
    bundle_json = read_signature(sig)
    # 1. Authenticity: the method checks the bundle and returns the payload it vouches for.
    try:
        verified = verifier.verify(bundle_json)
    except VerificationError as exc:
        return VerificationResult(root, sig, None, None, signature_error=exc.message)
    # 2. The payload must be an OMS in-toto statement; parse it strictly.
    if verified.payload_type != INTOTO_PAYLOAD_TYPE:
        raise FormatError(
            f"dsseEnvelope.payloadType: {verified.payload_type!r} is not {INTOTO_PAYLOAD_TYPE}"
        )
    signed = parse_statement(verified.payload)
    # 3. Rehash the model with the signed parameters and compare by name.
    ignored = _verify_ignores(signed)
    ignored += [str(p) for p in ignore_paths]
    ignored += _signature_ignore(root, sig)
    signed_files = {_file_of(r.name, signed.serialization.method) for r in signed.resources}
    unsigned_links: list[str] = []
    while True:
        try:
            tree = walk_model(
                root,
                ignore_paths=[*ignored, *unsigned_links],
                ignore_git_paths=False,
                allow_symlinks=signed.serialization.allow_symlinks,
            )
            break
        except SymlinkError as exc:
            if exc.name == ".":
                raise  # the path the user gave is a link: a usage problem, not tampering
            if ignore_unsigned_files and exc.name not in signed_files:
                unsigned_links.append(exc.name)  # not covered, not checked: leave it out
                continue
            return VerificationResult(root, sig, verified.signer, signed, symlinks=(exc.name,))
        except InputError as exc:
            if exc.reason is not Reason.NO_FILES:
                raise
            names = sorted(signed_files, key=component_key)
            return VerificationResult(root, sig, verified.signer, signed, missing=tuple(names))
    if tree.is_single_file != all(
        _file_of(r.name, signed.serialization.method) == "." for r in signed.resources
    ):
        kind = "a single file" if tree.is_single_file else "a folder"
        raise InputError(
            f"{root}: is {kind}, but the signature covers "
            + ("a folder" if tree.is_single_file else "a single file")
            + "; check the model path"
        )
    changed, missing, extra = _compare(signed, tree, max_workers=max_workers, progress=progress)
    unsigned: list[str] = []
    if ignore_unsigned_files:
        unsigned = sorted([*extra, *unsigned_links], key=component_key)
        extra = []
    return VerificationResult(
        root,
        sig,
        verified.signer,
        signed,
        changed=tuple(changed),
        missing=tuple(missing),
        extra=tuple(extra),
        unsigned=tuple(unsigned),
    )


def verify(
    model_path: PathLike,
    signature_path: PathLike | None,
    verifier: Verifier,
    *,
    ignore_paths: Iterable[PathLike] = (),
    ignore_unsigned_files: bool = False,
    max_workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> VerificationResult:
    """Like :func:`check`, but raise :class:`VerificationError` unless everything matches."""
    result = check(
        model_path,
        signature_path,
        verifier,
        ignore_paths=ignore_paths,
        ignore_unsigned_files=ignore_unsigned_files,
        max_workers=max_workers,
        progress=progress,
    )
    if not result.ok:
        raise VerificationError(result.summary())
    return result
