"""Which key an object on the token is (curve, Ed25519, AES), read from its attributes."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from weightvault.keys.pkcs11._token import _import_pkcs11

# DER encodings of the EC_PARAMS this module accepts (named curves only).
_EC_PARAMS_P256 = bytes.fromhex("06082a8648ce3d030107")
_EC_PARAMS_P384 = bytes.fromhex("06052b81040022")
_EC_PARAMS_P521 = bytes.fromhex("06052b81040023")
_EC_PARAMS_ED25519_OID = bytes.fromhex("06032b6570")
_EC_PARAMS_ED25519_NAME = b"\x13\x0cedwards25519"


class KeyKind(enum.Enum):
    """The kinds of key this module knows how to use."""

    EC_P256 = "EC P-256"
    EC_P384 = "EC P-384"
    EC_P521 = "EC P-521"
    ED25519 = "Ed25519"
    AES = "AES"
    OTHER = "other"

    @property
    def is_ecdsa(self) -> bool:
        return self in (KeyKind.EC_P256, KeyKind.EC_P384, KeyKind.EC_P521)


@dataclass(frozen=True)
class KeyProtection:
    """What the token says about whether a key's value can leave it (PKCS#11 attributes)."""

    extractable: bool
    """``CKA_EXTRACTABLE``: the key can be wrapped out of the token."""
    sensitive: bool
    """``CKA_SENSITIVE``: the key's value cannot be read in plaintext."""
    never_extractable: bool
    """``CKA_NEVER_EXTRACTABLE``: it was never extractable since it was made."""
    always_sensitive: bool
    """``CKA_ALWAYS_SENSITIVE``: it was always sensitive since it was made."""

    @property
    def non_exportable(self) -> bool:
        """Neither wrappable out nor readable, now or ever."""
        return (
            not self.extractable
            and self.sensitive
            and self.never_extractable
            and self.always_sensitive
        )


_ECDSA_CURVES: dict[KeyKind, tuple[ec.EllipticCurve, str]] = {
    KeyKind.EC_P256: (ec.SECP256R1(), "sha256"),
    KeyKind.EC_P384: (ec.SECP384R1(), "sha384"),
    KeyKind.EC_P521: (ec.SECP521R1(), "sha512"),
}


def _key_kind(key: Any) -> KeyKind:
    pkcs11 = _import_pkcs11()
    key_type = key.key_type
    if key_type == pkcs11.KeyType.AES:
        return KeyKind.AES
    if key_type in (pkcs11.KeyType.EC, pkcs11.KeyType.EC_EDWARDS):
        try:
            params = bytes(key[pkcs11.Attribute.EC_PARAMS])
        except pkcs11.PKCS11Error:
            return KeyKind.OTHER
        return {
            _EC_PARAMS_P256: KeyKind.EC_P256,
            _EC_PARAMS_P384: KeyKind.EC_P384,
            _EC_PARAMS_P521: KeyKind.EC_P521,
            _EC_PARAMS_ED25519_OID: KeyKind.ED25519,
            _EC_PARAMS_ED25519_NAME: KeyKind.ED25519,
        }.get(params, KeyKind.OTHER)
    return KeyKind.OTHER


def _describe_key_type(key: Any) -> str:
    kind = _key_kind(key)
    if kind is not KeyKind.OTHER:
        return f"an {kind.value} key" if kind.value[0] in "AE" else f"a {kind.value} key"
    name = getattr(key.key_type, "name", str(key.key_type))
    return f"a {name} key"
