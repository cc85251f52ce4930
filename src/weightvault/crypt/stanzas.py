"""Recipient stanzas: one wrapped copy of a file's data key (DEK) per recipient, as header data.

Pure data, no cryptography: each stanza type is a frozen dataclass with strict
``from_json``/``to_json``. The recipient modules in :mod:`weightvault.crypt.recipients` create and
open them. Nothing in a stanza is secret on its own (wrapped keys, salts, public keys, key ids).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Self

from weightvault._b64 import decode as b64decode_field
from weightvault._b64 import encode as b64encode
from weightvault._json import int_field, require_fields
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
#: The byte fields of a DEK wrapped with AES-256-GCM (keyring, X25519, scrypt stanzas).
_AES_GCM_WRAP = {"nonce": NONCE_SIZE, "wrapped": WRAPPED_GCM_SIZE}


class _StanzaFields:
    """The JSON of a stanza: ``type``, then its fields in order, bytes as strict base64 of the
    exact size in ``SIZES``. Subclasses check their other fields in ``_checked``."""

    TYPE: ClassVar[str]
    SIZES: ClassVar[dict[str, int]]
    if TYPE_CHECKING:  # what @dataclass gives each subclass
        __dataclass_fields__: ClassVar[dict[str, Any]]

        def __init__(self, **values: Any) -> None: ...

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"type": self.TYPE}
        for field in fields(self):
            value = getattr(self, field.name)
            document[field.name] = b64encode(value) if field.name in self.SIZES else value
        return document

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> Self:
        names = [field.name for field in fields(cls)]
        require_fields(data, ("type", *names), where)
        values = cls._checked(data, where)
        for name, size in cls.SIZES.items():
            values[name] = b64decode_field(data[name], f"{where}.{name}", size=size)
        return cls(**values)

    @classmethod
    def _checked(cls, data: dict[str, Any], where: str) -> dict[str, Any]:
        """The fields that are not bytes, checked (before the bytes are decoded)."""
        return {}


@dataclass(frozen=True, kw_only=True)
class _AesGcmWrap(_StanzaFields):
    """The DEK wrapped with AES-256-GCM: the keyring, X25519 and scrypt stanzas differ only in
    how they reach the wrapping key. Keyword-only, so a subclass's own fields stay first in its
    constructor; the JSON is written with sorted keys, so field order does not reach the bytes."""

    SIZES: ClassVar[dict[str, int]] = _AES_GCM_WRAP
    nonce: bytes
    wrapped: bytes


@dataclass(frozen=True)
class KeyringStanza(_AesGcmWrap):
    """DEK wrapped with AES-256-GCM under a local keyring KEK, found by its key id."""

    TYPE: ClassVar[str] = "keyring"
    kid: str
    """16 lowercase hex characters identifying the KEK (a hash, not the key)."""

    @classmethod
    def _checked(cls, data: dict[str, Any], where: str) -> dict[str, Any]:
        kid = data["kid"]
        if not isinstance(kid, str) or len(kid) != 16 or kid.strip("0123456789abcdef"):
            raise FormatError(f"{where}.kid: expected 16 lowercase hex characters")
        return {"kid": kid}


@dataclass(frozen=True)
class X25519Stanza(_AesGcmWrap):
    """DEK wrapped for an X25519 public key: ephemeral share + AES-256-GCM under HKDF(ECDH)."""

    TYPE: ClassVar[str] = "x25519"
    SIZES: ClassVar[dict[str, int]] = {"ephemeral": 32, **_AES_GCM_WRAP}
    ephemeral: bytes


@dataclass(frozen=True)
class ScryptStanza(_AesGcmWrap):
    """DEK wrapped with AES-256-GCM under scrypt(passphrase, salt, N=2**log_n, r=8, p=1)."""

    TYPE: ClassVar[str] = "scrypt"
    SIZES: ClassVar[dict[str, int]] = {"salt": 16, **_AES_GCM_WRAP}
    salt: bytes
    log_n: int

    @classmethod
    def _checked(cls, data: dict[str, Any], where: str) -> dict[str, Any]:
        log_n = int_field(data["log_n"], f"{where}.log_n")
        if not SCRYPT_MIN_LOG_N <= log_n <= SCRYPT_MAX_LOG_N:
            raise FormatError(
                f"{where}.log_n: {log_n} is outside {SCRYPT_MIN_LOG_N}..{SCRYPT_MAX_LOG_N}"
            )
        return {"log_n": log_n}


@dataclass(frozen=True)
class Pkcs11Stanza(_StanzaFields):
    """DEK wrapped by an AES key inside a PKCS#11 token (RFC 3394 AES key wrap, CKM_AES_KEY_WRAP).

    ``key`` names the KEK (a PKCS#11 URI without PIN); it is a hint for the user, the token and
    key actually used come from the identity given at decryption.
    """

    TYPE: ClassVar[str] = "pkcs11"
    SIZES: ClassVar[dict[str, int]] = {"wrapped": WRAPPED_KW_SIZE}
    key: str
    wrapped: bytes

    @classmethod
    def _checked(cls, data: dict[str, Any], where: str) -> dict[str, Any]:
        key = data["key"]
        if not isinstance(key, str) or not key.startswith("pkcs11:") or len(key) > 1024:
            raise FormatError(f"{where}.key: expected a pkcs11: URI")
        if "pin-value" in key or "pin-source" in key:
            raise FormatError(f"{where}.key: must not contain a PIN")
        return {"key": key}


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
