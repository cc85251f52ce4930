"""The Sigstore method, offline: the peer's real Sigstore signatures, identity policy, tampering.

The public Sigstore services (Fulcio, Rekor, the OIDC issuers) cannot be reached from here, so:
verification runs fully (offline, against the trusted root in the fixtures' client trust config
and the one sigstore-python ships); signing runs up to the network boundary, where a local stand-in
for Fulcio records the certificate request that sigstore-python sends and refuses it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from tests.paths import MODEL_SIGNING_HISTORY as HISTORY
from tests.paths import OFFLINE_TRUST_CONFIG as TRUST_CONFIG
from tests.servers import bypass_proxy_for_loopback, loopback_http_server

from weightvault.errors import (
    FormatError,
    InputError,
    KeyMaterialError,
    UsageError,
    VerificationError,
)
from weightvault.oms.dsse import INTOTO_PAYLOAD_TYPE
from weightvault.signing.sigstore import IDENTITY_TOKEN_ENV, SigstoreSigner, SigstoreVerifier

IDENTITY = "stefanb@us.ibm.com"
ISSUER = "https://sigstore.verify.ibm.com/oauth2"
VERSIONS = ["v0.3.1", "v1.0.0", "v1.0.1", "v1.1.0"]

pytestmark = pytest.mark.skipif(
    not TRUST_CONFIG.is_file(), reason=f"shared fixtures not present at {HISTORY}"
)


@pytest.fixture(scope="module")
def verifier() -> SigstoreVerifier:
    return SigstoreVerifier(IDENTITY, ISSUER, trust_config=TRUST_CONFIG)


def _bundle(version: str) -> bytes:
    return (HISTORY / f"{version}-sigstore" / "model.sig").read_bytes()


def _check_payload_against_files(payload: bytes, model: Path) -> None:
    """The statement's resources are exactly the model's signed files with these digests."""
    statement = json.loads(payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    resources = {r["name"]: r for r in statement["predicate"]["resources"]}
    assert set(resources) == {"signme-1", "signme-2"}
    root = hashlib.sha256()
    for name in sorted(resources):
        assert resources[name]["algorithm"] == "sha256"
        digest = hashlib.sha256((model / name).read_bytes()).hexdigest()
        assert resources[name]["digest"] == digest
        root.update(bytes.fromhex(digest))
    assert statement["subject"][0]["digest"]["sha256"] == root.hexdigest()


@pytest.mark.parametrize("version", VERSIONS)
def test_peer_sigstore_signatures_verify_offline(verifier: SigstoreVerifier, version: str) -> None:
    verified = verifier.verify(_bundle(version))
    assert verified.payload_type == INTOTO_PAYLOAD_TYPE
    assert verified.signer.method == "sigstore"
    assert verified.signer.subject == IDENTITY
    assert verified.signer.issuer == ISSUER
    _check_payload_against_files(verified.payload, HISTORY / f"{version}-sigstore")


def test_shipped_trusted_root_also_verifies_offline() -> None:
    shipped = SigstoreVerifier(IDENTITY, ISSUER, offline=True)
    assert shipped.verify(_bundle("v1.1.0")).signer.subject == IDENTITY


@pytest.mark.parametrize(
    ("identity", "issuer"),
    [
        ("someone@us.ibm.com", ISSUER),
        ("stefanb@us.ibm.co", ISSUER),
        ("STEFANB@us.ibm.com", ISSUER),
        (IDENTITY, "https://accounts.google.com"),
        (IDENTITY, ISSUER + "/"),
        (IDENTITY, "https://github.com/login/oauth"),
    ],
)
def test_wrong_identity_or_issuer_is_rejected(identity: str, issuer: str) -> None:
    strict = SigstoreVerifier(identity, issuer, trust_config=TRUST_CONFIG)
    with pytest.raises(VerificationError) as info:
        strict.verify(_bundle("v1.1.0"))
    assert "\n" not in info.value.one_line()


def test_identity_and_issuer_are_required() -> None:
    with pytest.raises(UsageError):
        SigstoreVerifier("", ISSUER, trust_config=TRUST_CONFIG)
    with pytest.raises(UsageError):
        SigstoreVerifier(IDENTITY, "", trust_config=TRUST_CONFIG)


def _mutated(version: str, mutate: Callable[[dict[str, Any]], object]) -> bytes:
    doc = json.loads(_bundle(version))
    mutate(doc)
    return json.dumps(doc).encode()


def _entry(doc: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = doc["verificationMaterial"]["tlogEntries"][0]
    return entry


def _reencode(value: str, change: Callable[[bytes], bytes]) -> str:
    return base64.b64encode(change(base64.b64decode(value))).decode()


def _edit_payload(doc: dict[str, Any]) -> None:
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = "0" * 64
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()


TAMPERING: dict[str, Callable[[dict[str, Any]], None]] = {
    "payload edited": _edit_payload,
    "payload type changed": lambda d: d["dsseEnvelope"].update(payloadType="application/json"),
    "signature bit flipped": lambda d: d["dsseEnvelope"]["signatures"][0].update(
        sig=_reencode(
            d["dsseEnvelope"]["signatures"][0]["sig"], lambda b: b[:-1] + bytes([b[-1] ^ 1])
        )
    ),
    "tlog integratedTime": lambda d: _entry(d).update(
        integratedTime=str(int(_entry(d)["integratedTime"]) + 1)
    ),
    "tlog logIndex": lambda d: _entry(d).update(logIndex=str(int(_entry(d)["logIndex"]) + 1)),
    "tlog body": lambda d: _entry(d).update(
        canonicalizedBody=_reencode(
            _entry(d)["canonicalizedBody"], lambda b: b.replace(b'"0.0.1"', b'"0.0.2"')
        )
    ),
    "tlog promise": lambda d: _entry(d)["inclusionPromise"].update(
        signedEntryTimestamp=_reencode(
            _entry(d)["inclusionPromise"]["signedEntryTimestamp"],
            lambda b: b[:-1] + bytes([b[-1] ^ 1]),
        )
    ),
    "tlog proof hash": lambda d: _entry(d)["inclusionProof"]["hashes"].__setitem__(
        0, base64.b64encode(bytes(32)).decode()
    ),
    "tlog proof hash dropped": lambda d: _entry(d)["inclusionProof"]["hashes"].pop(),
    "tlog root hash": lambda d: _entry(d)["inclusionProof"].update(
        rootHash=base64.b64encode(b"\x01" * 32).decode()
    ),
    "tlog checkpoint": lambda d: _entry(d)["inclusionProof"]["checkpoint"].update(
        envelope=_entry(d)["inclusionProof"]["checkpoint"]["envelope"].replace("\n", "\n1", 1)
    ),
    "tlog log id": lambda d: _entry(d)["logId"].update(
        keyId=base64.b64encode(b"\x01" * 32).decode()
    ),
}


@pytest.mark.parametrize("version", ["v1.0.0", "v1.1.0"])
@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampered_bundles_are_rejected(verifier: SigstoreVerifier, version: str, case: str) -> None:
    with pytest.raises((VerificationError, FormatError)) as info:
        verifier.verify(_mutated(version, TAMPERING[case]))
    assert "\n" not in info.value.one_line()


def test_certificate_swapped_for_another_is_rejected(verifier: SigstoreVerifier) -> None:
    older = json.loads(_bundle("v1.0.0"))
    doc = json.loads(_bundle("v1.1.0"))
    doc["verificationMaterial"]["certificate"] = older["verificationMaterial"]["certificate"]
    with pytest.raises(VerificationError):
        verifier.verify(json.dumps(doc).encode())


def test_tlog_entry_from_another_signature_is_rejected(verifier: SigstoreVerifier) -> None:
    older = json.loads(_bundle("v1.0.0"))
    doc = json.loads(_bundle("v1.1.0"))
    doc["verificationMaterial"]["tlogEntries"] = older["verificationMaterial"]["tlogEntries"]
    with pytest.raises(VerificationError):
        verifier.verify(json.dumps(doc).encode())


MALFORMED: dict[str, Callable[[dict[str, Any]], object]] = {
    "no tlog entries": lambda d: d["verificationMaterial"].update(tlogEntries=[]),
    "no certificate": lambda d: d["verificationMaterial"].pop("certificate"),
    "key instead of certificate": lambda d: (
        d["verificationMaterial"].pop("certificate"),
        d["verificationMaterial"].update(publicKey={"hint": "00" * 32}),
    ),
    "certificate not base64": lambda d: d["verificationMaterial"]["certificate"].update(
        rawBytes="@@@"
    ),
    "certificate not DER": lambda d: d["verificationMaterial"]["certificate"].update(
        rawBytes=base64.b64encode(b"not a certificate").decode()
    ),
    "two signatures": lambda d: d["dsseEnvelope"]["signatures"].append(
        copy.deepcopy(d["dsseEnvelope"]["signatures"][0])
    ),
    "no envelope": lambda d: d.pop("dsseEnvelope"),
    "unknown media type": lambda d: d.update(mediaType="application/vnd.dev.sigstore.bundle.v9"),
    "unknown field": lambda d: d.update(surprise=True),
    "tlog entry not an object": lambda d: d["verificationMaterial"].update(tlogEntries=["x"]),
    "tlog entry missing fields": lambda d: d["verificationMaterial"].update(
        tlogEntries=[{"logIndex": "1"}]
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_bundles_are_rejected(verifier: SigstoreVerifier, case: str) -> None:
    with pytest.raises((FormatError, VerificationError)) as info:
        verifier.verify(_mutated("v1.1.0", MALFORMED[case]))
    assert "\n" not in info.value.one_line()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b"[]",
        b"\xff\xfe",
        b'{"mediaType": 1}',
        _bundle("v1.1.0")[:-40] if TRUST_CONFIG.is_file() else b"{",
    ],
)
def test_garbage_is_a_format_error(verifier: SigstoreVerifier, data: bytes) -> None:
    with pytest.raises(FormatError):
        verifier.verify(data)


def test_duplicate_keys_are_refused_before_sigstore_sees_them(verifier: SigstoreVerifier) -> None:
    text = _bundle("v1.1.0").decode()
    doubled = text.replace('"mediaType"', '"mediaType": "x", "mediaType"', 1)
    with pytest.raises(FormatError, match="duplicate"):
        verifier.verify(doubled.encode())


def test_key_bundle_is_pointed_at_the_key_method(verifier: SigstoreVerifier) -> None:
    key_bundle = (HISTORY / "v1.1.0-elliptic-key" / "model.sig").read_bytes()
    with pytest.raises(FormatError, match="key method"):
        verifier.verify(key_bundle)


def test_bad_trust_config(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot be read"):
        SigstoreVerifier(IDENTITY, ISSUER, trust_config=tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"mediaType": "nope"}')
    with pytest.raises(KeyMaterialError, match="not a Sigstore client trust config"):
        SigstoreVerifier(IDENTITY, ISSUER, trust_config=bad)


# --- signing, up to the network boundary ------------------------------------------------------


def _identity_token(
    *,
    email: str = "alice@example.com",
    issuer: str = "https://oauth2.sigstore.dev/auth",
    audience: str = "sigstore",
    lifetime: int = 600,
) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": "alice-subject",
        "email": email,
        "email_verified": True,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "federated_claims": {"connector_id": "https://github.com/login/oauth"},
    }
    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(claims, key, algorithm="ES256")


@pytest.fixture
def no_ambient_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(IDENTITY_TOKEN_ENV, raising=False)


def test_identity_comes_from_the_token(no_ambient_token: None) -> None:
    signer = SigstoreSigner(
        _identity_token(), trust_config=TRUST_CONFIG, use_ambient_credentials=False
    )
    assert signer.identity.method == "sigstore"
    assert signer.identity.subject == "alice@example.com"
    assert signer.identity.issuer == "https://github.com/login/oauth"


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IDENTITY_TOKEN_ENV, _identity_token(email="bob@example.com"))
    signer = SigstoreSigner(trust_config=TRUST_CONFIG, use_ambient_credentials=False)
    assert signer.identity.subject == "bob@example.com"


@pytest.mark.parametrize(
    ("token_factory", "expected"),
    [
        (lambda: _identity_token(lifetime=-120), "not usable"),
        (lambda: _identity_token(audience="someone-else"), "not usable"),
        (lambda: "not.a.jwt", "not usable"),
    ],
)
def test_unusable_tokens_are_refused_before_hashing(
    no_ambient_token: None, token_factory: Callable[[], str], expected: str
) -> None:
    token = token_factory()
    with pytest.raises(KeyMaterialError) as info:
        SigstoreSigner(token, trust_config=TRUST_CONFIG, use_ambient_credentials=False)
    assert expected in info.value.one_line()
    assert token not in info.value.one_line()


def test_no_token_anywhere(no_ambient_token: None) -> None:
    with pytest.raises(KeyMaterialError, match="identity token") as info:
        SigstoreSigner(trust_config=TRUST_CONFIG, use_ambient_credentials=False)
    assert IDENTITY_TOKEN_ENV in info.value.one_line()


class _FulcioStandIn(BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.requests.append((self.path, dict(self.headers.items()), body))
        message = json.dumps({"code": 503, "message": "offline test: no Fulcio here"}).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(message)))
        self.end_headers()
        self.wfile.write(message)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fulcio_stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    bypass_proxy_for_loopback(monkeypatch)
    _FulcioStandIn.requests = []
    with loopback_http_server(_FulcioStandIn) as url:
        yield url


def test_signing_reaches_fulcio_with_a_proof_of_possession(
    tmp_path: Path, fulcio_stand_in: str, no_ambient_token: None
) -> None:
    config = json.loads(TRUST_CONFIG.read_text())
    config["signingConfig"]["caUrls"][0]["url"] = fulcio_stand_in
    config["signingConfig"]["rekorTlogUrls"][0]["url"] = fulcio_stand_in
    local_config = tmp_path / "trust.json"
    local_config.write_text(json.dumps(config))
    token = _identity_token()
    signer = SigstoreSigner(token, trust_config=local_config, use_ambient_credentials=False)
    payload = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "model", "digest": {"sha256": "00" * 32}}],
            "predicateType": "https://model_signing/signature/v1.0",
            "predicate": {"resources": []},
        }
    ).encode()
    with pytest.raises(KeyMaterialError) as info:
        signer.sign(INTOTO_PAYLOAD_TYPE, payload)
    line = info.value.one_line()
    assert "Sigstore signing failed" in line and fulcio_stand_in in line
    assert token not in line
    # What sigstore-python sent: the token as bearer, and a CSR signed by the ephemeral key.
    assert len(_FulcioStandIn.requests) == 1
    path, headers, body = _FulcioStandIn.requests[0]
    assert path == "/api/v2/signingCert"
    assert headers["Authorization"] == f"Bearer {token}"
    csr_pem = base64.b64decode(json.loads(body)["certificateSigningRequest"])
    csr = x509.load_pem_x509_csr(csr_pem)
    assert csr.is_signature_valid
    assert isinstance(csr.public_key(), ec.EllipticCurvePublicKey)


def test_signing_refuses_non_statement_payloads(no_ambient_token: None) -> None:
    signer = SigstoreSigner(
        _identity_token(), trust_config=TRUST_CONFIG, use_ambient_credentials=False
    )
    with pytest.raises(ValueError):
        signer.sign("application/json", b"{}")
    with pytest.raises(FormatError, match="in-toto statement"):
        signer.sign(INTOTO_PAYLOAD_TYPE, b'{"not": "a statement"}')


def test_missing_token_is_reported_before_any_network_use(no_ambient_token: None) -> None:
    # No trust config: the production root would need TUF over the network; the token check
    # comes first, so the message is about the token.
    with pytest.raises(KeyMaterialError, match="identity token"):
        SigstoreSigner(use_ambient_credentials=False)
