"""Passkey approvals checked offline: the envelope, every byte of it, and ``audit verify``.

A software authenticator (the WebAuthn assertion format, made here with ``cryptography``) signs
statements, so every field can be bent in turn; the browser tests use Chromium's own."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from weightvault import _b64 as b64
from weightvault.custody.approvals import ApprovalStatement, RequestTerms, format_time
from weightvault.custody.audit import AuditTrail, verify_audit
from weightvault.custody.console.ledger import PasskeyLedger
from weightvault.custody.console.signatures import (
    PasskeyApproval,
    PasskeyStatement,
    challenge_of,
    passkey_key_id,
    statement_for,
    verify_passkey_envelope,
)
from weightvault.errors import FormatError, VerificationError
from weightvault.tlog.note import Ed25519NoteSigner

ORIGIN = "https://vault.example.org"
RP_ID = "vault.example.org"
TERMS = RequestTerms("a" * 32, "llama", "v1", "rita", "red-team eval, ticket SEC-42", 3600, 1 << 21)
NOW = dt.datetime(2026, 12, 6, 7, 0, tzinfo=dt.UTC)

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


@dataclass
class SoftAuthenticator:
    """Signs WebAuthn assertions the way an authenticator does."""

    key: PrivateKey
    algorithm: int
    counter: int = 0

    @property
    def public_der(self) -> bytes:
        return self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return self.key.sign(data, ec.ECDSA(hashes.SHA256()))
        if isinstance(self.key, rsa.RSAPrivateKey):
            return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        return self.key.sign(data)

    def assert_(
        self,
        statement: bytes,
        *,
        origin: str = ORIGIN,
        rp_id: str = RP_ID,
        flags: int = 0x05,
        kind: str = "webauthn.get",
    ) -> bytes:
        self.counter += 1
        auth_data = hashlib.sha256(rp_id.encode()).digest() + bytes([flags])
        auth_data += struct.pack(">I", self.counter)
        client = json.dumps(
            {"type": kind, "challenge": b64.encode_url(challenge_of(statement)), "origin": origin}
        ).encode()
        signature = self.sign(auth_data + hashlib.sha256(client).digest())
        return PasskeyApproval(statement, b"cred-1", auth_data, client, signature).to_json()


def statement(decision: str = "approve", terms: RequestTerms = TERMS, **changes: Any) -> bytes:
    fields: dict[str, Any] = {
        "version_digest": "sha256:" + "b" * 64,
        "reason": "" if decision == "approve" else "no ticket covers this model",
        "nonce": "c" * 32,
        "origin": ORIGIN,
        "rp_id": RP_ID,
        **changes,
    }
    approval = ApprovalStatement.for_request(
        terms,
        approver="alice",
        decision=decision,
        issued_at=NOW,
        valid_for=dt.timedelta(hours=1),
    )
    return statement_for(approval, **fields).to_json()


@pytest.fixture(params=[-7, -8, -257], ids=["ES256", "EdDSA", "RS256"])
def authenticator(request: pytest.FixtureRequest) -> SoftAuthenticator:
    key: PrivateKey
    if request.param == -7:
        key = ec.generate_private_key(ec.SECP256R1())
    elif request.param == -8:
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SoftAuthenticator(key, request.param)


def test_an_assertion_over_the_statement_verifies(authenticator: SoftAuthenticator) -> None:
    payload = statement()
    parsed, _ = verify_passkey_envelope(
        authenticator.assert_(payload), authenticator.public_der, authenticator.algorithm
    )
    assert parsed.to_json() == payload
    assert parsed.approval.request_digest == TERMS.digest()
    assert PasskeyStatement.from_json(payload) == parsed


def test_every_flipped_byte_is_refused() -> None:
    device = SoftAuthenticator(ec.generate_private_key(ec.SECP256R1()), -7)
    good = PasskeyApproval.from_json(device.assert_(statement()))
    for field in ("statement_bytes", "authenticator_data", "client_data_json", "signature"):
        original: bytes = getattr(good, field)
        for index in range(len(original)):
            bent = bytearray(original)
            bent[index] ^= 0x01
            changed = PasskeyApproval(**{**good.__dict__, field: bytes(bent)})
            with pytest.raises((VerificationError, FormatError)):
                verify_passkey_envelope(changed.to_json(), device.public_der, -7)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"origin": "https://evil.example"}, "signed at another origin"),
        ({"rp_id": "evil.example"}, "another RP id"),
        ({"flags": 0x01}, "user not present and verified"),
        ({"kind": "webauthn.create"}, "not an assertion"),
    ],
)
def test_the_assertion_must_fit_the_statement(options: dict[str, Any], message: str) -> None:
    device = SoftAuthenticator(ec.generate_private_key(ec.SECP256R1()), -7)
    with pytest.raises(VerificationError, match=message):
        verify_passkey_envelope(device.assert_(statement(), **options), device.public_der, -7)


def test_another_key_or_algorithm_is_refused() -> None:
    device = SoftAuthenticator(ec.generate_private_key(ec.SECP256R1()), -7)
    other = SoftAuthenticator(ec.generate_private_key(ec.SECP256R1()), -7)
    envelope = device.assert_(statement())
    with pytest.raises(VerificationError, match="does not verify"):
        verify_passkey_envelope(envelope, other.public_der, -7)
    with pytest.raises(VerificationError, match="does not verify"):
        verify_passkey_envelope(envelope, device.public_der, -8)


def _events(device: SoftAuthenticator, envelope: bytes, **approve: Any) -> list[dict[str, Any]]:
    view = {
        "id": TERMS.request_id,
        "model": TERMS.model,
        "version": TERMS.version,
        "requester": TERMS.grantee,
        "justification": TERMS.justification,
        "duration_s": TERMS.duration_s,
        "byte_budget": TERMS.byte_budget,
    }
    key_id = passkey_key_id(device.public_der)
    return [
        {
            "action": "console.passkey.register",
            "outcome": "allowed",
            "principal": "alice",
            "detail": {
                "principal": "alice",
                "key_id": key_id,
                "public_key": b64.encode(device.public_der),
                "algorithm": device.algorithm,
            },
        },
        {"action": "request.create", "outcome": "allowed", "detail": {"request": view}},
        {
            "action": "request.approve",
            "outcome": "allowed",
            "principal": "alice",
            "time": format_time(NOW + dt.timedelta(minutes=1)),
            "detail": {
                "request_id": TERMS.request_id,
                "key_id": key_id,
                "envelope": base64.b64encode(envelope).decode(),
                **approve,
            },
        },
    ]


def _ledger(events: list[dict[str, Any]]) -> PasskeyLedger:
    ledger = PasskeyLedger()
    for index, event in enumerate(events):
        ledger.check(index, event)
    return ledger


def test_the_ledger_checks_approvals_against_the_logged_key() -> None:
    device = SoftAuthenticator(ec.generate_private_key(ec.SECP256R1()), -7)
    assert _ledger(_events(device, device.assert_(statement()))).checked == 1

    unregistered = _events(device, device.assert_(statement()))[1:]
    with pytest.raises(VerificationError, match=r"entry 1: .*never registered"):
        _ledger(unregistered)

    other_terms = RequestTerms(**{**TERMS.__dict__, "byte_budget": 1 << 40})
    with pytest.raises(VerificationError, match=r"entry 2: .*other terms"):
        _ledger(_events(device, device.assert_(statement(terms=other_terms))))

    forged = _events(device, device.assert_(statement()))
    forged[2]["principal"] = "bob"
    with pytest.raises(VerificationError, match="someone else's credential"):
        _ledger(forged)

    wrong_key_id = _events(device, device.assert_(statement()))
    wrong_key_id[0]["detail"]["key_id"] = "0" * 64
    with pytest.raises(VerificationError, match="key id does not match"):
        _ledger(wrong_key_id)

    revoked = _events(device, device.assert_(statement()))
    revoked.insert(2, {"action": "console.passkey.revoke", "outcome": "allowed",
                       "detail": {"key_id": passkey_key_id(device.public_der)}})  # fmt: skip
    with pytest.raises(VerificationError, match=r"entry 3: .*\(or revoked\)"):
        _ledger(revoked)

    never_filed = _events(device, device.assert_(statement()))
    del never_filed[1]
    with pytest.raises(VerificationError, match="request the log never filed"):
        _ledger(never_filed)

    late = _events(device, device.assert_(statement()))
    late[2]["time"] = format_time(NOW + dt.timedelta(hours=2))  # valid for one hour
    with pytest.raises(VerificationError, match="outside its validity"):
        _ledger(late)

    as_denial = _events(device, device.assert_(statement()))
    as_denial[2]["action"] = "request.deny"
    with pytest.raises(VerificationError, match="another decision"):
        _ledger(as_denial)


def _job_events(device: SoftAuthenticator, envelope: bytes, digest: str) -> list[dict[str, Any]]:
    """A job filed with terms digest ``digest`` and a passkey approval of it, as logged."""
    events = _events(device, envelope)
    events[1] = {
        "action": "job.submit",
        "outcome": "allowed",
        "detail": {"job": {"id": TERMS.request_id}, "terms_digest": digest},
    }
    events[2]["action"] = "job.approve"
    detail = events[2]["detail"]
    detail["job_id"] = detail.pop("request_id")
    return events


def test_the_ledger_checks_passkey_job_approvals_the_same_way() -> None:
    """A job's passkey approval signs the job's terms digest (logged when it was submitted)."""
    device = SoftAuthenticator(ec.generate_private_key(ec.SECP256R1()), -7)
    assert _ledger(_job_events(device, device.assert_(statement()), TERMS.digest())).checked == 1

    with pytest.raises(VerificationError, match=r"entry 2: .*other terms than the job's"):
        _ledger(_job_events(device, device.assert_(statement()), "0" * 64))
    as_request = _job_events(device, device.assert_(statement()), TERMS.digest())
    as_request[2]["action"] = "job.deny"
    with pytest.raises(VerificationError, match="another decision"):
        _ledger(as_request)
    never_filed = _job_events(device, device.assert_(statement()), TERMS.digest())
    del never_filed[1]
    with pytest.raises(VerificationError, match="job the log never filed"):
        _ledger(never_filed)
    flipped = bytearray(device.assert_(statement()))
    flipped[-40] ^= 1
    with pytest.raises(VerificationError):
        _ledger(_job_events(device, bytes(flipped), TERMS.digest()))


def test_audit_verify_catches_an_approval_the_service_made_up(tmp_path: Path) -> None:
    """A service that signs its own log could append an approval nobody's passkey signed; the
    log verifies, the approval does not."""
    device = SoftAuthenticator(ec.generate_private_key(ec.SECP256R1()), -7)
    impostor = SoftAuthenticator(ec.generate_private_key(ec.SECP256R1()), -7)
    signer = Ed25519NoteSigner.generate("weightvault.custody/audit")
    trail = AuditTrail(str(tmp_path / "audit.tlog"), "weightvault.custody/audit", signer, b"k" * 32)
    try:
        for event in _events(device, device.assert_(statement())):
            trail.append(event)
        assert verify_audit(trail.export(), signer.verifier_key.to_text()).passkey_approvals == 1
        trail.append(_events(device, impostor.assert_(statement()))[2])
        with pytest.raises(VerificationError, match="entry 3: passkey signature does not verify"):
            verify_audit(trail.export(), signer.verifier_key.to_text())
    finally:
        trail.close()
