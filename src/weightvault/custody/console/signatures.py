"""WebAuthn approvals: an approver's passkey signing one request's exact terms.

The console asks the browser for an assertion whose challenge is the SHA-256 of a
:class:`PasskeyStatement`: the request's id, terms digest, model, version, the version's root
digest, grantee, duration, byte budget, the decision (and a denial's reason), the approver, the
console's origin and RP id, when it was issued and until when it is valid, and a
one-time nonce. The authenticator signs ``authenticatorData || SHA-256(clientDataJSON)`` and
clientDataJSON carries that challenge, so the assertion is a signature over the statement.

The statement and the assertion travel together in a :data:`ENVELOPE_TYPE` document, stored and
logged like a CLI approval's DSSE envelope. :func:`verify_passkey_envelope` needs only
``cryptography`` and the credential's public key (SubjectPublicKeyInfo, logged when the passkey
was registered): the service checks an approval with it before recording, and ``audit verify``
checks every logged passkey approval with it offline.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from weightvault import _b64 as b64
from weightvault._json import canonical, load_object, require_fields
from weightvault.custody.approvals import (
    STATEMENT_FIELDS,
    ApprovalSigner,
    ApprovalStatement,
    format_time,
    key_id_of,
    pae,
    parse_time,
)
from weightvault.errors import FormatError, VerificationError

__all__ = [
    "COSE_ALGORITHMS",
    "ENROLMENT_PAYLOAD_TYPE",
    "ENVELOPE_TYPE",
    "STATEMENT_TYPE",
    "PasskeyApproval",
    "PasskeyStatement",
    "challenge_of",
    "open_enrolment",
    "passkey_key_id",
    "sign_enrolment",
    "statement_for",
    "verify_passkey_envelope",
    "verify_signature",
]

STATEMENT_TYPE = "https://weightvault.dev/custody/passkey-approval/v1"
ENVELOPE_TYPE = "https://weightvault.dev/custody/passkey-envelope/v1"
COSE_ALGORITHMS = {-7: "ES256", -8: "EdDSA", -257: "RS256"}
"""The credential algorithms the console accepts (COSE identifiers)."""
_MAX_ENVELOPE = 16 * 1024
_FLAG_USER_PRESENT = 0x01
_FLAG_USER_VERIFIED = 0x04

_STATEMENT_FIELDS = STATEMENT_FIELDS | {"nonce", "origin", "reason", "rp_id", "version_digest"}
"""An approval statement's fields and the passkey's own: the same terms, signed another way."""
_ENVELOPE_FIELDS = (
    "_type",
    "authenticator_data",
    "client_data_json",
    "credential_id",
    "signature",
    "statement",
)


def passkey_key_id(public_key_der: bytes) -> str:
    """A credential's key id in approvals: :func:`key_id_of` its SubjectPublicKeyInfo."""
    return key_id_of(public_key_der)


@dataclass(frozen=True)
class PasskeyStatement:
    """What a passkey approval signs (through the challenge)."""

    approval: ApprovalStatement
    """The terms and decision, as a CLI approval states them."""
    version_digest: str
    """``sha256:<hex>``: the root digest of the version's signed manifest."""
    reason: str
    """Why a request was denied (empty for an approval)."""
    nonce: str
    """One-time, from the server: an assertion for one ceremony fits no other."""
    origin: str
    rp_id: str

    def to_json(self) -> bytes:
        """Canonical JSON: the bytes whose SHA-256 is the WebAuthn challenge."""
        doc = {
            **self.approval.fields(),
            "_type": STATEMENT_TYPE,
            "nonce": self.nonce,
            "origin": self.origin,
            "reason": self.reason,
            "rp_id": self.rp_id,
            "version_digest": self.version_digest,
        }
        return canonical(doc, ascii_only=True)

    @classmethod
    def from_json(cls, data: bytes) -> PasskeyStatement:
        """Strict parse: exactly the fields above, right types, canonical bytes."""
        doc = load_object(data, "passkey statement", max_bytes=_MAX_ENVELOPE)
        require_fields(doc, _STATEMENT_FIELDS, "passkey statement")
        if doc["_type"] != STATEMENT_TYPE:
            raise FormatError(f"passkey statement._type: expected {STATEMENT_TYPE}")
        for name in ("reason", "nonce", "origin", "rp_id", "version_digest"):
            if not isinstance(doc[name], str) or len(doc[name]) > 2000:
                raise FormatError(f"passkey statement.{name}: expected a string")
        if doc["decision"] not in ("approve", "deny"):
            raise FormatError("passkey statement.decision: expected 'approve' or 'deny'")
        approval = ApprovalStatement.from_fields(doc, "passkey statement")
        statement = cls(
            approval,
            doc["version_digest"],
            doc["reason"],
            doc["nonce"],
            doc["origin"],
            doc["rp_id"],
        )
        if statement.to_json() != data:
            raise FormatError("passkey statement: not in canonical JSON form")
        return statement


