"""The PKCS#11 signing method on a real SoftHSM2 token, checked by weightvault and model-signing."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tests.paths import MODEL_SIGNING_HISTORY as HISTORY
from tests.signing._pki import key_usage
from tests.softhsm import SoftHsmToken, make_token

from weightvault.errors import FormatError, InputError, KeyMaterialError, VerificationError
from weightvault.oms.bundle import public_key_hint
from weightvault.oms.dsse import INTOTO_PAYLOAD_TYPE
from weightvault.signing.pkcs11 import Pkcs11Signer, Pkcs11Verifier


def _model(root: Path) -> Path:
    model = root / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"hidden": 64}\n')
    (model / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (model / "sub" / "tokenizer.txt").write_text("a b c\n")
    return model


def _peer_payload(model: Path) -> bytes:
    """The in-toto statement model-signing itself builds for this model (files, sha256)."""
    from google.protobuf import json_format  # type: ignore[import-untyped]
    from model_signing import hashing
    from model_signing._signing import signing as peer_signing

    manifest = hashing.Config().hash(model)  # type: ignore[no-untyped-call]
    payload = peer_signing.Payload(manifest)
    return bytes(json_format.MessageToJson(payload.statement.pb).encode("utf-8"))


def _peer_verify_with_key(model: Path, signature: Path, public_pem: Path) -> None:
    from model_signing import verifying

    config = verifying.Config()  # type: ignore[no-untyped-call]
    config.use_elliptic_key_verifier(public_key=public_pem).verify(model, signature)


@pytest.mark.parametrize("curve", ["P-256", "P-384", "P-521"])
def test_bundle_verifies_with_weightvault_and_model_signing(
    token: SoftHsmToken, tmp_path: Path, curve: str
) -> None:
    uri = token.generate_ec_key("release", curve=curve)
    model = _model(tmp_path)
    payload = _peer_payload(model)
    signer = Pkcs11Signer.from_uri(uri)
    bundle_json = signer.sign(INTOTO_PAYLOAD_TYPE, payload)

    # The key method's exact shape: a hint, no key bytes, empty tlog entries, keyid "".
    doc = json.loads(bundle_json)
    assert doc["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert doc["verificationMaterial"] == {
        "publicKey": {"hint": public_key_hint(signer.public_key)},
        "tlogEntries": [],
    }
    assert doc["dsseEnvelope"]["signatures"][0]["keyid"] == ""
    assert base64.b64decode(doc["dsseEnvelope"]["payload"]) == payload

    public_pem = tmp_path / "pub.pem"
    public_pem.write_bytes(token.public_key_pem("release"))
    # weightvault: from the PEM and straight from the token.
    for verifier in (Pkcs11Verifier.from_public_key_file(public_pem), Pkcs11Verifier.from_uri(uri)):
        verified = verifier.verify(bundle_json)
        assert verified.payload == payload
        assert verified.payload_type == INTOTO_PAYLOAD_TYPE
        assert verified.signer.key_fingerprint == public_key_hint(signer.public_key)
    # The real peer, with its key verifier.
    signature = tmp_path / "model.sig"
    signature.write_bytes(bundle_json)
    _peer_verify_with_key(model, signature, public_pem)
    # And the peer notices a changed file under the same signature.
    (model / "config.json").write_text('{"hidden": 65}\n')
    with pytest.raises(ValueError):
        _peer_verify_with_key(model, signature, public_pem)


def test_signature_from_another_tokens_key_is_rejected(token: SoftHsmToken, tmp_path: Path) -> None:
    other = make_token(tmp_path, "other-token")
    mine = token.generate_ec_key("release")
    theirs = other.generate_ec_key("release")
    bundle_json = Pkcs11Signer.from_uri(theirs).sign(INTOTO_PAYLOAD_TYPE, b'{"x": 1}')
    with pytest.raises(VerificationError, match="different key"):
        Pkcs11Verifier.from_uri(mine).verify(bundle_json)
    # Even with the hint rewritten to this key's, the signature itself fails.
    doc = json.loads(bundle_json)
    doc["verificationMaterial"]["publicKey"]["hint"] = public_key_hint(
        Pkcs11Signer.from_uri(mine).public_key
    )
    with pytest.raises(VerificationError, match="does not verify"):
        Pkcs11Verifier.from_uri(mine).verify(json.dumps(doc).encode())


def test_edited_payload_and_flipped_signature_bits_are_rejected(token: SoftHsmToken) -> None:
    uri = token.generate_ec_key("release")
    verifier = Pkcs11Verifier.from_uri(uri)
    bundle_json = Pkcs11Signer.from_uri(uri).sign(INTOTO_PAYLOAD_TYPE, b'{"model": "a"}')
    doc = json.loads(bundle_json)
    edited = json.loads(bundle_json)
    edited["dsseEnvelope"]["payload"] = base64.b64encode(b'{"model": "b"}').decode()
    with pytest.raises(VerificationError):
        verifier.verify(json.dumps(edited).encode())
    retyped = json.loads(bundle_json)
    retyped["dsseEnvelope"]["payloadType"] = "application/json"
    with pytest.raises(VerificationError):
        verifier.verify(json.dumps(retyped).encode())
    signature = base64.b64decode(doc["dsseEnvelope"]["signatures"][0]["sig"])
    for index in range(0, len(signature), 3):
        flipped = bytearray(signature)
        flipped[index] ^= 0x80
        doc["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(bytes(flipped)).decode()
        with pytest.raises(VerificationError):
            verifier.verify(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.pop("dsseEnvelope"),
        lambda d: d["dsseEnvelope"].update(signatures=[]),
        lambda d: d["dsseEnvelope"]["signatures"].append(d["dsseEnvelope"]["signatures"][0]),
        lambda d: d["dsseEnvelope"].update(payload="not base64!"),
        lambda d: d.update(mediaType="application/json"),
        lambda d: d.update(extra=1),
    ],
)
def test_malformed_bundles_are_format_errors(token: SoftHsmToken, mutate: object) -> None:
    uri = token.generate_ec_key("release")
    doc = json.loads(Pkcs11Signer.from_uri(uri).sign(INTOTO_PAYLOAD_TYPE, b"{}"))
    assert callable(mutate)
    mutate(doc)
    with pytest.raises(FormatError):
        Pkcs11Verifier.from_uri(uri).verify(json.dumps(doc).encode())


@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe", b"[]", b"null"])
def test_garbage_is_a_format_error(token: SoftHsmToken, data: bytes) -> None:
    uri = token.generate_ec_key("release")
    with pytest.raises(FormatError):
        Pkcs11Verifier.from_uri(uri).verify(data)


def test_signer_checks_token_problems_before_signing(token: SoftHsmToken) -> None:
    token.generate_ec_key("release")
    token.generate_ed25519_key("ed")
    token.generate_aes_kek("kek")
    cases = {
        token.uri_for("release").replace(f"pin-value={token.pin}", "pin-value=0000"): "wrong PIN",
        token.uri_for("missing"): "key not found",
        token.uri_for("ed"): "is an Ed25519 key; OMS signatures need an EC",
        token.uri_for("kek"): "secret-key object",
        token.uri_for("release").replace(token.label, "no-such"): "token not found",
        token.uri_for("release", with_pin=False): "needs the user PIN",
    }
    for uri, expected in cases.items():
        with pytest.raises(KeyMaterialError) as info:
            Pkcs11Signer.from_uri(uri)
        assert expected in info.value.one_line()
        assert "0000" not in info.value.one_line()


# --- certificate mode -----------------------------------------------------------------------------


def _issue_chain(tmp_path: Path, leaf_public: ec.EllipticCurvePublicKey) -> tuple[Path, Path, Path]:
    now = datetime.now(UTC)

    def build(
        subject: str,
        issuer: str,
        public: ec.EllipticCurvePublicKey,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
            ).add_extension(
                key_usage(ca=False),
                critical=True,
            )
        return builder.sign(signer, hashes.SHA256())

    root_key = ec.generate_private_key(ec.SECP384R1())
    int_key = ec.generate_private_key(ec.SECP384R1())
    root = build("Test Root", "Test Root", root_key.public_key(), root_key, True)
    intermediate = build("Test Intermediate", "Test Root", int_key.public_key(), root_key, True)
    leaf = build("release-signer", "Test Intermediate", leaf_public, int_key, False)
    paths = []
    for name, cert in (("root.pem", root), ("chain.pem", intermediate), ("leaf.pem", leaf)):
        path = tmp_path / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths.append(path)
    return paths[0], paths[1], paths[2]


def test_certificate_mode_verifies_with_model_signing(token: SoftHsmToken, tmp_path: Path) -> None:
    from model_signing import verifying

    uri = token.generate_ec_key("release", curve="P-384")
    public = token.public_key("release")
    root, chain, leaf = _issue_chain(tmp_path, public)
    model = _model(tmp_path)
    signer = Pkcs11Signer.from_uri(uri, certificate=leaf, chain=chain)
    assert signer.identity.subject == "CN=release-signer"
    bundle_json = signer.sign(INTOTO_PAYLOAD_TYPE, _peer_payload(model))
    doc = json.loads(bundle_json)
    certificates = doc["verificationMaterial"]["x509CertificateChain"]["certificates"]
    assert len(certificates) == 2
    signature = tmp_path / "model.sig"
    signature.write_bytes(bundle_json)
    config = verifying.Config()  # type: ignore[no-untyped-call]
    config.use_certificate_verifier(certificate_chain=[root]).verify(model, signature)
    # Our verifier accepts it when the leaf holds the expected key.
    assert Pkcs11Verifier.from_uri(uri).verify(bundle_json).payload == base64.b64decode(
        doc["dsseEnvelope"]["payload"]
    )


def test_certificate_for_another_key_is_refused(token: SoftHsmToken, tmp_path: Path) -> None:
    uri = token.generate_ec_key("release")
    _, chain, leaf = _issue_chain(tmp_path, ec.generate_private_key(ec.SECP256R1()).public_key())
    with pytest.raises(KeyMaterialError, match="for another key"):
        Pkcs11Signer.from_uri(uri, certificate=leaf, chain=chain)
    with pytest.raises(KeyMaterialError, match="without the signing certificate"):
        Pkcs11Signer.from_uri(uri, chain=chain)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(KeyMaterialError, match=r"no PEM or DER X\.509"):
        Pkcs11Signer.from_uri(uri, certificate=garbage)


def test_verifier_refuses_non_ec_keys(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = tmp_path / "ed.pem"
    pem.write_bytes(
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyMaterialError, match="EC P-256, P-384 or P-521"):
        Pkcs11Verifier.from_public_key_file(pem)
    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"xx")
    with pytest.raises(KeyMaterialError, match="no PEM or DER public key"):
        Pkcs11Verifier.from_public_key_file(bad)
    with pytest.raises(InputError, match="cannot be read"):
        Pkcs11Verifier.from_public_key_file(tmp_path / "missing.pem")


@pytest.mark.skipif(not HISTORY.is_dir(), reason=f"shared fixtures not present at {HISTORY}")
@pytest.mark.parametrize("version", ["v0.3.1", "v1.0.0", "v1.0.1", "v1.1.0"])
def test_verifier_reads_every_key_bundle_shape_the_peer_wrote(version: str) -> None:
    """Pre-1.1 bundles embed the key (rawBytes), 1.1 records its hint: both bind the key."""
    verifier = Pkcs11Verifier.from_public_key_file(HISTORY / "keys" / "signing-key-pub.pem")
    bundle_json = (HISTORY / f"{version}-elliptic-key" / "model.sig").read_bytes()
    assert verifier.verify(bundle_json).payload_type == INTOTO_PAYLOAD_TYPE
    other = Pkcs11Verifier(ec.generate_private_key(ec.SECP384R1()).public_key())
    with pytest.raises(VerificationError, match="different key"):
        other.verify(bundle_json)
