"""Signing on the token (ECDSA over a hash computed here, pure Ed25519) and reading the public
key stored beside the private one."""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from weightvault.errors import KeyMaterialError
from weightvault.keys.pkcs11._core import _locked, _SessionBase
from weightvault.keys.pkcs11._kinds import _ECDSA_CURVES, KeyKind, _describe_key_type, _key_kind
from weightvault.keys.pkcs11._token import _describe_pkcs11_error


class _SigningOps(_SessionBase):
    """Public-key reading and signing with the private key the URI names."""

    @_locked
    def public_key(self) -> ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey:
        """Read the public key (EC or Ed25519) stored beside the private key the URI names."""
        key = self.find_key("PUBLIC_KEY", purpose="reading the public key")
        kind = _key_kind(key)
        attribute = self._pkcs11.Attribute
        try:
            point = bytes(key[attribute.EC_POINT])
        except self._pkcs11.PKCS11Error as exc:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: cannot read the public key "
                f"{self.uri.describe_object()}: {_describe_pkcs11_error(exc)}"
            ) from None
        point = _unwrap_octet_string(point)
        try:
            if kind.is_ecdsa:
                curve = _ECDSA_CURVES[kind][0]
                return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
            if kind is KeyKind.ED25519:
                return ed25519.Ed25519PublicKey.from_public_bytes(point)
        except ValueError:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: the public key "
                f"{self.uri.describe_object()} is not a valid {kind.value} point"
            ) from None
        raise KeyMaterialError(
            f"PKCS#11 key {self.uri.describe_object()} on token {self.token_label!r} is "
            f"{_describe_key_type(key)}; only EC P-256/P-384/P-521 and Ed25519 public keys "
            "are supported"
        )

    def _private_key_of(self, kinds: tuple[KeyKind, ...], purpose: str) -> tuple[Any, KeyKind]:
        self._require_login(purpose)
        key = self.find_key("PRIVATE_KEY", purpose=purpose)
        kind = _key_kind(key)
        if kind not in kinds:
            wanted = "an EC P-256/P-384/P-521 key" if len(kinds) > 1 else f"an {kinds[0].value} key"
            raise KeyMaterialError(
                f"PKCS#11 key {self.uri.describe_object()} on token {self.token_label!r} is "
                f"{_describe_key_type(key)}; {purpose} needs {wanted}",
                hint="point the URI at a key of the right type",
            )
        return key, kind

    @_locked
    def sign_ecdsa(self, data: bytes) -> bytes:
        """ECDSA over ``data`` with the curve's hash (P-256 SHA-256, P-384 SHA-384, P-521
        SHA-512), returned DER-encoded, as ``cryptography`` and the OMS key method produce it.

        The hash is computed here and the token signs it with ``CKM_ECDSA``: SoftHSM2 and many
        HSMs lack the combined ``CKM_ECDSA_SHA*`` mechanisms.
        """
        key, kind = self._private_key_of(
            (KeyKind.EC_P256, KeyKind.EC_P384, KeyKind.EC_P521), "ECDSA signing"
        )
        digest = hashlib.new(_ECDSA_CURVES[kind][1], data).digest()
        raw = self._sign(key, digest, self._pkcs11.Mechanism.ECDSA, "ECDSA signing")
        half = len(raw) // 2
        if len(raw) % 2 or half == 0:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r} returned a malformed ECDSA signature"
            )
        return encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )

    @_locked
    def sign_ed25519(self, data: bytes) -> bytes:
        """Pure Ed25519 (``CKM_EDDSA`` without parameters) over ``data``: 64 bytes."""
        key, _ = self._private_key_of((KeyKind.ED25519,), "Ed25519 signing")
        signature = self._sign(key, data, self._pkcs11.Mechanism.EDDSA, "Ed25519 signing")
        if len(signature) != 64:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r} returned a malformed Ed25519 signature"
            )
        return signature

    def _sign(self, key: Any, data: bytes, mechanism: Any, purpose: str) -> bytes:
        try:
            return bytes(key.sign(data, mechanism=mechanism))
        except self._pkcs11.exceptions.MechanismInvalid:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r} does not support {purpose} ({mechanism.name})"
            ) from None
        except self._pkcs11.PKCS11Error as exc:
            raise KeyMaterialError(
                f"PKCS#11 token {self.token_label!r}: {purpose} with "
                f"{self.uri.describe_object()} failed: {_describe_pkcs11_error(exc)}"
            ) from None


def _unwrap_octet_string(point: bytes) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING per the spec; some tokens store the raw point."""
    if len(point) >= 2 and point[0] == 0x04:
        length = point[1]
        offset = 2
        if length & 0x80:
            count = length & 0x7F
            if count == 0 or count > 2 or len(point) < 2 + count:
                return point
            length = int.from_bytes(point[2 : 2 + count], "big")
            offset = 2 + count
        if offset + length == len(point):
            return point[offset:]
    return point
