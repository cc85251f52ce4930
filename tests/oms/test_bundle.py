"""DSSE PAE and the Sigstore bundle: known answers, round trips, strict parsing."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests.paths import MODEL_SIGNING_HISTORY as HISTORY

from weightvault.errors import FormatError
from weightvault.oms.bundle import (
    BUNDLE_MEDIA_TYPE,
    certificate_bundle_json,
    key_bundle_json,
    parse_bundle,
    public_key_hint,
)
from weightvault.oms.dsse import INTOTO_PAYLOAD_TYPE, pae, pae_legacy_v02


def test_pae_known_answer_from_dsse_spec() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t", "é".encode()) == b"DSSEv1 1 t 2 \xc3\xa9"


def test_legacy_pae_matches_model_signing_0_2() -> None:
    from model_signing._signing import sign_sigstore_pb

    body = b'{"a": "b\\n"}'
    assert pae_legacy_v02(INTOTO_PAYLOAD_TYPE, body) == sign_sigstore_pb.pae_compat(body)
    assert pae(INTOTO_PAYLOAD_TYPE, body) == sign_sigstore_pb.pae(body)


def test_hint_is_sha256_of_reserialized_pem() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import hashlib

    assert public_key_hint(key) == hashlib.sha256(pem).hexdigest()


def test_key_bundle_round_trip() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    sig = private.sign(pae(INTOTO_PAYLOAD_TYPE, b"{}"), ec.ECDSA(hashes.SHA256()))
    data = key_bundle_json(INTOTO_PAYLOAD_TYPE, b"{}", sig, private.public_key())
    bundle = parse_bundle(data)
    assert bundle.media_type == BUNDLE_MEDIA_TYPE
    assert bundle.payload == b"{}"
    assert bundle.payload_type == INTOTO_PAYLOAD_TYPE
    assert bundle.signatures[0].sig == sig
    assert bundle.signatures[0].keyid == ""
    assert bundle.verification_material.public_key_hint == public_key_hint(private.public_key())
    assert bundle.verification_material.kind == "public_key"
    assert bundle.raw_json == data
    doc = json.loads(data)
    assert doc["verificationMaterial"]["tlogEntries"] == []


def test_certificate_bundle_round_trip() -> None:
    chain = [b"leaf-der", b"intermediate-der"]
    data = certificate_bundle_json(INTOTO_PAYLOAD_TYPE, b"x", b"sig", chain)
    bundle = parse_bundle(data)
    assert bundle.verification_material.certificates == tuple(chain)
    assert bundle.verification_material.kind == "certificate"
    with pytest.raises(ValueError):
        certificate_bundle_json(INTOTO_PAYLOAD_TYPE, b"x", b"sig", [])


@pytest.mark.skipif(not HISTORY.is_dir(), reason="shared fixtures folder absent")
@pytest.mark.parametrize(
    "folder", sorted(p.parent.name for p in HISTORY.glob("*/model.sig")) or ["none"]
)
def test_every_historical_bundle_parses(folder: str) -> None:
    bundle = parse_bundle((HISTORY / folder / "model.sig").read_bytes())
    assert bundle.payload_type == INTOTO_PAYLOAD_TYPE
    assert bundle.verification_material.kind in ("public_key", "certificate")
    if "sigstore" in folder:
        assert len(bundle.verification_material.tlog_entries) == 1


def _good() -> dict[str, object]:
    private = ec.generate_private_key(ec.SECP256R1())
    data = key_bundle_json(INTOTO_PAYLOAD_TYPE, b"{}", b"sig", private.public_key())
    doc: dict[str, object] = json.loads(data)
    return doc


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("mediaType"), "mediaType: missing"),
        (lambda d: d.__setitem__("mediaType", "application/json"), "mediaType: unsupported"),
        (lambda d: d.__setitem__("extra", 1), "extra: unknown field"),
        (lambda d: d.pop("dsseEnvelope"), "dsseEnvelope: missing"),
        (lambda d: d["dsseEnvelope"].__setitem__("payload", "%%%"), "dsseEnvelope.payload"),
        (lambda d: d["dsseEnvelope"].__setitem__("signatures", []), "dsseEnvelope.signatures"),
        (
            lambda d: d["dsseEnvelope"]["signatures"][0].__setitem__("sig", 5),
            "dsseEnvelope.signatures[0].sig",
        ),
        (lambda d: d["verificationMaterial"].pop("publicKey"), "verificationMaterial"),
        (
            lambda d: d["verificationMaterial"].__setitem__(
                "x509CertificateChain", {"certificates": []}
            ),
            "exactly one of",
        ),
        (
            lambda d: d.__setitem__("messageSignature", {}),
            "messageSignature",
        ),
    ],
)
def test_malformed_bundles_name_the_field(mutate: object, field: str) -> None:
    doc = _good()
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(FormatError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_bundle(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"[]", b"\xff\xfe", b'{"a": 1, "a": 2}', b'{"x": NaN}', b"null"],
)
def test_not_json_objects_are_format_errors(data: bytes) -> None:
    with pytest.raises(FormatError):
        parse_bundle(data)


def test_every_truncation_of_a_bundle_is_rejected() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    data = key_bundle_json(INTOTO_PAYLOAD_TYPE, b"{}", b"sig", private.public_key())
    for cut in range(0, len(data) - 2, 7):
        with pytest.raises(FormatError):
            parse_bundle(data[:cut])


def test_base64_payload_is_decoded_exactly() -> None:
    doc = _good()
    doc["dsseEnvelope"]["payload"] = base64.b64encode(b"\x00\x01payload").decode()  # type: ignore[index]
    assert parse_bundle(json.dumps(doc).encode()).payload == b"\x00\x01payload"
