"""The certificate method: real path validation, validity, code-signing EKU, identity."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from _pki import NOW, Pki, make_ca, make_leaf, write_certs, write_private
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from weightvault.errors import KeyMaterialError, UsageError, VerificationError
from weightvault.oms.bundle import certificate_bundle_json
from weightvault.oms.dsse import INTOTO_PAYLOAD_TYPE, pae
from weightvault.signing import check, digest, sign
from weightvault.signing._pem import load_certificates, load_ec_private_key
from weightvault.signing.certificate import CertificateSigner, CertificateVerifier
from weightvault.signing.key import KeyVerifier


def _signed(model: Path, pki: Pki) -> Path:
    sign(model, CertificateSigner.from_files(pki.leaf_key, pki.leaf, [pki.chain]))
    return model / "model.sig"


def test_sign_and_verify_with_identity(model: Path, pki: Pki) -> None:
    _signed(model, pki)
    result = check(model, None, CertificateVerifier.from_file(pki.root, identity=pki.email))
    assert result.ok
    assert result.signer is not None
    assert result.signer.subject == pki.email
    assert result.signer.issuer == "CN=test intermediate"


def test_wrong_identity_is_rejected(model: Path, pki: Pki) -> None:
    _signed(model, pki)
    verifier = CertificateVerifier.from_file(pki.root, identity="mallory@example.com")
    result = check(model, None, verifier)
    assert not result.ok
    assert "not by the expected identity mallory@example.com" in (result.signature_error or "")


def test_untrusted_root_is_rejected(model: Path, pki: Pki) -> None:
    sign(model, CertificateSigner.from_files(pki.other_key, pki.other_leaf, [pki.other_chain]))
    result = check(model, None, CertificateVerifier.from_file(pki.root, unsafe_no_identity=True))
    assert "does not validate against the trust roots" in (result.signature_error or "")


def test_missing_intermediate_is_rejected(model: Path, pki: Pki) -> None:
    sign(model, CertificateSigner.from_files(pki.leaf_key, pki.leaf, []))
    result = check(model, None, CertificateVerifier.from_file(pki.root, unsafe_no_identity=True))
    assert "does not validate" in (result.signature_error or "")
    # ...unless the verifier trusts the intermediate directly? No: only roots anchor a path.
    other = CertificateVerifier.from_file(pki.other_root, unsafe_no_identity=True)
    assert not check(model, None, other).ok


def _forge_bundle(model: Path, key_path: Path, leaf_path: Path, chain_path: Path) -> None:
    """Sign without the signer's own checks, as a careless or hostile tool would."""
    key = load_ec_private_key(key_path)
    chain = load_certificates(leaf_path, "c") + load_certificates(chain_path, "c")
    payload = digest(model).to_payload()
    sig = key.sign(
        pae(INTOTO_PAYLOAD_TYPE, payload),
        ec.ECDSA(__import__("cryptography.hazmat.primitives.hashes", fromlist=["SHA256"]).SHA256()),
    )
    der = [c.public_bytes(serialization.Encoding.DER) for c in chain]
    (model / "model.sig").write_bytes(
        certificate_bundle_json(INTOTO_PAYLOAD_TYPE, payload, sig, der)
    )


def test_expired_leaf_is_rejected_by_signer_and_verifier(model: Path, pki: Pki) -> None:
    with pytest.raises(KeyMaterialError, match="not valid now"):
        CertificateSigner.from_files(pki.expired_key, pki.expired_leaf, [pki.chain])
    _forge_bundle(model, pki.expired_key, pki.expired_leaf, pki.chain)
    result = check(model, None, CertificateVerifier.from_file(pki.root, unsafe_no_identity=True))
    assert "not valid at validation time" in (result.signature_error or "")
    # The same signature verified at a time inside the leaf's validity passes: the rule is the
    # validation time, not something else in the bundle.
    back_then = CertificateVerifier.from_file(
        pki.root, unsafe_no_identity=True, now=lambda: NOW - datetime.timedelta(days=100)
    )
    assert check(model, None, back_then).ok


def test_wrong_eku_is_rejected_by_signer_and_verifier(model: Path, pki: Pki) -> None:
    with pytest.raises(KeyMaterialError, match="code-signing"):
        CertificateSigner.from_files(pki.wrong_eku_key, pki.wrong_eku_leaf, [pki.chain])
    _forge_bundle(model, pki.wrong_eku_key, pki.wrong_eku_leaf, pki.chain)
    result = check(model, None, CertificateVerifier.from_file(pki.root, unsafe_no_identity=True))
    assert "code-signing" in (result.signature_error or "")


