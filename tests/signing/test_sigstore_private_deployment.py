"""Keyless signing end to end against a private Sigstore deployment run inside the test.

The public Fulcio and Rekor cannot be reached from here, but Sigstore is built to run as private
deployments too: a client trust config names the services and the keys to trust. This test runs a
minimal Fulcio (issues a short-lived code-signing certificate for the OIDC identity, with an
embedded SCT from a CT log key) and a minimal Rekor v1 (logs the DSSE entry in an RFC 6962 tree and
returns the inclusion proof, a signed checkpoint and a signed entry timestamp) on 127.0.0.1, and a
trust config pointing at them. sigstore-python then signs exactly as it would against the public
instance, and the bundle is verified by weightvault's Sigstore verifier, by sigstore-python, and by
the model-signing package.

What this does not show: that the public instances behave like these stand-ins (their behaviour is
sigstore-python's to track), nor OIDC token issuance (the token here is made locally; Fulcio is
where a real deployment checks its signature).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import jwt
import pytest
import rfc8785
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tests.servers import bypass_proxy_for_loopback, loopback_http_server
from tests.signing._pki import key_usage

from weightvault.errors import KeyMaterialError, VerificationError
from weightvault.signing import check, sign, verify
from weightvault.signing.sigstore import IDENTITY_TOKEN_ENV, SigstoreSigner, SigstoreVerifier
from weightvault.tlog.merkle import inclusion_ranges, leaf_hash, root_of_leaf_hashes

IDENTITY = "release-bot@example.com"
ISSUER = "https://issuer.example.test"
_SCT_OID = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
_ISSUER_V1_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_ISSUER_V2_OID = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _key_id(key: ec.EllipticCurvePublicKey) -> bytes:
    return hashlib.sha256(_spki(key)).digest()


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _der_octet_string(data: bytes) -> bytes:
    return b"\x04" + _der_length(len(data)) + data


def _utf8string(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 128
    return bytes([0x0C, len(data)]) + data


@dataclass
class _Deployment:
    """Keys and state of the stand-in Fulcio, CT log and Rekor."""

    ca_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )
    ct_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    rekor_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    leaves: list[bytes] = field(default_factory=list)
    clock_skew: int = 0
    """Seconds added to Rekor's integrated time (to log an entry outside the cert's validity)."""
    requests: list[str] = field(default_factory=list)
    ca_cert: x509.Certificate | None = None

    def __post_init__(self) -> None:
        now = datetime.now(UTC)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "weightvault-test"),
                x509.NameAttribute(NameOID.COMMON_NAME, "private fulcio"),
            ]
        )
        public = self.ca_key.public_key()
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(
                key_usage(ca=True),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.ca_key, hashes.SHA384())
        )
        # Pre-existing log entries, so the inclusion proof has real sibling hashes.
        self.leaves = [leaf_hash(f"earlier entry {i}".encode()) for i in range(6)]

    # --- Fulcio -----------------------------------------------------------------------------------

    def issue(self, csr_pem: bytes, token: str) -> list[str]:
        csr = x509.load_pem_x509_csr(csr_pem)
        assert csr.is_signature_valid, "CSR without proof of possession"
        claims = jwt.decode(token, options={"verify_signature": False}, audience="sigstore")
        public = csr.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)
        assert self.ca_cert is not None
        now = datetime.now(UTC).replace(microsecond=0)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.ca_cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(seconds=30))
            .not_valid_after(now + timedelta(minutes=10))
            .add_extension(
                key_usage(ca=False),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                critical=False,
            )
            .add_extension(
                x509.SubjectAlternativeName([x509.RFC822Name(claims["email"])]), critical=True
            )
            .add_extension(
                x509.UnrecognizedExtension(_ISSUER_V1_OID, claims["iss"].encode()),
                critical=False,
            )
            .add_extension(
                x509.UnrecognizedExtension(_ISSUER_V2_OID, _utf8string(claims["iss"])),
                critical=False,
            )
        )
        # RFC 6962 section 3.2: the SCT signs the TBS certificate without the SCT extension.
        precertificate = builder.sign(self.ca_key, hashes.SHA384())
        sct = self._sct(precertificate.tbs_certificate_bytes)
        sct_list = struct.pack("!H", len(sct)) + sct
        sct_list = struct.pack("!H", len(sct_list)) + sct_list
        final = builder.add_extension(
            x509.UnrecognizedExtension(_SCT_OID, _der_octet_string(sct_list)), critical=False
        ).sign(self.ca_key, hashes.SHA384())
        assert final.tbs_precertificate_bytes == precertificate.tbs_certificate_bytes
        return [
            final.public_bytes(serialization.Encoding.PEM).decode(),
            self.ca_cert.public_bytes(serialization.Encoding.PEM).decode(),
        ]

    def _sct(self, tbs: bytes) -> bytes:
        timestamp = int(time.time() * 1000)
        issuer_key_hash = _key_id(self.ca_key.public_key())
        entry = issuer_key_hash + len(tbs).to_bytes(3, "big") + tbs
        signed = struct.pack("!BBQH", 0, 0, timestamp, 1) + entry + struct.pack("!H", 0)
        signature = self.ct_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        return (
            bytes([0])
            + _key_id(self.ct_key.public_key())
            + struct.pack("!Q", timestamp)
            + struct.pack("!H", 0)
            + bytes([4, 3])
            + struct.pack("!H", len(signature))
            + signature
        )

    # --- Rekor v1 ---------------------------------------------------------------------------------

    def log(self, proposed: dict[str, Any]) -> dict[str, Any]:
        assert proposed["kind"] == "dsse" and proposed["apiVersion"] == "0.0.1"
        content = proposed["spec"]["proposedContent"]
        envelope = json.loads(content["envelope"])
        verifier = content["verifiers"][0]
        body = rfc8785.dumps(
            {
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(content["envelope"].encode()).hexdigest(),
                    },
                    "payloadHash": {
                        "algorithm": "sha256",
                        "value": hashlib.sha256(base64.b64decode(envelope["payload"])).hexdigest(),
                    },
                    "signatures": [
                        {"signature": s["sig"], "verifier": verifier}
                        for s in envelope["signatures"]
                    ],
                },
            }
        )
        index = len(self.leaves)
        self.leaves.append(leaf_hash(body))
        size = len(self.leaves)
        proof = [
            root_of_leaf_hashes(self.leaves[lo:hi]) for lo, hi in inclusion_ranges(index, size)
        ]
        root = root_of_leaf_hashes(self.leaves)
        log_id = _key_id(self.rekor_key.public_key())
        integrated = int(time.time()) + self.clock_skew
        body_b64 = base64.b64encode(body).decode()
        promise = rfc8785.dumps(
            {
                "body": body_b64,
                "integratedTime": integrated,
                "logID": log_id.hex(),
                "logIndex": index,
            }
        )
        set_signature = self.rekor_key.sign(promise, ec.ECDSA(hashes.SHA256()))
        origin = "rekor.example.test - 4242"
        note = f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"
        note_signature = self.rekor_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        checkpoint = (
            note
            + "\n\u2014 rekor.example.test "
            + base64.b64encode(log_id[:4] + note_signature).decode()
            + "\n"
        )
        return {
            hashlib.sha256(body).hexdigest(): {
                "body": body_b64,
                "integratedTime": integrated,
                "logID": log_id.hex(),
                "logIndex": index,
                "verification": {
                    "inclusionProof": {
                        "checkpoint": checkpoint,
                        "hashes": [h.hex() for h in proof],
                        "logIndex": index,
                        "rootHash": root.hex(),
                        "treeSize": size,
                    },
                    "signedEntryTimestamp": base64.b64encode(set_signature).decode(),
                },
            }
        }

    # --- trust config -----------------------------------------------------------------------------

    def trust_config(self, url: str) -> dict[str, Any]:
        assert self.ca_cert is not None
        since = {"start": (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}

        def log_key(key: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": base64.b64encode(_spki(key.public_key())).decode(),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": since,
                },
                "logId": {"keyId": base64.b64encode(_key_id(key.public_key())).decode()},
            }

        service = {"url": url, "majorApiVersion": 1, "validFor": since, "operator": "test"}
        return {
            "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
            "trustedRoot": {
                "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
                "tlogs": [log_key(self.rekor_key)],
                "certificateAuthorities": [
                    {
                        "subject": {"organization": "weightvault-test", "commonName": "fulcio"},
                        "uri": url,
                        "certChain": {
                            "certificates": [
                                {
                                    "rawBytes": base64.b64encode(
                                        self.ca_cert.public_bytes(serialization.Encoding.DER)
                                    ).decode()
                                }
                            ]
                        },
                        "validFor": since,
                    }
                ],
                "ctlogs": [log_key(self.ct_key)],
                "timestampAuthorities": [],
            },
            "signingConfig": {
                "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
                "caUrls": [service],
                "oidcUrls": [service],
                "rekorTlogUrls": [service],
                "tsaUrls": [],
                "rekorTlogConfig": {"selector": "ANY"},
                "tsaConfig": {"selector": "ANY"},
            },
        }


def _handler(deployment: _Deployment) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            deployment.requests.append(self.path)
            try:
                if self.path == "/api/v2/signingCert":
                    token = self.headers["Authorization"].removeprefix("Bearer ")
                    csr = base64.b64decode(json.loads(body)["certificateSigningRequest"])
                    chain = deployment.issue(csr, token)
                    reply: dict[str, Any] = {
                        "signedCertificateEmbeddedSct": {"chain": {"certificates": chain}}
                    }
                    status = 201
                elif self.path == "/api/v1/log/entries":
                    reply = deployment.log(json.loads(body))
                    status = 201
                else:
                    reply, status = {"message": f"no such endpoint {self.path}"}, 404
            except Exception as exc:  # report stand-in bugs to the client, visibly
                reply, status = {"message": f"stand-in failed: {exc!r}"}, 500
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def deployment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[_Deployment, Path]]:
    bypass_proxy_for_loopback(monkeypatch)
    monkeypatch.delenv(IDENTITY_TOKEN_ENV, raising=False)
    state = _Deployment()
    with loopback_http_server(_handler(state), threaded=True) as url:
        config_path = tmp_path / "private-trust-config.json"
        config_path.write_text(json.dumps(state.trust_config(url)))
        yield state, config_path


def _token(email: str = IDENTITY, issuer: str = ISSUER) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": email,
        "email": email,
        "aud": "sigstore",
        "iat": now,
        "exp": now + 600,
    }
    return jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")


def _model(root: Path) -> Path:
    model = root / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"layers": 4}\n')
    (model / "weights.bin").write_bytes(bytes(range(256)) * 100)
    (model / "sub" / "merges.txt").write_text("a b\n")
    return model


def test_keyless_signature_verifies_with_weightvault_sigstore_and_model_signing(
    deployment: tuple[_Deployment, Path], tmp_path: Path
) -> None:
    state, trust_config = deployment
    model = _model(tmp_path)
    signer = SigstoreSigner(_token(), trust_config=trust_config, use_ambient_credentials=False)
    assert signer.identity.subject == IDENTITY
    result = sign(model, signer)
    assert state.requests == ["/api/v2/signingCert", "/api/v1/log/entries"]

    bundle = json.loads(result.signature_path.read_bytes())
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert set(bundle["verificationMaterial"]) >= {"certificate", "tlogEntries"}
    entry = bundle["verificationMaterial"]["tlogEntries"][0]
    assert entry["kindVersion"] == {"kind": "dsse", "version": "0.0.1"}
    assert entry["inclusionProof"]["treeSize"] == "7"

    verifier = SigstoreVerifier(IDENTITY, ISSUER, trust_config=trust_config)
    outcome = verify(model, None, verifier)
    assert outcome.signer is not None and outcome.signer.subject == IDENTITY

    from model_signing import verifying

    config = verifying.Config()  # type: ignore[no-untyped-call]
    config.use_sigstore_verifier(
        identity=IDENTITY, oidc_issuer=ISSUER, trust_config=trust_config
    ).verify(model, result.signature_path)

    # The same signature under another identity, issuer or trusted root does not verify.
    for other in (
        SigstoreVerifier("someone@example.com", ISSUER, trust_config=trust_config),
        SigstoreVerifier(IDENTITY, "https://accounts.google.com", trust_config=trust_config),
        SigstoreVerifier(IDENTITY, ISSUER, offline=True),  # the public-good root
    ):
        with pytest.raises(VerificationError):
            verify(model, None, other)
    # And a change to the model is caught and named.
    (model / "sub" / "merges.txt").write_text("a c\n")
    changed = check(model, None, verifier)
    assert changed.changed == ("sub/merges.txt",)


def test_a_log_signed_by_an_untrusted_rekor_is_rejected(
    deployment: tuple[_Deployment, Path], tmp_path: Path
) -> None:
    state, trust_config = deployment
    model = _model(tmp_path)
    trusted_rekor = state.rekor_key
    state.rekor_key = ec.generate_private_key(ec.SECP256R1())  # the log signs with another key
    signer = SigstoreSigner(_token(), trust_config=trust_config, use_ambient_credentials=False)
    result = sign(model, signer)
    state.rekor_key = trusted_rekor
    outcome = check(
        model, result.signature_path, SigstoreVerifier(IDENTITY, ISSUER, trust_config=trust_config)
    )
    assert not outcome.ok
    assert outcome.signature_error is not None and "log entry" in outcome.signature_error


def test_signer_refuses_a_certificate_without_a_trusted_sct(
    deployment: tuple[_Deployment, Path], tmp_path: Path
) -> None:
    state, trust_config = deployment
    state.ct_key = ec.generate_private_key(ec.SECP256R1())  # a CT log nobody trusts
    signer = SigstoreSigner(_token(), trust_config=trust_config, use_ambient_credentials=False)
    with pytest.raises(KeyMaterialError, match="Sigstore signing failed"):
        sign(_model(tmp_path), signer)
    assert state.requests == ["/api/v2/signingCert"]  # nothing was logged
    assert not (tmp_path / "model" / "model.sig").exists()


def test_entry_logged_after_the_certificate_expired_is_rejected(
    deployment: tuple[_Deployment, Path], tmp_path: Path
) -> None:
    state, trust_config = deployment
    state.clock_skew = 20 * 60  # integrated 20 minutes later: the 10-minute cert has expired
    model = _model(tmp_path)
    signer = SigstoreSigner(_token(), trust_config=trust_config, use_ambient_credentials=False)
    result = sign(model, signer)
    verifier = SigstoreVerifier(IDENTITY, ISSUER, trust_config=trust_config)
    outcome = check(model, result.signature_path, verifier)
    assert not outcome.ok
    assert outcome.signature_error is not None
    assert "not valid at validation time" in outcome.signature_error


def test_keyless_signing_through_the_cli(
    deployment: tuple[_Deployment, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from weightvault.cli.app import run

    _, trust_config = deployment
    model = _model(tmp_path)
    monkeypatch.setenv(IDENTITY_TOKEN_ENV, _token())
    assert run(["sign", str(model), "--sigstore", "--trust-config", str(trust_config)]) == 0
    assert f"signer: sigstore {IDENTITY}" in capsys.readouterr().out
    verify_args = ["verify", str(model), "--sigstore", "--identity", IDENTITY]
    verify_args += ["--issuer", ISSUER, "--trust-config", str(trust_config)]
    assert run(verify_args) == 0
    assert "signature OK (signer: sigstore" in capsys.readouterr().out
    (model / "config.json").write_text('{"layers": 5}\n')
    assert run(verify_args) == 1
    assert "changed: config.json" in capsys.readouterr().out