def challenge_of(statement_bytes: bytes) -> bytes:
    """The WebAuthn challenge for a statement: SHA-256 of its canonical bytes."""
    return hashlib.sha256(statement_bytes).digest()


@dataclass(frozen=True)
class PasskeyApproval:
    """A statement with the assertion that signs it, as stored and logged."""

    statement_bytes: bytes
    credential_id: bytes
    authenticator_data: bytes
    client_data_json: bytes
    signature: bytes

    def to_json(self) -> bytes:
        return canonical(
            {
                "_type": ENVELOPE_TYPE,
                "authenticator_data": b64.encode(self.authenticator_data),
                "client_data_json": b64.encode(self.client_data_json),
                "credential_id": b64.encode(self.credential_id),
                "signature": b64.encode(self.signature),
                "statement": b64.encode(self.statement_bytes),
            },
            ascii_only=True,
        )

    @classmethod
    def from_json(cls, data: bytes) -> PasskeyApproval:
        if len(data) > _MAX_ENVELOPE:
            raise FormatError(f"passkey envelope: larger than {_MAX_ENVELOPE} bytes")
        doc = load_object(data, "passkey envelope")
        require_fields(doc, _ENVELOPE_FIELDS, "passkey envelope")
        if doc["_type"] != ENVELOPE_TYPE:
            raise FormatError(f"passkey envelope._type: expected {ENVELOPE_TYPE}")
        fields = {
            name: b64.decode(doc[name], f"passkey envelope.{name}", max_size=_MAX_ENVELOPE)
            for name in _ENVELOPE_FIELDS[1:]
        }
        # the envelope names the other four fields as the class does
        return cls(statement_bytes=fields.pop("statement"), **fields)

    @staticmethod
    def is_one(data: bytes) -> bool:
        """Whether ``data`` claims to be a passkey envelope (a DSSE envelope does not)."""
        try:
            doc = json.loads(data)
        except ValueError:
            return False
        return isinstance(doc, dict) and doc.get("_type") == ENVELOPE_TYPE


def verify_signature(public_key_der: bytes, algorithm: int, signature: bytes, data: bytes) -> None:
    """Check a WebAuthn signature (ES256, EdDSA or RS256) or raise :class:`VerificationError`."""
    failure = VerificationError("passkey signature does not verify")
    try:
        key = serialization.load_der_public_key(public_key_der)
    except (ValueError, TypeError) as exc:
        raise FormatError("passkey public key: not a SubjectPublicKeyInfo") from exc
    try:
        if algorithm == -7 and isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(key.curve, ec.SECP256R1):
                raise failure
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif algorithm == -8 and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        elif algorithm == -257 and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise failure
    except InvalidSignature as exc:
        raise failure from exc


def verify_passkey_envelope(
    envelope: bytes, public_key_der: bytes, algorithm: int
) -> tuple[PasskeyStatement, PasskeyApproval]:
    """Check a passkey approval against its credential's public key; return what it says.

    Steps (WebAuthn Level 3, section 7.2, the parts that need no server state): (1) strict
    envelope and statement; (2) the credential is the caller's; (3) clientDataJSON is a
    ``webauthn.get`` for the statement's challenge at the statement's origin; (4) the
    authenticator data is for the statement's RP id, with the user present and verified;
    (5) the signature over ``authenticatorData || SHA-256(clientDataJSON)`` verifies.
    Sign counts and nonce reuse need the server's state; the service checks those.
    """
    # (1)
    approval = PasskeyApproval.from_json(envelope)
    statement = PasskeyStatement.from_json(approval.statement_bytes)
    # (2) the credential is the one whose key verifies the signature in (5)
    # (3)
    client = load_object(approval.client_data_json, "clientDataJSON", max_bytes=_MAX_ENVELOPE)
    expected = b64.encode_url(challenge_of(approval.statement_bytes))
    if client.get("type") != "webauthn.get":
        raise VerificationError("passkey approval: clientDataJSON is not an assertion")
    if client.get("challenge") != expected:
        raise VerificationError("passkey approval: the challenge is not the statement's digest")
    if client.get("origin") != statement.origin:
        raise VerificationError("passkey approval: signed at another origin")
    # (4)
    data = approval.authenticator_data
    if len(data) < 37 or data[:32] != hashlib.sha256(statement.rp_id.encode()).digest():
        raise VerificationError("passkey approval: authenticator data is for another RP id")
    if data[32] & (_FLAG_USER_PRESENT | _FLAG_USER_VERIFIED) != (
        _FLAG_USER_PRESENT | _FLAG_USER_VERIFIED
    ):
        raise VerificationError("passkey approval: user not present and verified")
    # (5)
    signed = data + hashlib.sha256(approval.client_data_json).digest()
    verify_signature(public_key_der, algorithm, approval.signature, signed)
    return statement, approval


