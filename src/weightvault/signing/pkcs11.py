"""The PKCS#11 signing method: an EC key held in a token or HSM signs the OMS bundle.

The bundle is exactly what the key method writes (``publicKey.hint`` = hex SHA-256 of the public
key's PEM, DSSE signature = DER ECDSA over PAE with the curve's hash), so anyone holding the public
key verifies it with the key method: ``weightvault verify --key PUB.pem`` or the ``model-signing``
package's ``use_elliptic_key_verifier``. With a certificate (and optional chain) the bundle
carries the chain instead, like the certificate method, and verifies against a trust root.

The private key never leaves the token: the digest of the PAE is computed here and the token
signs it with ``CKM_ECDSA`` (see :mod:`weightvault.keys.pkcs11` for URIs, PINs and errors).
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from weightvault._fs import read_small_file
from weightvault.errors import FormatError, KeyMaterialError, VerificationError
from weightvault.keys.pkcs11 import KeyKind, Pkcs11Session, Pkcs11Uri
from weightvault.oms.bundle import (
    certificate_bundle_json,
    key_bundle_json,
    parse_bundle,
    public_key_hint,
)
from weightvault.oms.dsse import pae
from weightvault.signing._base import Signer, SignerIdentity, VerifiedPayload, Verifier

if TYPE_CHECKING:
    from weightvault.oms.bundle import Bundle

__all__ = ["Pkcs11Signer", "Pkcs11Verifier"]

_CURVE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}
_MAX_CERT_FILE_BYTES = 1024 * 1024


def _load_certificates(path: Path, what: str) -> list[x509.Certificate]:
    data = read_small_file(path, what, _MAX_CERT_FILE_BYTES)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        try:
            certificates = [x509.load_der_x509_certificate(data)]
        except ValueError:
            raise KeyMaterialError(
                f"{what} {str(path)!r} holds no PEM or DER X.509 certificate"
            ) from None
    return certificates


def _ec_key(key: object, where: str) -> ec.EllipticCurvePublicKey:
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVE_HASHES:
        raise KeyMaterialError(
            f"{where}: OMS signatures need an EC P-256, P-384 or P-521 key",
            hint="point the URI at an EC key (Ed25519 and RSA keys cannot sign OMS bundles)",
        )
    return key


class Pkcs11Signer(Signer):
    """Signs with an EC private key on a PKCS#11 token (key method bundle, or certificate chain).

    The constructor opens the token once to check everything that can be checked before signing
    (module, token, PIN, key present and of the right type, certificate matching the key), so a
    mistake is reported before any model is hashed.
    """

    def __init__(
        self,
        uri: Pkcs11Uri | str,
        *,
        certificate: Path | None = None,
        chain: Path | None = None,
        pin: str | None = None,
    ) -> None:
        if chain is not None and certificate is None:
            raise KeyMaterialError(
                "a certificate chain was given without the signing certificate",
                hint="give the signing certificate too",
                remedy="certificate",
            )
        self._uri = uri if isinstance(uri, Pkcs11Uri) else Pkcs11Uri.parse(uri)
        self._pin = pin
        with Pkcs11Session(self._uri, pin=pin) as session:
            kind = session.key_kind()
            if not kind.is_ecdsa:
                article = "an" if kind in (KeyKind.ED25519, KeyKind.AES) else "a"
                raise KeyMaterialError(
                    f"PKCS#11 key {self._uri.describe_object()} on token "
                    f"{session.token_label!r} is {article} {kind.value} key; OMS signatures need "
                    "an EC P-256, P-384 or P-521 key",
                    hint="point the URI at an EC key",
                )
            self._public_key = _ec_key(session.public_key(), str(self._uri))
            self._token_label = session.token_label
        self._hint = public_key_hint(self._public_key)
        self._chain_der: list[bytes] | None = None
        self._certificate: x509.Certificate | None = None
        if certificate is not None:
            leaf_candidates = _load_certificates(certificate, "certificate file")
            leaf = leaf_candidates[0]
            if leaf.public_key() != self._public_key:
                raise KeyMaterialError(
                    f"certificate {str(certificate)!r} is for another key than the PKCS#11 key "
                    f"{self._uri.describe_object()}",
                    hint="give the certificate issued for this token key",
                )
            chain_certs = leaf_candidates[1:]
            if chain is not None:
                chain_certs += _load_certificates(chain, "certificate chain file")
            self._certificate = leaf
            self._chain_der = [
                cert.public_bytes(serialization.Encoding.DER) for cert in [leaf, *chain_certs]
            ]

    @classmethod
    def from_uri(
        cls,
        uri: str,
        *,
        certificate: Path | None = None,
        chain: Path | None = None,
    ) -> Pkcs11Signer:
        """The CLI's entry point: ``--pkcs11-uri URI [--certificate C --chain CH]``."""
        return cls(uri, certificate=certificate, chain=chain)

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    @property
    def identity(self) -> SignerIdentity:
        if self._certificate is not None:
            return SignerIdentity(
                method="pkcs11",
                subject=self._certificate.subject.rfc4514_string(),
                issuer=self._certificate.issuer.rfc4514_string(),
                key_fingerprint=self._hint,
            )
        return SignerIdentity(method="pkcs11", subject=str(self._uri), key_fingerprint=self._hint)

    def sign(self, payload_type: str, payload: bytes) -> bytes:
        message = pae(payload_type, payload)
        with Pkcs11Session(self._uri, pin=self._pin) as session:
            signature = session.sign_ecdsa(message)
        # Check the token's answer against the public key before writing it anywhere: a public
        # object that does not belong to the private key would otherwise give unverifiable files.
        try:
            self._public_key.verify(
                signature, message, ec.ECDSA(_CURVE_HASHES[self._public_key.curve.name]())
            )
        except InvalidSignature:
            raise KeyMaterialError(
                f"PKCS#11 token {self._token_label!r} produced a signature that its public key "
                f"{self._uri.describe_object()} does not verify",
                hint="the public and private objects under this label/id are not a pair",
            ) from None
        if self._chain_der is not None:
            return certificate_bundle_json(payload_type, payload, signature, self._chain_der)
        return key_bundle_json(payload_type, payload, signature, self._public_key)


