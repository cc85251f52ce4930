"""Signing an attestation into a Sigstore bundle, and verifying one to a named verdict.

An attestation is signed exactly like an OMS model signature: the statement is the payload of
a DSSE envelope (``application/vnd.in-toto+json``) inside a Sigstore bundle v0.3, made by any
:class:`~weightvault.signing.Signer` (key, certificate, PKCS#11, Sigstore) and checked by the
matching :class:`~weightvault.signing.Verifier`. It can be recorded in a weightvault
transparency log like a signature (``tlog.bundle.record_bundle``).

:func:`verify_attestation` raises :class:`AttestationError` whose ``failure`` names why, in a
word a program can test: ``malformed``, ``bad-signature``, ``unlisted-signer``,
``wrong-predicate-type``, ``wrong-subject``, ``expired``.
"""

from __future__ import annotations

import datetime
import hmac
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from weightvault.attest._predicates import kind_of, predicate_expiry
from weightvault.attest._statement import Statement, Subject, parse_statement
from weightvault.errors import FormatError, VerificationError
from weightvault.oms.dsse import INTOTO_PAYLOAD_TYPE

if TYPE_CHECKING:
    from weightvault.oms.bundle import Bundle
    from weightvault.signing import Signer, SignerIdentity, Verifier
    from weightvault.tlog.checkpoint import WitnessPolicy
    from weightvault.tlog.note import VerifierKey

__all__ = [
    "AttestationError",
    "AttestationFailure",
    "LogCheck",
    "VerifiedAttestation",
    "log_attestation",
    "sign_attestation",
    "verify_attestation",
]


class AttestationFailure(StrEnum):
    """Why an attestation was refused (``exc.failure``); the words of the message may change,
    these do not."""

    MALFORMED = "malformed"
    """The bundle, statement or predicate does not parse, or lacks a required field."""
    BAD_SIGNATURE = "bad-signature"
    """The signature does not verify: the statement was changed, or no trusted key signed it."""
    UNLISTED_SIGNER = "unlisted-signer"
    """A valid signature by a signer the caller does not accept."""
    WRONG_PREDICATE_TYPE = "wrong-predicate-type"
    """A statement of another kind than the one asked for."""
    WRONG_SUBJECT = "wrong-subject"
    """The statement is about another model (its root digest differs)."""
    EXPIRED = "expired"
    """The predicate's ``expires`` time has passed."""
    MISSING = "missing"
    """No attestation of the required kind is stored beside the model."""
    FAILED_THRESHOLDS = "failed-thresholds"
    """Evaluation results that miss their own thresholds (refused where results are required)."""
    NOT_LOGGED = "not-logged"
    """A log entry was required and the bundle has none that verifies (inclusion proof,
    checkpoint signature, witnesses)."""


class AttestationError(VerificationError):
    """An attestation that does not vouch for what was asked; ``failure`` says why.

    Exit code 1 (the check ran and the answer is no), or 2 for ``malformed`` input.
    """

    def __init__(self, failure: AttestationFailure, message: str, **kwargs: Any) -> None:
        super().__init__(f"attestation refused ({failure.value}): {message}", **kwargs)
        self.failure = failure
        self.detail = message
        """The message without the leading ``attestation refused (failure):``."""
        if failure is AttestationFailure.MALFORMED:
            self.exit_code = 2


@dataclass(frozen=True)
class LogCheck:
    """Require an attestation's entry in a weightvault transparency log (checked offline)."""

    key: VerifierKey | str
    """The log's public key (a ``VerifierKey`` or its text)."""
    witnesses: WitnessPolicy | None = None
    """Witness cosignatures the checkpoint needs, if any."""


