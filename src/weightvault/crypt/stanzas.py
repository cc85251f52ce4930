"""Recipient stanzas: one wrapped copy of a file's data key (DEK) per recipient, as header data.

Pure data, no cryptography: each stanza type is a frozen dataclass with strict
``from_json``/``to_json``. The recipient modules in :mod:`weightvault.crypt.recipients` create and
open them. Nothing in a stanza is secret on its own (wrapped keys, salts, public keys, key ids).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from weightvault._b64 import decode as b64decode_field
from weightvault._b64 import encode as b64encode
from weightvault.errors import FormatError

__all__ = [
    "KeyringStanza",
    "Pkcs11Stanza",
    "ScryptStanza",
    "Stanza",
    "X25519Stanza",
    "stanza_from_json",
]

#: AES-GCM nonce and a wrapped 32-byte DEK (ciphertext + 16-byte tag).
NONCE_SIZE = 12
WRAPPED_GCM_SIZE = 48
#: RFC 3394 AES key wrap of a 32-byte key.
WRAPPED_KW_SIZE = 40
#: scrypt work factors accepted when decrypting: below 2**10 is no protection, above 2**20
#: (1 GiB of memory) is a denial of service from a hostile header.
SCRYPT_MIN_LOG_N = 10
SCRYPT_MAX_LOG_N = 20


def _check_keys(data: dict[str, Any], expected: set[str], where: str) -> None:
    missing = expected - data.keys()
    if missing:
        raise FormatError(f"{where}.{sorted(missing)[0]}: missing")
    extra = data.keys() - expected
    if extra:
        raise FormatError(f"{where}.{sorted(extra)[0]}: unknown field")


def _int_field(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FormatError(f"{where}: expected an integer")
    return value


@dataclass(frozen=True)
class KeyringStanza:
    """DEK wrapped with AES-256-GCM under a local keyring KEK, found by its key id."""

    TYPE: ClassVar[str] = "keyring"
    kid: str
    """16 lowercase hex characters identifying the KEK (a hash, not the key)."""
    nonce: bytes
    wrapped: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "kid": self.kid,
            "nonce": b64encode(self.nonce),
            "wrapped": b64encode(self.wrapped),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> KeyringStanza:
        _check_keys(data, {"type", "kid", "nonce", "wrapped"}, where)
        kid = data["kid"]
        if not isinstance(kid, str) or len(kid) != 16 or kid.strip("0123456789abcdef"):
            raise FormatError(f"{where}.kid: expected 16 lowercase hex characters")
        return cls(
            kid=kid,
            nonce=b64decode_field(data["nonce"], f"{where}.nonce", size=NONCE_SIZE),
            wrapped=b64decode_field(data["wrapped"], f"{where}.wrapped", size=WRAPPED_GCM_SIZE),
        )


@dataclass(frozen=True)
class X25519Stanza:
    """DEK wrapped for an X25519 public key: ephemeral share + AES-256-GCM under HKDF(ECDH)."""

    TYPE: ClassVar[str] = "x25519"
    ephemeral: bytes
    nonce: bytes
    wrapped: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "ephemeral": b64encode(self.ephemeral),
            "nonce": b64encode(self.nonce),
            "wrapped": b64encode(self.wrapped),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> X25519Stanza:
        _check_keys(data, {"type", "ephemeral", "nonce", "wrapped"}, where)
        return cls(
            ephemeral=b64decode_field(data["ephemeral"], f"{where}.ephemeral", size=32),
            nonce=b64decode_field(data["nonce"], f"{where}.nonce", size=NONCE_SIZE),
            wrapped=b64decode_field(data["wrapped"], f"{where}.wrapped", size=WRAPPED_GCM_SIZE),
        )


@dataclass(frozen=True)
class ScryptStanza:
    """DEK wrapped with AES-256-GCM under scrypt(passphrase, salt, N=2**log_n, r=8, p=1)."""

    TYPE: ClassVar[str] = "scrypt"
    salt: bytes
    log_n: int
    nonce: bytes
    wrapped: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "salt": b64encode(self.salt),
            "log_n": self.log_n,
            "nonce": b64encode(self.nonce),
            "wrapped": b64encode(self.wrapped),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> ScryptStanza:
        _check_keys(data, {"type", "salt", "log_n", "nonce", "wrapped"}, where)
        log_n = _int_field(data["log_n"], f"{where}.log_n")
        if not SCRYPT_MIN_LOG_N <= log_n <= SCRYPT_MAX_LOG_N:
            raise FormatError(
                f"{where}.log_n: {log_n} is outside {SCRYPT_MIN_LOG_N}..{SCRYPT_MAX_LOG_N}"
            )
        return cls(
            salt=b64decode_field(data["salt"], f"{where}.salt", size=16),
            log_n=log_n,
            nonce=b64decode_field(data["nonce"], f"{where}.nonce", size=NONCE_SIZE),
            wrapped=b64decode_field(data["wrapped"], f"{where}.wrapped", size=WRAPPED_GCM_SIZE),
        )


@dataclass(frozen=True)
class Pkcs11Stanza:
    """DEK wrapped by an AES key inside a PKCS#11 token (RFC 3394 AES key wrap, CKM_AES_KEY_WRAP).

    ``key`` names the KEK (a PKCS#11 URI without PIN); it is a hint for the user, the token and
    key actually used come from the identity given at decryption.
    """

    TYPE: ClassVar[str] = "pkcs11"
    key: str
    wrapped: bytes

    def to_json(self) -> dict[str, Any]:
        return {"type": self.TYPE, "key": self.key, "wrapped": b64encode(self.wrapped)}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> Pkcs11Stanza:
        _check_keys(data, {"type", "key", "wrapped"}, where)
        key = data["key"]
        if not isinstance(key, str) or not key.startswith("pkcs11:") or len(key) > 1024:
            raise FormatError(f"{where}.key: expected a pkcs11: URI")
        if "pin-value" in key or "pin-source" in key:
            raise FormatError(f"{where}.key: must not contain a PIN")
        return cls(
            key=key,
            wrapped=b64decode_field(data["wrapped"], f"{where}.wrapped", size=WRAPPED_KW_SIZE),
        )


Stanza = KeyringStanza | X25519Stanza | ScryptStanza | Pkcs11Stanza

_TYPES: dict[str, type[KeyringStanza | X25519Stanza | ScryptStanza | Pkcs11Stanza]] = {
    KeyringStanza.TYPE: KeyringStanza,
    X25519Stanza.TYPE: X25519Stanza,
    ScryptStanza.TYPE: ScryptStanza,
    Pkcs11Stanza.TYPE: Pkcs11Stanza,
}


def stanza_from_json(data: object, where: str) -> Stanza:
    """Parse one stanza; the message names the field that is wrong."""
    if not isinstance(data, dict):
        raise FormatError(f"{where}: expected an object")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise FormatError(f"{where}.type: missing or not a string")
    cls = _TYPES.get(kind)
    if cls is None:
        raise FormatError(f"{where}.type: unknown recipient type {kind!r}")
    return cls.from_json(data, where)