class Pkcs11Verifier(Verifier):
    """Verifies a bundle made with a PKCS#11 key, given the public key (PEM file or token).

    This is the key method's check: the signature must verify under the given key, and the
    bundle's key hint (or embedded key, or leaf certificate key) must be that key. Certificate
    bundles are accepted when the leaf certificate holds this key; the key itself is the trust
    anchor here (use the certificate method with ``--trust-root`` for X.509 path validation).
    """

    def __init__(self, public_key: ec.EllipticCurvePublicKey) -> None:
        self._public_key = _ec_key(public_key, "verification key")
        self._hint = public_key_hint(self._public_key)

    @classmethod
    def from_uri(cls, uri: str, *, pin: str | None = None) -> Pkcs11Verifier:
        """Read the public key from the token (no PIN needed for public objects)."""
        with Pkcs11Session(uri, pin=pin) as session:
            key = session.public_key()
        return cls(_ec_key(key, str(Pkcs11Uri.parse(uri))))

    @classmethod
    def from_public_key_file(cls, path: Path) -> Pkcs11Verifier:
        """Load a PEM (SubjectPublicKeyInfo) public key exported from the token."""
        data = read_small_file(path, "public key file", _MAX_CERT_FILE_BYTES)
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            try:
                key = serialization.load_der_public_key(data)
            except ValueError:
                raise KeyMaterialError(
                    f"public key file {str(path)!r} holds no PEM or DER public key"
                ) from None
        return cls(_ec_key(key, f"public key file {str(path)!r}"))

    @classmethod
    def from_public_key_pem(cls, pem: bytes) -> Pkcs11Verifier:
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError:
            raise KeyMaterialError("not a PEM public key") from None
        return cls(_ec_key(key, "public key"))

    def _check_key_binding(self, bundle: Bundle) -> None:
        material = bundle.verification_material
        if material.certificates:
            try:
                leaf = x509.load_der_x509_certificate(material.certificates[0])
            except ValueError:
                raise FormatError(
                    "verificationMaterial: the leaf certificate is not DER X.509"
                ) from None
            if leaf.public_key() != self._public_key:
                raise VerificationError(
                    "signature was made with a different key: the bundle's certificate is for "
                    "another key"
                )
            return
        if material.public_key_hint:
            if not hmac.compare_digest(material.public_key_hint.lower(), self._hint):
                raise VerificationError(
                    "signature was made with a different key: the bundle's key hint "
                    f"{material.public_key_hint[:16]}... is not this key's {self._hint[:16]}..."
                )
            return
        if material.public_key_raw is not None:
            raw = material.public_key_raw
            try:
                embedded = (
                    serialization.load_pem_public_key(raw)
                    if raw.lstrip().startswith(b"-----")
                    else serialization.load_der_public_key(raw)
                )
            except ValueError:
                raise FormatError(
                    "verificationMaterial.publicKey.rawBytes: not a public key"
                ) from None
            if embedded != self._public_key:
                raise VerificationError(
                    "signature was made with a different key: the bundle's embedded key differs"
                )
            return
        raise FormatError("verificationMaterial: no key hint, key or certificate")

    def verify(self, bundle_json: bytes) -> VerifiedPayload:
        # 1. Parse strictly (unknown fields, duplicate keys, bad base64 are format errors).
        bundle = parse_bundle(bundle_json)
        # 2. OMS bundles carry exactly one signature.
        if len(bundle.signatures) != 1:
            raise FormatError(
                f"dsseEnvelope.signatures: expected exactly one signature, found "
                f"{len(bundle.signatures)}"
            )
        # 3. The bundle must name this key (hint, embedded key, or leaf certificate).
        self._check_key_binding(bundle)
        # 4. ECDSA over PAE(payloadType, payload) with the curve's hash.
        message = pae(bundle.payload_type, bundle.payload)
        algorithm = ec.ECDSA(_CURVE_HASHES[self._public_key.curve.name]())
        try:
            self._public_key.verify(bundle.signatures[0].sig, message, algorithm)
        except InvalidSignature:
            raise VerificationError(
                "signature does not verify: the payload was changed or signed by another key"
            ) from None
        return VerifiedPayload(
            payload_type=bundle.payload_type,
            payload=bundle.payload,
            signer=SignerIdentity(
                method="pkcs11",
                subject=f"EC key {self._hint[:16]}",
                key_fingerprint=self._hint,
            ),
        )