def statement_for(
    approval: ApprovalStatement,
    *,
    version_digest: str,
    reason: str,
    nonce: str,
    origin: str,
    rp_id: str,
) -> PasskeyStatement:
    """A :class:`PasskeyStatement` (keyword arguments, so no two strings trade places)."""
    return PasskeyStatement(approval, version_digest, reason, nonce, origin, rp_id)


ENROLMENT_PAYLOAD_TYPE = "application/vnd.weightvault.passkey-enrolment+json"
_ENROLMENT_TYPE = "https://weightvault.dev/custody/passkey-enrolment/v1"
ENROLMENT_VALIDITY = dt.timedelta(minutes=5)


def sign_enrolment(principal: str, signer: ApprovalSigner, now: dt.datetime) -> bytes:
    """A DSSE envelope in which an approver's Ed25519 key asks for a passkey registration link:
    with it, a stolen API token alone cannot add a passkey that approves."""
    payload = canonical(
        {
            "_type": _ENROLMENT_TYPE,
            "issued_at": format_time(now),
            "nonce": secrets.token_hex(16),
            "principal": principal,
        },
        ascii_only=True,
    )
    signature = signer.sign(pae(ENROLMENT_PAYLOAD_TYPE, payload))
    return canonical(
        {
            "payload": b64.encode(payload),
            "payloadType": ENROLMENT_PAYLOAD_TYPE,
            "signatures": [{"keyid": signer.key_id, "sig": b64.encode(signature)}],
        },
        ascii_only=True,
    )


def open_enrolment(envelope: bytes, public_key: bytes, principal: str, now: dt.datetime) -> None:
    """Check an enrolment request signed with ``principal``'s approval key, issued within
    :data:`ENROLMENT_VALIDITY` of ``now``; raise :class:`VerificationError` otherwise."""
    doc = load_object(envelope, "enrolment proof", max_bytes=4096)
    require_fields(doc, ("payload", "payloadType", "signatures"), "enrolment proof")
    if doc["payloadType"] != ENROLMENT_PAYLOAD_TYPE:
        raise FormatError(f"enrolment proof.payloadType: expected {ENROLMENT_PAYLOAD_TYPE}")
    payload = b64.decode(doc["payload"], "enrolment proof.payload", max_size=2048)
    signatures = doc["signatures"]
    if not isinstance(signatures, list) or len(signatures) != 1:
        raise FormatError("enrolment proof.signatures: expected exactly one signature")
    entry = signatures[0]
    if not isinstance(entry, dict) or entry.get("keyid") != key_id_of(public_key):
        raise VerificationError("enrolment proof is not signed by your approval key")
    signature = b64.decode(entry.get("sig"), "enrolment proof.signatures[0].sig", max_size=128)
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(
            signature, pae(ENROLMENT_PAYLOAD_TYPE, payload)
        )
    except InvalidSignature as exc:
        raise VerificationError("enrolment proof signature does not verify") from exc
    statement = load_object(payload, "enrolment proof.payload")
    require_fields(statement, ("_type", "issued_at", "nonce", "principal"), "enrolment proof")
    if statement["_type"] != _ENROLMENT_TYPE or statement["principal"] != principal:
        raise VerificationError("enrolment proof is for someone else")
    issued = parse_time(statement["issued_at"], "enrolment proof.issued_at")
    if abs(now - issued) > ENROLMENT_VALIDITY:
        raise VerificationError("enrolment proof is too old (or from the future); make a new one")