@dataclass(frozen=True)
class VerifiedAttestation:
    """An attestation whose signature, signer, kind, subject and time all checked out."""

    statement: Statement
    signer: SignerIdentity
    subject: Subject
    """The subject that matched the expected digest."""
    expires: datetime.datetime | None
    bundle_json: bytes = field(repr=False)

    @property
    def predicate_type(self) -> str:
        return self.statement.predicate_type

    @property
    def kind(self) -> str | None:
        """``model-card``, ``eval-results``, ``training-provenance``, ``row-groups`` or
        ``None`` for another predicate type."""
        return kind_of(self.statement.predicate_type)

    @property
    def predicate(self) -> dict[str, Any]:
        return self.statement.predicate

    @property
    def subject_digests(self) -> dict[str, str]:
        """Each subject's name and hex root digest."""
        return {s.name: s.digest.hex() for s in self.statement.subjects}

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "predicate_type": self.predicate_type,
            "subject": {
                "name": self.subject.name,
                "role": self.subject.role,
                "root_digest": self.subject.digest.hex(),
            },
            "subjects": [s.to_json_obj() for s in self.statement.subjects],
            "signer": {
                "method": self.signer.method,
                "subject": self.signer.subject,
                "issuer": self.signer.issuer,
                "key_fingerprint": self.signer.key_fingerprint,
            },
            "expires": self.expires.isoformat() if self.expires else None,
            "predicate": self.predicate,
        }


def sign_attestation(statement: Statement, signer: Signer) -> bytes:
    """The Sigstore bundle (JSON bytes) of ``statement`` signed by ``signer``."""
    return signer.sign(INTOTO_PAYLOAD_TYPE, statement.to_payload())


def log_attestation(bundle_json: bytes, log_location: str, log_key: str) -> bytes:
    """Record a signed attestation in a transparency log (a SQLite file or a PostgreSQL URL,
    signing a checkpoint with ``log_key``, a key file or ``pkcs11:`` URI); the returned bundle
    carries the entry and its inclusion proof."""
    from weightvault.tlog.bundle import record_bundle_at

    return record_bundle_at(log_location, log_key, bundle_json)


def _claimed_signers(bundle: Bundle) -> set[str] | None:
    """Who the bundle says signed it (public data, not yet verified): the key hint or the leaf
    certificate's identities; ``None`` if it cannot tell."""
    material = bundle.verification_material
    if material.certificates:
        from cryptography import x509

        from weightvault.signing.certificate import certificate_identities

        try:
            leaf = x509.load_der_x509_certificate(material.certificates[0])
        except ValueError:
            return None
        return set(certificate_identities(leaf))
    if material.public_key_hint:
        return {material.public_key_hint.lower()}
    return None


