"""The key method: an EC P-256/P-384/P-521 key pair in PEM files.

Bundles carry only a hint of the key (hex SHA-256 of its PEM), as model-signing 1.1 writes them;
older bundles carried the key itself (``rawBytes``), which is compared to the verifier's key.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from weightvault.errors import FormatError, VerificationError
from weightvault.oms.bundle import Bundle, key_bundle_json, parse_bundle, public_key_hint
from weightvault.oms.dsse import pae, pae_legacy_v02
from weightvault.signing._base import Signer, SignerIdentity, VerifiedPayload, Verifier
from weightvault.signing._pem import ecdsa_hash_for, load_ec_private_key, load_ec_public_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["KeySigner", "KeyVerifier", "check_envelope_signature"]


def check_envelope_signature(bundle: Bundle, public_key: ec.EllipticCurvePublicKey) -> None:
    """Check that one of the envelope's signatures verifies under ``public_key``.

    Accepts the DSSE v1 encoding, and the encoding model-signing 0.2 signed by mistake (see
    :func:`~weightvault.oms.dsse.pae_legacy_v02`), with the curve's hash or, as that release did,
    SHA-256. Raises :class:`VerificationError` with one uniform message otherwise.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    envelope = bundle.dsse_envelope
    curve_hash = ecdsa_hash_for(public_key.curve)
    candidates = [
        (pae(envelope.payload_type, envelope.payload), curve_hash),
        (pae_legacy_v02(envelope.payload_type, envelope.payload), curve_hash),
        (pae_legacy_v02(envelope.payload_type, envelope.payload), hashes.SHA256()),
    ]
    for signature in envelope.signatures:
        for message, algorithm in candidates:
            try:
                public_key.verify(signature.sig, message, ec.ECDSA(algorithm))
                return
            except InvalidSignature:
                continue
    raise VerificationError(
        "signature does not verify: the signed payload was changed or another key signed it"
    )


#: What the verifier of one kind of material says about a bundle of the other kind.
_OTHER_METHOD = {
    "public_key": (
        "the signature was made with a certificate, not a key",
        "verify it with trust roots (the certificate method)",
        "verify-with-trust-root",
    ),
    "certificate": (
        "the signature was made with a key, not a certificate",
        "verify it with the signer's public key",
        "verify-with-key",
    ),
}


def parse_bundle_of(bundle_json: bytes, kind: str) -> Bundle:
    """The bundle, strictly parsed, if it carries ``kind`` material (``public_key`` or
    ``certificate``); otherwise a :class:`VerificationError` naming the method to use."""
    bundle = parse_bundle(bundle_json)
    if bundle.verification_material.kind != kind:
        message, hint, remedy = _OTHER_METHOD[kind]
        raise VerificationError(message, hint=hint, remedy=remedy)
    return bundle


class KeySigner(Signer):
    """Signs with an EC private key; the ECDSA hash follows the curve."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        ecdsa_hash_for(private_key.curve)  # refuses unsupported curves early
        self._private_key = private_key
        self._hint = public_key_hint(private_key.public_key())

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], password: str | bytes | None = None
    ) -> KeySigner:
        return cls(load_ec_private_key(path, password))

    @property
    def identity(self) -> SignerIdentity:
        return SignerIdentity("key", f"EC key {self._hint[:16]}", key_fingerprint=self._hint)

    def sign(self, payload_type: str, payload: bytes) -> bytes:
        from cryptography.hazmat.primitives.asymmetric import ec

        algorithm = ec.ECDSA(ecdsa_hash_for(self._private_key.curve))
        signature = self._private_key.sign(pae(payload_type, payload), algorithm)
        return key_bundle_json(payload_type, payload, signature, self._private_key.public_key())


class KeyVerifier(Verifier):
    """Verifies bundles made by :class:`KeySigner` (or model-signing's key method)."""

    def __init__(self, public_key: ec.EllipticCurvePublicKey) -> None:
        ecdsa_hash_for(public_key.curve)
        self._public_key = public_key
        self._hint = public_key_hint(public_key)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], password: str | bytes | None = None
    ) -> KeyVerifier:
        return cls(load_ec_public_key(path, password))

    def verify(self, bundle_json: bytes) -> VerifiedPayload:
        # 1. The bundle must name a key, not a certificate chain.
        bundle = parse_bundle_of(bundle_json, "public_key")
        material = bundle.verification_material
        # 2. A recorded key (hint or raw key) must be ours: a clear message for the common
        #    mistake of verifying with the wrong key. The signature check below decides anyway.
        if material.public_key_hint and material.public_key_hint != self._hint:
            raise VerificationError(
                "signed by a different key (the bundle's key hint does not match the given"
                " public key)"
            )
        if material.public_key_raw is not None:
            recorded = _load_raw_key(material.public_key_raw)
            if recorded is not None and public_key_hint(recorded) != self._hint:
                raise VerificationError(
                    "signed by a different key (the key in the bundle is not the given key)"
                )
        # 3. The DSSE signature.
        check_envelope_signature(bundle, self._public_key)
        return VerifiedPayload(
            bundle.payload_type,
            bundle.payload,
            SignerIdentity("key", f"EC key {self._hint[:16]}", key_fingerprint=self._hint),
        )


def _load_raw_key(raw: bytes) -> ec.EllipticCurvePublicKey | None:
    """Older bundles stored the key as PEM (sometimes DER); ``None`` if it cannot be read."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(raw)
        else:
            key = serialization.load_der_public_key(raw)
    except (ValueError, TypeError) as exc:
        raise FormatError("verificationMaterial.publicKey.rawBytes: not a public key") from exc
    return key if isinstance(key, ec.EllipticCurvePublicKey) else None
