"""Verifying model trees against their signatures.

    bundle JSON -> Verifier.verify -> payload -> Manifest (signed) -> rehash the model with the
    signed parameters -> compare by file name (changed / missing / extra).

:func:`check` reports every problem (never raises for them); :func:`verify` raises on any.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Unpack

from weightvault.errors import FormatError, InputError, Reason, VerificationError
from weightvault.hashing import ProgressCallback, ProgressDisplay, reporting
from weightvault.oms.dsse import INTOTO_PAYLOAD_TYPE
from weightvault.oms.manifest import Manifest, component_key, parse_statement, split_shard_name
from weightvault.signing._base import SignerIdentity, Verifier
from weightvault.signing._model import (
    MAX_SIGNATURE_BYTES,
    default_signature_path,
    hash_files,
    identity_json,
    signature_ignore,
)
from weightvault.signing._pem import read_input_file
from weightvault.signing.options import CheckKeywords, PathLike
from weightvault.tree import DEFAULT_IGNORED_NAMES, ModelTree, SymlinkError, walk_model
from weightvault.tree.s3 import is_object_url, walk_object_store

__all__ = ["VerificationResult", "check", "read_signature", "verify"]


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

    def _labelled(self) -> list[tuple[str, tuple[str, ...]]]:
        return [
            ("changed", self.changed),
            ("missing", self.missing),
            ("extra", self.extra),
            ("symlink not allowed", self.symlinks),
        ]

    def problems(self) -> list[str]:
        """One line per problem, for people."""
        lines = [self.signature_error] if self.signature_error else []
        for label, names in self._labelled():
            lines += [f"{label}: {name}" for name in names]
        return lines

    def summary(self) -> str:
        """One line: what failed, naming files (the first few)."""
        if self.ok:
            return f"{self.model_path}: signature OK"
        if self.signature_error:
            return f"{self.model_path}: {self.signature_error}"
        parts = []
        for label, names in self._labelled():
            if names:
                more = f" (+{len(names) - 5} more)" if len(names) > 5 else ""
                parts.append(f"{label}: {', '.join(names[:5])}{more}")
        return f"{self.model_path}: model does not match its signature; " + "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        manifest = self.manifest
        return {
            "ok": self.ok,
            "model": str(self.model_path),
            "signature": str(self.signature_path),
            "signer": identity_json(self.signer),
            "signature_error": self.signature_error,
            "root_digest": manifest.root_digest.hex()
            if manifest is not None and not manifest.legacy
            else None,
            "serialization": manifest.serialization.to_json_obj() if manifest else None,
            "changed": list(self.changed),
            "missing": list(self.missing),
            "extra": list(self.extra),
            "symlinks": list(self.symlinks),
            "unsigned_ignored": list(self.unsigned),
        }


def read_signature(signature_path: PathLike) -> bytes:
    """The signature file's bytes (bounded); a missing file says how to get one."""
    return read_input_file(
        signature_path,
        "signature",
        MAX_SIGNATURE_BYTES,
        hint="sign the model first, or give the signature's path",
        remedy="signature-path",
    )


def _verify_ignores(signed: Manifest) -> list[str]:
    """Ignored paths to use when rehashing: the signed ones, or the old default (git paths)."""
    recorded = signed.serialization.ignore_paths
    if recorded is not None:
        return list(recorded)
    # Older signatures recorded nothing; their signers ignored git paths unless told otherwise,
    # so ignore them except where the signature covers them.
    covered = {_file_of(r.name, signed).split("/")[0] for r in signed.resources}
    return [n for n in DEFAULT_IGNORED_NAMES if n not in covered]


def _file_of(resource_name: str, signed: Manifest) -> str:
    if signed.serialization.method == "shards":
        return split_shard_name(resource_name, "resource")[0]
    return resource_name


def _compare(
    signed: Manifest,
    tree: ModelTree,
    *,
    max_workers: int | None,
    progress: ProgressCallback | None,
    cluster: str | None = None,
) -> tuple[list[str], list[str], list[str]]:
    signed_files: dict[str, dict[str, bytes]] = {}
    for resource in signed.resources:
        signed_files.setdefault(_file_of(resource.name, signed), {})[resource.name] = (
            resource.digest
        )
    local_files = {f.name: f for f in tree.files}
    missing = [n for n in signed_files if n not in local_files]
    extra = [n for n in local_files if n not in signed_files]
    present = {n for n in signed_files if n in local_files}
    changed: set[str] = set()
    if signed.serialization.method == "shards":
        # A file whose size differs from its signed extent changed; no need to read it.
        for name in list(present):
            last_end = max(split_shard_name(r, "resource")[2] for r in signed_files[name])
            if local_files[name].size != last_end:
                changed.add(name)
                present.discard(name)
    local = hash_files(
        [f for f in tree.files if f.name in present],
        signed.serialization,
        max_workers=max_workers,
        progress=progress,
        cluster=cluster,
    )
    local_by_file: dict[str, dict[str, bytes]] = {}
    for resource in local:
        local_by_file.setdefault(_file_of(resource.name, signed), {})[resource.name] = (
            resource.digest
        )
    for name in present:
        want = signed_files[name]
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
    cluster: str | None = None,
    progress: ProgressCallback | None = None,
    progress_display: ProgressDisplay | None = None,
) -> VerificationResult:
    """Check a model against its signature and report every problem (never raises for them).

    ``ignore_unsigned_files`` (``model-signing``'s option of that name) checks only the files the
    signature covers: files added since are listed as ``unsigned``, not as ``extra``. Every
    signed file must still be present and unchanged. ``cluster`` (a Ray address or ``auto``)
    rehashes on a Ray cluster. ``progress_display``, if given, is opened
    with the number of bytes to rehash once the model is listed (instead of ``progress``).

    Raises :class:`InputError` / :class:`FormatError` when the check cannot run (missing model
    or signature, malformed bundle or payload).
    """
    in_bucket = is_object_url(model_path)
    root = Path(model_path)
    if not in_bucket and not root.exists() and not root.is_symlink():
        raise InputError(
            f"{root}: no such file or directory; check the model path", reason=Reason.NOT_FOUND
        )
    if signature_path is not None:
        sig = Path(signature_path)
    else:
        sig = default_signature_path(model_path if in_bucket else root)
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
    ignored = [*_verify_ignores(signed), *map(str, ignore_paths), *signature_ignore(root, sig)]
    signed_files = {_file_of(r.name, signed) for r in signed.resources}
    unsigned_links: list[str] = []
    while True:
        try:
            if in_bucket:
                tree = walk_object_store(
                    str(model_path), ignore_paths=ignored, ignore_git_paths=False
                )
                break
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
    if tree.is_single_file != (signed_files == {"."}):
        kind, signed_kind = (
            ("a single file", "a folder")
            if tree.is_single_file
            else (
                "a folder",
                "a single file",
            )
        )
        raise InputError(
            f"{root}: is {kind}, but the signature covers {signed_kind}; check the model path"
        )
    with reporting(tree.total_size, progress_display, progress) as advance:
        changed, missing, extra = _compare(
            signed, tree, max_workers=max_workers, progress=advance, cluster=cluster
        )
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
    **keywords: Unpack[CheckKeywords],
) -> VerificationResult:
    """Like :func:`check`, but raise :class:`VerificationError` unless everything matches."""
    result = check(model_path, signature_path, verifier, **keywords)
    if not result.ok:
        raise VerificationError(result.summary())
    return result
