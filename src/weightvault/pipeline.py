"""Sign, check or digest a model end to end, listing it once.

:func:`sign_model` is the whole of ``weightvault sign``: list the model, scan the files it
will vouch for, hash them, sign the manifest, record the signature in a transparency log, write
it. :func:`check_model` is ``weightvault verify`` (the log's inclusion proof first, then the
files), :func:`digest_model` is ``weightvault digest``. The command line only parses arguments
and prints what these return; the steps are the public APIs of :mod:`weightvault.signing`,
:mod:`weightvault.scan` and :mod:`weightvault.tlog`, which stay independent of each other: this
module, above them, is the only place that knows their order.

Scanning and logging are imported only when asked for, so a plain ``sign`` starts fast.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Unpack

from weightvault._fs import ensure_writable_destination
from weightvault.errors import UsageError
from weightvault.hashing import ProgressDisplay, reporting
from weightvault.signing import (
    ManifestKeywords,
    ManifestOptions,
    SignedModel,
    Signer,
    SignResult,
    VerificationResult,
    Verifier,
    check,
    default_signature_path,
    plan_model,
    read_signature,
    sign_manifest,
    signature_path_for,
    write_signature,
)
from weightvault.signing.options import CheckKeywords, PathLike
from weightvault.tree.s3 import is_object_url

if TYPE_CHECKING:
    from weightvault.oms.manifest import Manifest
    from weightvault.signing import ModelPlan
    from weightvault.tlog.checkpoint import WitnessPolicy
    from weightvault.tlog.note import VerifierKey

__all__ = [
    "LogRequirement",
    "LogTarget",
    "ScanPolicy",
    "check_model",
    "digest_model",
    "sign_model",
]


@dataclass(frozen=True)
class ScanPolicy:
    """Refuse to vouch for a model that would run code when loaded.

    Every file the signature will cover is scanned first; a finding at or above ``fail_on``
    (``unknown``, the default, or ``dangerous``; ``suspicious`` is ``unknown``'s old name)
    stops the signing, naming every such finding. ``allow`` lists trusted imports
    (``module.name``).
    """

    fail_on: str = "unknown"
    allow: tuple[str, ...] = ()


@dataclass(frozen=True)
class LogTarget:
    """Record the signature in a transparency log; the bundle then carries the entry and its
    inclusion proof (key-based verifiers that know no logs ignore it)."""

    location: str
    """The log: a SQLite file or a ``postgresql://`` URL."""
    key: str
    """The log's checkpoint signing key: a key file or a ``pkcs11:`` URI."""


@dataclass(frozen=True)
class LogRequirement:
    """Accept a signature only with an inclusion proof from this log (checked offline)."""

    key: VerifierKey
    """The log's public key."""
    witnesses: WitnessPolicy | None = None
    """Witness cosignatures the checkpoint needs, if any."""


def _scan(plan: ModelPlan, policy: ScanPolicy) -> None:
    from weightvault.scan import Severity, verify_paths

    files = [f.path for f in plan.tree.files]
    verify_paths(files, fail_on=Severity.parse(policy.fail_on), allow=policy.allow)


def _record(signed: SignedModel, log: LogTarget) -> SignedModel:
    from weightvault.tlog.bundle import record_bundle_at

    return replace(signed, bundle_json=record_bundle_at(log.location, log.key, signed.bundle_json))


def sign_model(
    model_path: PathLike,
    signer: Signer,
    *,
    signature_path: PathLike | None = None,
    scan_policy: ScanPolicy | None = None,
    log: LogTarget | None = None,
    force: bool = False,
    options: ManifestOptions | None = None,
    progress_display: ProgressDisplay | None = None,
    **keywords: Unpack[ManifestKeywords],
) -> SignResult:
    """Sign a model (a file or a folder) and write its signature (default ``model.sig``).

    In order: refuse an existing signature unless ``force`` (before any work); list the model
    once (signature files in it are left out, and listed in the result); scan the files with
    ``scan_policy``; hash them (``progress_display`` is opened with the number of bytes);
    sign; record in ``log``; write the signature atomically. Options as for
    :func:`weightvault.signing.sign`.
    """
    sig = signature_path_for(model_path, signature_path)
    ensure_writable_destination(sig, force=force)
    if scan_policy is not None and is_object_url(model_path):
        raise UsageError(
            f"{model_path}: scanning reads local files; scan a local copy of the model"
        )
    plan = plan_model(model_path, signature_path=sig, options=options, **keywords)
    if scan_policy is not None:
        _scan(plan, scan_policy)
    with reporting(plan.total_size, progress_display) as advance:
        manifest = plan.manifest(progress=advance)
    signed = sign_manifest(manifest, signer, left_out=plan.left_out)
    if log is not None:
        signed = _record(signed, log)
    write_signature(signed, sig, force=force)
    return SignResult(Path(model_path), sig, manifest, signed.signer, signed.left_out)


def check_model(
    model_path: PathLike,
    verifier: Verifier,
    *,
    signature_path: PathLike | None = None,
    log: LogRequirement | None = None,
    **keywords: Unpack[CheckKeywords],
) -> VerificationResult:
    """Check a model against its signature, reporting every problem (as
    :func:`weightvault.signing.check`, with the same keywords); with ``log``, the signature's
    inclusion proof must verify first (:class:`~weightvault.errors.VerificationError` if not)."""
    if log is not None:
        from weightvault.tlog.bundle import verify_bundle_log_entry

        sig = signature_path_for(model_path, signature_path)
        verify_bundle_log_entry(read_signature(sig), log.key, witnesses=log.witnesses)
    return check(model_path, signature_path, verifier, **keywords)


def digest_model(
    model_path: PathLike,
    *,
    options: ManifestOptions | None = None,
    progress_display: ProgressDisplay | None = None,
    **keywords: Unpack[ManifestKeywords],
) -> Manifest:
    """The manifest a signature would carry (as :func:`weightvault.signing.digest`), with
    ``progress_display`` opened once the number of bytes to hash is known."""
    signature_path = None if is_object_url(model_path) else default_signature_path(model_path)
    plan = plan_model(model_path, signature_path=signature_path, options=options, **keywords)
    with reporting(plan.total_size, progress_display) as advance:
        return plan.manifest(progress=advance)
