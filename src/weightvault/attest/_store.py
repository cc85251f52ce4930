"""Where attestations live beside a model, and checking the ones a consumer requires.

A model's attestations are files in the folder ``MODEL.attestations/`` next to the model
(``models/tiny`` -> ``models/tiny.attestations/``; ``data/train.parquet`` ->
``data/train.parquet.attestations/``), one Sigstore bundle each, named
``KIND-HASH.sigstore.json`` (``HASH``: the first 16 hex digits of the signed statement's
SHA-256: the same statement stored twice is one file, and a re-signed one replaces it only with
``force``). The folder sits outside the model: adding an attestation never changes the model's
files, its OMS root digest, or a signature made before (``model-signing`` verifies the model as
it was).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightvault import _interrupt
from weightvault._fs import atomic_output
from weightvault.attest._predicates import (
    EVAL_RESULTS,
    kind_of,
    predicate_type_for,
    threshold_failures,
)
from weightvault.attest._sign import (
    AttestationError,
    AttestationFailure,
    LogCheck,
    VerifiedAttestation,
    verify_attestation,
)
from weightvault.attest._statement import Subject, digest_subject
from weightvault.errors import FormatError, InputError, Reason

if TYPE_CHECKING:
    from weightvault.attest._layouts import ByteRange
    from weightvault.attest._rowgroups import VerifiedShard
    from weightvault.oms.manifest import Manifest, Serialization
    from weightvault.signing import Signer, Verifier

__all__ = [
    "ATTESTATIONS_SUFFIX",
    "AttestationCheck",
    "StoredAttestation",
    "attest_row_groups",
    "attestations_dir",
    "check_attestations",
    "list_attestations",
    "open_dataset_shard",
    "require_attestations",
    "select_required",
    "store_attestation",
    "verify_dataset_rows",
]

ATTESTATIONS_SUFFIX = ".attestations"
_FILE_SUFFIX = ".sigstore.json"
#: Largest attestation file read.
MAX_ATTESTATION_BYTES = 16 * 1024 * 1024


def attestations_dir(model_path: str | os.PathLike[str]) -> Path:
    """``MODEL.attestations`` beside the model (a folder or a single file)."""
    root = Path(model_path)
    if root.name in ("", ".", ".."):
        root = Path(os.path.abspath(root))
    return root.parent / f"{root.name}{ATTESTATIONS_SUFFIX}"


def store_attestation(
    model_path: str | os.PathLike[str],
    bundle_json: bytes,
    kind: str,
    *,
    output: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> Path:
    """Write a signed attestation atomically: to ``output`` if given, else into the model's
    attestation folder (created if needed) under its content name; returns the path."""
    created: Path | None = None
    if output is not None:
        target = Path(output)
    else:
        folder = attestations_dir(model_path)
        with _interrupt.deferred():  # the folder is removed again if the command is stopped
            if not folder.is_dir():
                folder.mkdir()
                created = folder
                _interrupt.record_created(folder)
        target = folder / f"{kind}-{_statement_name(bundle_json)}{_FILE_SUFFIX}"
        if target.exists() and target.read_bytes() == bundle_json:
            return target  # the same attestation stored twice is one file
    try:
        with atomic_output(target, force=force) as handle:
            handle.write(bundle_json)
    except BaseException:
        if created is not None:
            with contextlib.suppress(OSError):
                created.rmdir()
        raise
    return target


def _statement_name(bundle_json: bytes) -> str:
    """The first 16 hex digits of the SHA-256 of the signed statement: the same statement
    (re-signed) keeps its name, so it replaces the old one only when asked to."""
    from weightvault.oms.bundle import parse_bundle

    return hashlib.sha256(parse_bundle(bundle_json).payload).hexdigest()[:16]


@dataclass(frozen=True)
class StoredAttestation:
    """An attestation file as found, *not verified*: what it claims, for listing."""

    path: Path
    predicate_type: str | None
    subjects: tuple[Subject, ...]
    claimed_signer: str | None
    """The key hint or certificate identity the bundle names (unchecked)."""
    error: str | None = None
    """Why the file could not be read as an attestation, if it could not."""

    @property
    def kind(self) -> str | None:
        return kind_of(self.predicate_type) if self.predicate_type else None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "predicate_type": self.predicate_type,
            "subjects": [
                {"name": s.name, "role": s.role, "root_digest": s.digest.hex()}
                for s in self.subjects
            ],
            "claimed_signer": self.claimed_signer,
            "verified": False,
            "error": self.error,
        }


def _read(path: Path) -> bytes:
    from weightvault._fs import read_small_file

    return read_small_file(path, "attestation", MAX_ATTESTATION_BYTES)


def _peek(path: Path, data: bytes) -> StoredAttestation:
    """What an attestation file claims, without checking its signature."""
    from weightvault.attest._statement import parse_statement
    from weightvault.oms.bundle import parse_bundle

    try:
        bundle = parse_bundle(data)
        statement = parse_statement(bundle.payload)
    except FormatError as exc:
        return StoredAttestation(path, None, (), None, error=exc.message)
    material = bundle.verification_material
    claimed = f"EC key {material.public_key_hint[:16]}" if material.public_key_hint else None
    if material.certificates:
        from cryptography import x509

        from weightvault.signing.certificate import certificate_identities

        try:
            names = certificate_identities(x509.load_der_x509_certificate(material.certificates[0]))
        except ValueError:
            names = []
        claimed = names[0] if names else "certificate"
    return StoredAttestation(path, statement.predicate_type, statement.subjects, claimed)


def _files(model_path: str | os.PathLike[str], directory: Path | None) -> list[Path]:
    if not os.path.lexists(model_path):
        raise InputError(
            f"{model_path}: no such file or folder; check the model path", reason=Reason.NOT_FOUND
        )
    folder = directory if directory is not None else attestations_dir(model_path)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.endswith(_FILE_SUFFIX) and p.is_file())


def list_attestations(
    model_path: str | os.PathLike[str], *, directory: str | os.PathLike[str] | None = None
) -> list[StoredAttestation]:
    """The attestation files stored for a model, read but not verified (sorted by name)."""
    folder = Path(directory) if directory is not None else None
    return [_peek(path, _read(path)) for path in _files(model_path, folder)]


@dataclass(frozen=True)
class AttestationCheck:
    """One stored attestation checked: the verified record, or why it was refused."""

    path: Path
    record: VerifiedAttestation | None
    failure: AttestationFailure | None = None
    message: str | None = None
    threshold_failures: tuple[str, ...] = field(default=())
    """For evaluation results: metrics outside their own thresholds."""

    @property
    def ok(self) -> bool:
        return self.record is not None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"path": str(self.path), "ok": self.ok}
        if self.record is not None:
            doc.update(self.record.to_json())
            doc["threshold_failures"] = list(self.threshold_failures)
        else:
            doc["failure"] = self.failure.value if self.failure else None
            doc["error"] = self.message
        return doc


def _recomputed_digest(
    model_path: str | os.PathLike[str],
    serialization: Serialization | None,
    cache: dict[Any, bytes],
) -> bytes:
    key = None if serialization is None else repr(serialization.to_json_obj())
    if key not in cache:
        cache[key] = digest_subject(model_path, serialization=serialization).digest
    return cache[key]


def check_attestations(
    model_path: str | os.PathLike[str],
    *,
    verifier: Verifier,
    expected_subject_digest: bytes | str | None = None,
    kinds: Iterable[str] | None = None,
    signers: Collection[str] | None = None,
    now: datetime.datetime | Callable[[], datetime.datetime] | None = None,
    directory: str | os.PathLike[str] | None = None,
    log: LogCheck | None = None,
) -> list[AttestationCheck]:
    """Check every stored attestation of a model (of ``kinds`` only, if given), reporting each
    verdict; never raises for a refused attestation.

    ``expected_subject_digest`` is the model's root digest when the caller has it (a verified
    signature's); without it the model is hashed again, with the parameters each attestation's
    subject records, so the attestation is checked against the files as they are now.
    """
    folder = Path(directory) if directory is not None else None
    wanted = {predicate_type_for(k) for k in kinds} if kinds is not None else None
    cache: dict[Any, bytes] = {}
    results: list[AttestationCheck] = []
    for path in _files(model_path, folder):
        data = _read(path)
        peeked = _peek(path, data)
        claimed_type = peeked.predicate_type
        if wanted is not None and claimed_type is not None and claimed_type not in wanted:
            continue  # another kind (a file that does not parse is checked, and refused)
        expected = expected_subject_digest
        if expected is None:
            model_subjects = [s for s in peeked.subjects if s.role == "model"] or list(
                peeked.subjects
            )
            serialization = model_subjects[0].serialization if model_subjects else None
            expected = _recomputed_digest(model_path, serialization, cache)
        try:
            record = verify_attestation(
                data,
                verifier=verifier,
                expected_subject_digest=expected,
                signers=signers,
                now=now,
                log=log,
            )
        except AttestationError as exc:
            results.append(AttestationCheck(path, None, exc.failure, exc.detail))
            continue
        failures: tuple[str, ...] = ()
        if record.predicate_type == EVAL_RESULTS:
            failures = tuple(threshold_failures(record.predicate))
        results.append(AttestationCheck(path, record, threshold_failures=failures))
    return results


def require_attestations(
    model_path: str | os.PathLike[str],
    kinds: Iterable[str],
    *,
    verifier: Verifier,
    expected_subject_digest: bytes | str | None = None,
    signers: Collection[str] | None = None,
    now: datetime.datetime | Callable[[], datetime.datetime] | None = None,
    directory: str | os.PathLike[str] | None = None,
    log: LogCheck | None = None,
) -> dict[str, VerifiedAttestation]:
    """One valid attestation of each kind, or :class:`AttestationError`: ``missing`` when none
    of that kind is stored, the refusal of the stored one(s) when none verifies, and
    ``failed-thresholds`` for evaluation results that miss their own thresholds."""
    wanted = [predicate_type_for(k) for k in kinds]
    if not wanted:
        raise ValueError("kinds: name at least one attestation kind to require")
    checks = check_attestations(
        model_path,
        verifier=verifier,
        expected_subject_digest=expected_subject_digest,
        kinds=wanted,
        signers=signers,
        now=now,
        directory=directory,
        log=log,
    )
    return select_required(checks, wanted, model_path)


def select_required(
    checks: Sequence[AttestationCheck],
    kinds: Iterable[str],
    model_path: str | os.PathLike[str],
) -> dict[str, VerifiedAttestation]:
    """From checks already made (:func:`check_attestations`), one valid attestation of each
    kind, or :class:`AttestationError` as :func:`require_attestations` says."""
    wanted = [predicate_type_for(k) for k in kinds]
    found: dict[str, VerifiedAttestation] = {}
    for predicate_type in wanted:
        name = kind_of(predicate_type) or predicate_type
        of_kind = [
            c for c in checks if c.record is None or c.record.predicate_type == predicate_type
        ]
        passing = [c for c in of_kind if c.record is not None and not c.threshold_failures]
        if passing:
            assert passing[0].record is not None
            found[name] = passing[0].record
            continue
        failing = [c for c in of_kind if c.record is not None]
        if failing:
            raise AttestationError(
                AttestationFailure.FAILED_THRESHOLDS,
                f"{name} ({failing[0].path.name}): {'; '.join(failing[0].threshold_failures)}",
            )
        refused = [c for c in of_kind if c.record is None and _claims(c, predicate_type)]
        if refused:
            first = refused[0]
            assert first.failure is not None
            raise AttestationError(first.failure, f"{name} ({first.path.name}): {first.message}")
        raise AttestationError(
            AttestationFailure.MISSING,
            f"no {name} attestation for {model_path} (looked in {attestations_dir(model_path)})",
        )
    return found


def _claims(check: AttestationCheck, predicate_type: str) -> bool:
    """Whether a refused file at least says it is of ``predicate_type`` (unverified)."""
    try:
        peeked = _peek(check.path, _read(check.path))
    except InputError:
        return False
    return peeked.predicate_type == predicate_type or peeked.predicate_type is None


def attest_row_groups(
    dataset_path: str | os.PathLike[str],
    manifest: Manifest,
    signer: Signer,
    predicate: dict[str, Any],
    *,
    log: tuple[str, str] | None = None,
) -> Path:
    """Sign a row-group predicate (:func:`~weightvault.attest.row_groups_predicate`) about the
    dataset ``manifest`` describes (its OMS root digest, as just signed), optionally log it
    (``(location, checkpoint key)``), and store it beside the dataset."""
    from weightvault.attest._sign import log_attestation, sign_attestation
    from weightvault.attest._statement import make_statement

    subject = Subject(manifest.model_name, manifest.root_digest, "dataset", manifest.serialization)
    bundle = sign_attestation(make_statement(subject, "row-groups", predicate), signer)
    if log is not None:
        bundle = log_attestation(bundle, *log)
    return store_attestation(dataset_path, bundle, "row-groups")


def _dataset_rows_attestation(
    dataset_path: str | os.PathLike[str],
    file_name: str | None,
    verifier: Verifier,
    signature_path: str | os.PathLike[str] | None,
    signers: Collection[str] | None,
    now: datetime.datetime | Callable[[], datetime.datetime] | None,
    directory: str | os.PathLike[str] | None,
) -> tuple[VerifiedAttestation, Path, str]:
    """Steps 1 and 2 of :func:`verify_dataset_rows` and :func:`open_dataset_shard` (their own
    arguments, in their order): the attestation, the shard's path and its name in the
    attestation."""
    from weightvault.attest._predicates import ROW_GROUPS
    from weightvault.oms.manifest import parse_statement as parse_oms_statement
    from weightvault.signing import read_signature, signature_path_for

    root = Path(dataset_path)
    sig = signature_path_for(root, signature_path)
    # 1. The dataset's signature: authentic, and the root digest it vouches for.
    verified = verifier.verify(read_signature(sig))
    manifest = parse_oms_statement(verified.payload)
    shard_name = file_name if file_name is not None else "."
    if shard_name not in {r.name for r in manifest.resources}:
        raise InputError(f"{shard_name}: not a file the dataset's signature covers")
    # 2. A row-groups attestation for that digest.
    checks = check_attestations(
        root,
        verifier=verifier,
        expected_subject_digest=manifest.root_digest,
        kinds=[ROW_GROUPS],
        signers=signers,
        now=now,
        directory=directory,
    )
    record = select_required(checks, [ROW_GROUPS], root)["row-groups"]
    return record, (root if file_name is None else root / file_name), shard_name


def verify_dataset_rows(
    dataset_path: str | os.PathLike[str],
    file_name: str | None,
    row_group_indices: Iterable[int],
    *,
    verifier: Verifier,
    signature_path: str | os.PathLike[str] | None = None,
    signers: Collection[str] | None = None,
    now: datetime.datetime | Callable[[], datetime.datetime] | None = None,
    directory: str | os.PathLike[str] | None = None,
) -> tuple[ByteRange, ...]:
    """Verify some row groups of one shard of a signed dataset, reading only those bytes.

    The chain: (1) the dataset's signature verifies (its bundle only, nothing is rehashed) and
    names the root digest; (2) a row-groups attestation stored beside the dataset verifies for
    that digest; (3) the shard's metadata and the requested groups match it. ``file_name`` is
    the shard's name inside the dataset folder (``None`` for a single-file dataset).
    """
    from weightvault.attest._rowgroups import verify_row_groups

    record, shard, shard_name = _dataset_rows_attestation(
        dataset_path, file_name, verifier, signature_path, signers, now, directory
    )
    # 3. The bytes read.
    return verify_row_groups(shard, row_group_indices, record, name=shard_name)


def open_dataset_shard(
    dataset_path: str | os.PathLike[str],
    file_name: str | None,
    *,
    verifier: Verifier,
    signature_path: str | os.PathLike[str] | None = None,
    signers: Collection[str] | None = None,
    now: datetime.datetime | Callable[[], datetime.datetime] | None = None,
    directory: str | os.PathLike[str] | None = None,
) -> VerifiedShard:
    """Steps 1 and 2 of :func:`verify_dataset_rows`, then the shard opened so that every byte
    a reader gets is checked by the read that delivers it
    (:func:`~weightvault.attest.open_verified_shard`)."""
    from weightvault.attest._rowgroups import open_verified_shard

    record, shard, shard_name = _dataset_rows_attestation(
        dataset_path, file_name, verifier, signature_path, signers, now, directory
    )
    return open_verified_shard(shard, record, name=shard_name)