def test_validity_window_uses_injected_time(model: Path, pki: Pki) -> None:
    _signed(model, pki)
    future = CertificateVerifier.from_file(
        pki.root, unsafe_no_identity=True, now=lambda: NOW + datetime.timedelta(days=3 * 365)
    )
    assert "not valid at validation time" in (check(model, None, future).signature_error or "")


def test_key_must_match_certificate(pki: Pki) -> None:
    with pytest.raises(KeyMaterialError, match="does not belong to the private key"):
        CertificateSigner.from_files(pki.other_key, pki.leaf, [pki.chain])


def test_certificate_bundle_is_not_a_key_bundle(
    model: Path, pki: Pki, keypair: tuple[Path, Path]
) -> None:
    _signed(model, pki)
    result = check(model, None, KeyVerifier.from_file(keypair[1]))
    assert "made with a certificate" in (result.signature_error or "")


def test_key_bundle_is_not_a_certificate_bundle(
    model: Path, pki: Pki, keypair: tuple[Path, Path]
) -> None:
    from weightvault.signing.key import KeySigner

    sign(model, KeySigner.from_file(keypair[0]))
    result = check(model, None, CertificateVerifier.from_file(pki.root, unsafe_no_identity=True))
    assert "made with a key" in (result.signature_error or "")


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP521R1()])
def test_larger_curves(tmp_path: Path, model: Path, curve: ec.EllipticCurve) -> None:
    root_key, root = make_ca("root")
    int_key, inter = make_ca("int", root_key, root)
    leaf_key, leaf = make_leaf(int_key, inter, curve=curve)
    sign(
        model,
        CertificateSigner.from_files(
            write_private(tmp_path / "k.pem", leaf_key),
            write_certs(tmp_path / "leaf.pem", leaf),
            [write_certs(tmp_path / "int.pem", inter)],
        ),
    )
    assert check(
        model, None, CertificateVerifier.from_file(
            write_certs(tmp_path / "r.pem", root), unsafe_no_identity=True
        )
    ).ok


def test_leaf_with_server_and_code_signing_eku_is_accepted(tmp_path: Path, model: Path) -> None:
    root_key, root = make_ca("root")
    int_key, inter = make_ca("int", root_key, root)
    leaf_key, leaf = make_leaf(
        int_key, inter, eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CODE_SIGNING]
    )
    sign(
        model,
        CertificateSigner.from_files(
            write_private(tmp_path / "k.pem", leaf_key),
            write_certs(tmp_path / "leaf.pem", leaf),
            [write_certs(tmp_path / "int.pem", inter)],
        ),
    )
    assert check(
        model, None, CertificateVerifier.from_file(
            write_certs(tmp_path / "r.pem", root), unsafe_no_identity=True
        )
    ).ok


def test_bad_inputs_are_one_line_errors(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(KeyMaterialError, match="no PEM certificate"):
        CertificateVerifier.from_file(pki.leaf_key)
    with pytest.raises(UsageError):
        CertificateVerifier([])
    with pytest.raises(UsageError):
        CertificateVerifier(load_certificates(pki.root, "r"), identity=" ")
    with pytest.raises(UsageError, match="no identity policy") as refused:
        CertificateVerifier.from_file(pki.root)  # any signer under the root: only on request
    assert refused.value.remedy == "identity-policy"
    with pytest.raises(UsageError, match="exclude each other"):
        CertificateVerifier.from_file(pki.root, identity=pki.email, unsafe_no_identity=True)
    with pytest.raises(KeyMaterialError, match="exactly one certificate"):
        both = write_certs(
            tmp_path / "both.pem",
            *load_certificates(pki.leaf, "c"),
            *load_certificates(pki.chain, "c"),
        )
        CertificateSigner.from_files(pki.leaf_key, both)


def test_flipped_certificate_byte_is_rejected(model: Path, pki: Pki) -> None:
    import base64
    import json

    sig_path = _signed(model, pki)
    doc = json.loads(sig_path.read_bytes())
    cert = bytearray(
        base64.b64decode(
            doc["verificationMaterial"]["x509CertificateChain"]["certificates"][0]["rawBytes"]
        )
    )
    for position in range(0, len(cert), max(1, len(cert) // 25)):
        mutated = bytearray(cert)
        mutated[position] ^= 0x04
        doc["verificationMaterial"]["x509CertificateChain"]["certificates"][0]["rawBytes"] = (
            base64.b64encode(bytes(mutated)).decode()
        )
        sig_path.write_text(json.dumps(doc))
        any_signer = CertificateVerifier.from_file(pki.root, unsafe_no_identity=True)
        result = check(model, None, any_signer)
        assert not result.ok, position
    with pytest.raises(VerificationError):
        from weightvault.signing import verify

        verify(model, None, CertificateVerifier.from_file(pki.root, unsafe_no_identity=True))
