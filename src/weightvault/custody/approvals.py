"""Approval statements: what an approver's Ed25519 key signs to approve (or deny) one request.

The statement names the exact request (id and a digest of all its terms), model, version,
grantee, grant duration and byte budget, and its own expiry. It travels in a DSSE envelope
(payload type :data:`PAYLOAD_TYPE`, signature over DSSE's PAE), so the bytes the key signed are
the bytes the server stores and the auditor re-checks. The server holds only public keys: it
cannot produce an approval, and a statement signed for one request fails for every other.

Signing keys come from a PEM file (PKCS#8 Ed25519) or a PKCS#11 token (``CKM_EDDSA``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from weightvault import _b64 as b64
from weightvault._dataclass_json import field_dict
from weightvault._json import canonical, load_object
from weightvault.custody import _names
from weightvault.errors import FormatError, KeyMaterialError, PolicyError, VerificationError

__all__ = [
    "CLOCK_SKEW",
    "MAX_ENVELOPE_BYTES",
    "PAYLOAD_TYPE",
    "STATEMENT_FIELDS",
    "STATEMENT_TYPE",
    "AccessRequest",
    "ApprovalSigner",
    "ApprovalStatement",
    "AskedFor",
    "RequestTerms",
    "key_id_of",
    "load_approval_signer",
    "load_public_key_bytes",
    "open_envelope",
    "pae",
    "sign_statement",
]

PAYLOAD_TYPE = "application/vnd.weightvault.approval+json"
STATEMENT_TYPE = "https://weightvault.dev/custody/approval/v1"
MAX_ENVELOPE_BYTES = 16 * 1024
#: How far in the future an approval's ``issued_at`` may lie (approvers' clocks drift).
CLOCK_SKEW = dt.timedelta(minutes=5)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def format_time(value: dt.datetime) -> str:
    """One exact spelling for times in signed statements: UTC, seconds, ``Z``."""
    return value.astimezone(dt.UTC).strftime(_TIME_FORMAT)


def parse_time(value: object, field: str) -> dt.datetime:
    """Parse :func:`format_time`'s spelling, refusing every other."""
    if not isinstance(value, str):
        raise FormatError(f"{field}: expected a time string")
    try:
        parsed = dt.datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=dt.UTC)
    except ValueError as exc:
        raise FormatError(f"{field}: expected YYYY-MM-DDTHH:MM:SSZ") from exc
    if format_time(parsed) != value:
        raise FormatError(f"{field}: not in canonical form")
    return parsed


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: ``DSSEv1 SP len(type) SP type SP len(body) SP body``."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def key_id_of(public_key: bytes) -> str:
    """Hex SHA-256 of the raw 32-byte Ed25519 public key."""
    return hashlib.sha256(public_key).hexdigest()