def _signed_by_own_material(bundle: Bundle) -> bool:
    """Whether the envelope verifies under the key the bundle itself carries (a certificate's
    or an embedded key): then a refusal is about who signed, not about what was signed."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from weightvault.signing.key import check_envelope_signature

    material = bundle.verification_material
    key: object = None
    try:
        if material.certificates:
            from cryptography import x509

            key = x509.load_der_x509_certificate(material.certificates[0]).public_key()
        elif material.public_key_raw is not None:
            from cryptography.hazmat.primitives import serialization

            raw = material.public_key_raw
            key = (
                serialization.load_pem_public_key(raw)
                if raw.lstrip().startswith(b"-----BEGIN")
                else serialization.load_der_public_key(raw)
            )
    except ValueError:
        return False
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        check_envelope_signature(bundle, key)
    except VerificationError:
        return False
    return True


def _is_listed(identity: SignerIdentity, signers: Collection[str]) -> bool:
    names = {identity.subject}
    if identity.key_fingerprint:
        names.add(identity.key_fingerprint.lower())
    return bool(names & set(signers))


def _digest_bytes(digest: bytes | str) -> bytes:
    if isinstance(digest, str):
        text = digest.removeprefix("sha256:")
        try:
            return bytes.fromhex(text)
        except ValueError as exc:
            raise ValueError(f"expected_subject_digest: not hex ({digest!r})") from exc
    return digest


def verify_attestation(
    bundle_json: bytes,
    *,
    verifier: Verifier,
    expected_subject_digest: bytes | str,
    expected_predicate_type: str | None = None,
    signers: Collection[str] | None = None,
    now: datetime.datetime | Callable[[], datetime.datetime] | None = None,
    log: LogCheck | None = None,
) -> VerifiedAttestation:
    """Verify a signed attestation and return what it vouches for; raise
    :class:`AttestationError` (naming the failure) on the first problem.

    ``expected_subject_digest`` is the model's OMS root digest (32 bytes, or hex, with or
    without ``sha256:``); one of the statement's subjects must carry it.
    ``expected_predicate_type`` is a kind (``eval-results``) or a URI; ``None`` accepts any.
    ``signers``, if given, lists the accepted signers: key fingerprints (the hex SHA-256 the
    bundle's ``publicKey.hint`` holds) or certificate / Sigstore identities. ``now`` (a time
    or a clock) decides expiry; default: the current time. ``log``, if given, requires the
    bundle's entry in that weightvault transparency log, checked offline (``not-logged``).
    """
    from weightvault.attest._predicates import predicate_type_for
    from weightvault.oms.bundle import parse_bundle

    expected = _digest_bytes(expected_subject_digest)
    wanted_type = (
        predicate_type_for(expected_predicate_type) if expected_predicate_type is not None else None
    )
    if signers is not None and not signers:
        raise ValueError("signers: an empty list accepts nobody; give None to skip the check")
    listed = {s.lower() if len(s) == 64 else s for s in signers} if signers is not None else None
    # 1. The bundle must parse.
    try:
        bundle = parse_bundle(bundle_json)
    except FormatError as exc:
        raise AttestationError(AttestationFailure.MALFORMED, exc.message) from exc
    # 2. A signer outside the list is refused before any cryptography (public data only).
    claimed = _claimed_signers(bundle)
    if listed is not None and claimed is not None and not claimed & listed:
        shown = ", ".join(f"EC key {c[:16]}" if len(c) == 64 else c for c in sorted(claimed))
        raise AttestationError(
            AttestationFailure.UNLISTED_SIGNER, f"signed by {shown}, not an accepted signer"
        )
    # 3. The signature, by the verifier's method and trust (and, if asked, its log entry).
    if log is not None:
        from weightvault.tlog.bundle import verify_bundle_log_entry

        try:
            verify_bundle_log_entry(bundle_json, log.key, witnesses=log.witnesses)
        except (VerificationError, FormatError) as exc:
            raise AttestationError(AttestationFailure.NOT_LOGGED, exc.message) from exc
    try:
        verified = verifier.verify(bundle_json)
    except FormatError as exc:
        raise AttestationError(AttestationFailure.MALFORMED, exc.message) from exc
    except VerificationError as exc:
        failure = (
            AttestationFailure.UNLISTED_SIGNER
            if _signed_by_own_material(bundle)
            else AttestationFailure.BAD_SIGNATURE
        )
        raise AttestationError(failure, exc.message) from exc
    if listed is not None and not _is_listed(verified.signer, listed):
        raise AttestationError(
            AttestationFailure.UNLISTED_SIGNER,
            f"signed by {verified.signer.subject}, not an accepted signer",
        )
    # 4. The payload: an in-toto statement with a well-formed predicate.
    if verified.payload_type != INTOTO_PAYLOAD_TYPE:
        raise AttestationError(
            AttestationFailure.MALFORMED, f"payload type {verified.payload_type!r} is not in-toto"
        )
    try:
        statement = parse_statement(verified.payload)
    except FormatError as exc:
        raise AttestationError(AttestationFailure.MALFORMED, exc.message) from exc
    # 5. The kind asked for.
    if wanted_type is not None and statement.predicate_type != wanted_type:
        raise AttestationError(
            AttestationFailure.WRONG_PREDICATE_TYPE,
            f"a {statement.predicate_type} statement, not {wanted_type}",
        )
    # 6. The subject: this model's root digest.
    subject = next((s for s in statement.subjects if hmac.compare_digest(s.digest, expected)), None)
    if subject is None:
        names = ", ".join(f"{s.name} sha256:{s.digest.hex()[:16]}..." for s in statement.subjects)
        raise AttestationError(
            AttestationFailure.WRONG_SUBJECT,
            f"about {names}, not sha256:{expected.hex()[:16]}...",
        )
    # 7. Time.
    expires = predicate_expiry(statement.predicate_type, statement.predicate)
    moment = now() if callable(now) else now
    if moment is None:
        moment = datetime.datetime.now(datetime.UTC)
    if moment.tzinfo is None:
        raise ValueError("now: give an aware datetime (with a time zone)")
    if expires is not None and moment >= expires:
        raise AttestationError(AttestationFailure.EXPIRED, f"expired at {expires.isoformat()}")
    return VerifiedAttestation(statement, verified.signer, subject, expires, bytes(bundle_json))