class AskedFor(Protocol):
    """A stored request of either kind (a grant request, a job): who asked for which version."""

    @property
    def id(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def requester(self) -> str: ...


@dataclass(frozen=True)
class AccessRequest:
    """What a reader asks for: one model version, for ``duration_s`` and ``byte_budget``, with a
    justification; a ``purpose`` other than ``pull`` (``deploy``, ``release``) goes through the
    model's release gate. One record for the client that files it and the service that checks
    it, so the two cannot drift apart."""

    model: str
    version: str
    justification: str
    duration_s: int
    byte_budget: int
    purpose: str = "pull"

    def terms(self) -> dict[str, Any]:
        """The terms asked for (every field but ``purpose``): what a stored request keeps."""
        terms = field_dict(self)
        del terms["purpose"]
        return terms

    def to_json(self) -> dict[str, Any]:
        """The ``POST /v1/requests`` body (``purpose`` only when it is not the default)."""
        return field_dict(self) if self.purpose != "pull" else self.terms()


@dataclass(frozen=True)
class RequestTerms:
    """The terms of a grant request that an approval binds to."""

    request_id: str
    model: str
    version: str
    grantee: str
    justification: str
    duration_s: int
    byte_budget: int

    def digest(self) -> str:
        """Hex SHA-256 over the canonical JSON of every term."""
        return hashlib.sha256(canonical(field_dict(self))).hexdigest()

    def summary(self) -> str:
        """Every term in words, as an approver is told what it signs (the digest's contents)."""
        return (
            f"request {self.request_id}: {self.model}@{self.version} for {self.grantee}, "
            f"{self.duration_s} s, {self.byte_budget} bytes; "
            f"justification: {self.justification!r}"
        )

    @classmethod
    def of_row(
        cls, row: AskedFor, justification: str, duration_s: int, byte_budget: int
    ) -> RequestTerms:
        """The terms of a stored request: who asked for which version from the row itself,
        what it asks for from the caller (a job words its justification and limits its way)."""
        return cls(
            row.id, row.model, row.version, row.requester, justification, duration_s, byte_budget
        )

    @classmethod
    def of_view(cls, view: dict[str, Any]) -> RequestTerms:
        """The terms a request's view (``GET /v1/requests/ID``) states, values as given: an
        approver recomputes the digest from what it was shown, never from what it assumes."""
        return cls(
            request_id=view["id"],
            model=view["model"],
            version=view["version"],
            grantee=view["requester"],
            justification=view["justification"],
            duration_s=view["duration_s"],
            byte_budget=view["byte_budget"],
        )


_CARRIED_TERMS = ("request_id", "model", "version", "grantee", "duration_s", "byte_budget")
"""The terms a statement repeats, so that its signer sees them (the justification it binds
through the digest only): one list, so what a statement carries is what it is checked on."""
STATEMENT_FIELDS = frozenset(
    {"_type", "approver", "decision", "expires_at", "issued_at", "request_digest", *_CARRIED_TERMS}
)
"""The fields of a signed approval statement, exactly (a passkey statement adds its own)."""


@dataclass(frozen=True)
class ApprovalStatement:
    """One approver's decision on one request, valid until ``expires_at``."""

    request_id: str
    request_digest: str
    model: str
    version: str
    grantee: str
    duration_s: int
    byte_budget: int
    approver: str
    decision: str
    issued_at: dt.datetime
    expires_at: dt.datetime

    @classmethod
    def for_request(
        cls,
        terms: RequestTerms,
        *,
        approver: str,
        decision: str,
        issued_at: dt.datetime,
        valid_for: dt.timedelta,
    ) -> ApprovalStatement:
        """The statement an approver signs for ``terms``."""
        return cls(
            **{name: getattr(terms, name) for name in _CARRIED_TERMS},
            request_digest=terms.digest(),
            approver=approver,
            decision=decision,
            issued_at=issued_at.replace(microsecond=0),
            expires_at=(issued_at + valid_for).replace(microsecond=0),
        )

    def fields(self) -> dict[str, Any]:
        """Every field as signed documents spell it (times by :func:`format_time`); a
        document adds its own ``_type`` (and a passkey statement its own fields)."""
        doc = field_dict(self)
        doc["issued_at"] = format_time(self.issued_at)
        doc["expires_at"] = format_time(self.expires_at)
        return doc

    @classmethod
    def from_fields(cls, doc: dict[str, Any], where: str) -> ApprovalStatement:
        """The statement in a parsed document whose ``decision`` and ``request_digest`` the
        caller has checked: names, numbers and times checked here, named ``{where}.field``."""
        return cls(
            request_id=_names.check_request_id(doc["request_id"], f"{where}.request_id"),
            request_digest=str(doc["request_digest"]),
            model=_names.check_model_name(doc["model"], f"{where}.model"),
            version=_names.check_version_name(doc["version"], f"{where}.version"),
            grantee=_names.check_principal_name(doc["grantee"], f"{where}.grantee"),
            duration_s=_names.check_duration(doc["duration_s"], f"{where}.duration_s"),
            byte_budget=_names.check_byte_count(doc["byte_budget"], f"{where}.byte_budget"),
            approver=_names.check_principal_name(doc["approver"], f"{where}.approver"),
            decision=doc["decision"],
            issued_at=parse_time(doc["issued_at"], f"{where}.issued_at"),
            expires_at=parse_time(doc["expires_at"], f"{where}.expires_at"),
        )

    def to_json(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces): the exact bytes that get signed."""
        return canonical({"_type": STATEMENT_TYPE, **self.fields()}, ascii_only=True)

    @classmethod
    def from_json(cls, data: bytes) -> ApprovalStatement:
        """Strict parse: every field present, right types, nothing extra, canonical bytes."""
        doc = load_object(data, "approval statement")
        missing = STATEMENT_FIELDS - doc.keys()
        extra = doc.keys() - STATEMENT_FIELDS
        if missing:
            raise FormatError(f"approval statement: missing field {sorted(missing)[0]}")
        if extra:
            raise FormatError(f"approval statement: unknown field {sorted(extra)[0]}")
        if doc["_type"] != STATEMENT_TYPE:
            raise FormatError(f"approval statement._type: expected {STATEMENT_TYPE}")
        decision = doc["decision"]
        if decision not in ("approve", "deny"):
            raise FormatError("approval statement.decision: expected 'approve' or 'deny'")
        digest = doc["request_digest"]
        if not isinstance(digest, str) or len(digest) != 64 or digest.strip("0123456789abcdef"):
            raise FormatError("approval statement.request_digest: expected 64 lowercase hex")
        statement = cls.from_fields(doc, "approval statement")
        if statement.to_json() != data:
            raise FormatError("approval statement: not in canonical JSON form")
        return statement

    def check_binds(self, terms: RequestTerms) -> None:
        """Raise :class:`VerificationError` unless this statement is for exactly ``terms``."""
        mismatches = [n for n in _CARRIED_TERMS if getattr(self, n) != getattr(terms, n)]
        if self.request_digest != terms.digest():
            mismatches.append("request_digest")
        if mismatches:
            raise VerificationError(
                f"approval is for another request ({mismatches[0]} differs)",
                hint="sign a fresh approval for this request",
            )

    def check_acceptable(
        self, approver: str, terms: RequestTerms, now: dt.datetime, max_validity_s: int
    ) -> None:
        """Raise unless this statement is ``approver``'s, for exactly ``terms``, valid at ``now``
        and no longer-lived than the policy allows: the one check grants and jobs both apply."""
        if self.approver != approver:
            raise VerificationError("approval names another approver")
        self.check_binds(terms)
        if self.issued_at > now + CLOCK_SKEW:
            raise VerificationError("approval is issued in the future")
        if self.expires_at <= now:
            raise VerificationError("approval has expired; sign a fresh one")
        if self.expires_at - self.issued_at > dt.timedelta(seconds=max_validity_s):
            raise PolicyError(f"approval is valid for longer than the policy's {max_validity_s} s")


def open_envelope(envelope: bytes, public_key: bytes) -> ApprovalStatement:
    """Check a DSSE envelope's single Ed25519 signature and parse the statement inside.

    Steps: (1) size limit, (2) strict envelope JSON, (3) payload type, (4) key id matches the
    registered key, (5) signature over PAE, (6) strict statement parse.
    """
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise FormatError(f"approval envelope: larger than {MAX_ENVELOPE_BYTES} bytes")
    doc = load_object(envelope, "approval envelope")
    if set(doc) != {"payload", "payloadType", "signatures"}:
        raise FormatError("approval envelope: expected exactly payload, payloadType, signatures")
    if doc["payloadType"] != PAYLOAD_TYPE:
        raise FormatError(f"approval envelope.payloadType: expected {PAYLOAD_TYPE}")
    payload = b64.decode(doc["payload"], "approval envelope.payload")
    signatures = doc["signatures"]
    if not isinstance(signatures, list) or len(signatures) != 1:
        raise FormatError("approval envelope.signatures: expected exactly one signature")
    entry = signatures[0]
    if not isinstance(entry, dict) or set(entry) != {"keyid", "sig"}:
        raise FormatError("approval envelope.signatures[0]: expected keyid and sig")
    if entry["keyid"] != key_id_of(public_key):
        raise VerificationError("approval is not signed by the approver's registered key")
    signature = b64.decode(entry["sig"], "approval envelope.signatures[0].sig")
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(
            signature, pae(PAYLOAD_TYPE, payload)
        )
    except InvalidSignature as exc:
        raise VerificationError("approval signature does not verify") from exc
    return ApprovalStatement.from_json(payload)


class ApprovalSigner:
    """An approver's Ed25519 key: a private key object or a PKCS#11 URI."""

    def __init__(
        self,
        *,
        private_key: ed25519.Ed25519PrivateKey | None = None,
        pkcs11_uri: str | None = None,
    ) -> None:
        if (private_key is None) == (pkcs11_uri is None):
            raise ValueError("give exactly one of private_key or pkcs11_uri")
        self._private_key = private_key
        self._uri = pkcs11_uri
        if private_key is not None:
            self.public_key = private_key.public_key().public_bytes_raw()
        else:
            from weightvault.keys import pkcs11

            assert pkcs11_uri is not None
            public = pkcs11.load_public_key(pkcs11_uri)
            if not isinstance(public, ed25519.Ed25519PublicKey):
                raise KeyMaterialError(f"{pkcs11_uri}: not an Ed25519 key")
            self.public_key = public.public_bytes_raw()

    @property
    def key_id(self) -> str:
        return key_id_of(self.public_key)

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` (the PAE bytes)."""
        if self._private_key is not None:
            return self._private_key.sign(data)
        from weightvault.keys import pkcs11

        assert self._uri is not None
        return pkcs11.sign_ed25519(self._uri, data)


def sign_statement(statement: ApprovalStatement, signer: ApprovalSigner) -> bytes:
    """Wrap ``statement`` in a DSSE envelope signed by ``signer``; return its JSON bytes."""
    payload = statement.to_json()
    signature = signer.sign(pae(PAYLOAD_TYPE, payload))
    doc = {
        "payload": b64.encode(payload),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"keyid": signer.key_id, "sig": b64.encode(signature)}],
    }
    return canonical(doc, ascii_only=True)


def load_approval_signer(key_path: Path | None, pkcs11_uri: str | None) -> ApprovalSigner:
    """Load an approval key from a PEM file (PKCS#8 Ed25519, unencrypted) or a PKCS#11 URI."""
    if (key_path is None) == (pkcs11_uri is None):
        raise KeyMaterialError(
            "no approval key given",
            hint="give a PEM key file or a PKCS#11 URI",
            remedy="approval-key",
        )
    if pkcs11_uri is not None:
        return ApprovalSigner(pkcs11_uri=pkcs11_uri)
    assert key_path is not None
    try:
        data = key_path.read_bytes()
    except OSError as exc:
        raise KeyMaterialError(
            f"{key_path}: cannot read the approval key ({exc.strerror})"
        ) from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyMaterialError(f"{key_path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyMaterialError(f"{key_path}: approval keys must be Ed25519")
    return ApprovalSigner(private_key=key)


def load_public_key_bytes(data: bytes, where: str) -> bytes:
    """Raw 32-byte Ed25519 public key from PEM (SubjectPublicKeyInfo)."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyMaterialError(f"{where}: not a PEM public key") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyMaterialError(f"{where}: approval keys must be Ed25519")
    return key.public_bytes_raw()
