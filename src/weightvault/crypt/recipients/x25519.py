"""X25519 recipients: encrypt to a person's public key without sharing a secret (as age does).

Recipient string: ``wvx25519:<base64url public key>``. Identity file (mode 0600)::

    # weightvault X25519 identity ...
    # recipient: wvx25519:...
    wvx25519-secret:<base64url private key>

Wrapping, per stanza (age's X25519 recipient, with AES-256-GCM)::

    e = fresh X25519 key;  shared = X25519(e, R)          (all-zero shared secret refused)
    wrap_key = HKDF-SHA256(ikm=shared, salt=E || R, info="weightvault.wvenc/v1/X25519")
    stanza = E, nonce, AES-256-GCM(wrap_key, nonce, DEK, aad="weightvault.wvenc/v1 x25519")
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from weightvault._b64 import decode_url as b64url_decode
from weightvault._b64 import encode_url as b64url_encode
from weightvault.crypt.recipients.base import Identity, Random, Recipient
from weightvault.crypt.stanzas import NONCE_SIZE, Stanza, X25519Stanza
from weightvault.errors import FormatError, KeyMaterialError, UsageError
from weightvault.keys.files import key_line_value, read_secret_file, write_secret_file

__all__ = [
    "RECIPIENT_PREFIX",
    "SECRET_PREFIX",
    "X25519Identity",
    "X25519Recipient",
    "generate_identity_file",
    "load_identity_file",
]

RECIPIENT_PREFIX = "wvx25519:"
SECRET_PREFIX = "wvx25519-secret:"  # noqa: S105 - a label, not a secret
_INFO = b"weightvault.wvenc/v1/X25519"
_AAD = b"weightvault.wvenc/v1 x25519"


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes_raw()


def _wrap_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    if shared == bytes(32):
        # A low-order point gives a known shared secret; refuse it (as age does).
        raise KeyMaterialError("X25519: the key exchange produced an all-zero secret")
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient, info=_INFO
    ).derive(shared)


def _exchange(private: X25519PrivateKey, public: X25519PublicKey) -> bytes:
    try:
        return private.exchange(public)
    except ValueError as exc:  # cryptography refuses an all-zero result itself
        raise KeyMaterialError("X25519: the key exchange produced an all-zero secret") from exc


class X25519Recipient(Recipient):
    """A public key to encrypt to."""

    def __init__(self, public_key: bytes, *, rng: Random = os.urandom) -> None:
        if len(public_key) != 32:
            raise ValueError("an X25519 public key is 32 bytes")
        self.public_key = public_key
        self._public = X25519PublicKey.from_public_bytes(public_key)
        self._rng = rng

    @classmethod
    def from_string(cls, text: str, *, rng: Random = os.urandom) -> X25519Recipient:
        """Parse ``wvx25519:<base64url>``."""
        if not text.startswith(RECIPIENT_PREFIX):
            raise UsageError(f"{text!r}: an X25519 recipient starts with {RECIPIENT_PREFIX}")
        try:
            raw = b64url_decode(text[len(RECIPIENT_PREFIX) :], "X25519 recipient", size=32)
        except FormatError as exc:
            raise UsageError(f"{text!r}: {exc.message}") from exc
        return cls(raw, rng=rng)

    def to_string(self) -> str:
        return RECIPIENT_PREFIX + b64url_encode(self.public_key)

    def wrap(self, dek: bytes) -> Stanza:
        ephemeral = X25519PrivateKey.from_private_bytes(self._rng(32))
        ephemeral_public = _raw_public(ephemeral.public_key())
        shared = _exchange(ephemeral, self._public)
        key = _wrap_key(shared, ephemeral_public, self.public_key)
        nonce = self._rng(NONCE_SIZE)
        wrapped = AESGCM(key).encrypt(nonce, dek, _AAD)
        return X25519Stanza(ephemeral=ephemeral_public, nonce=nonce, wrapped=wrapped)

    def describe(self) -> str:
        return self.to_string()


class X25519Identity(Identity):
    """A private key that opens stanzas addressed to its public key."""

    def __init__(self, private_key: bytes, *, path: Path | None = None) -> None:
        if len(private_key) != 32:
            raise ValueError("an X25519 private key is 32 bytes")
        self._private = X25519PrivateKey.from_private_bytes(private_key)
        self.public_key = _raw_public(self._private.public_key())
        self.path = path

    @classmethod
    def generate(cls, *, rng: Random = os.urandom) -> X25519Identity:
        return cls(rng(32))

    def recipient(self) -> X25519Recipient:
        return X25519Recipient(self.public_key)

    def unwrap(self, stanza: Stanza) -> bytes | None:
        if not isinstance(stanza, X25519Stanza):
            return None
        try:
            shared = _exchange(self._private, X25519PublicKey.from_public_bytes(stanza.ephemeral))
            key = _wrap_key(shared, stanza.ephemeral, self.public_key)
            return AESGCM(key).decrypt(stanza.nonce, stanza.wrapped, _AAD)
        except (InvalidTag, KeyMaterialError):
            return None

    def describe(self) -> str:
        return self.recipient().to_string()

    def to_file_text(self) -> str:
        secret = self._private.private_bytes_raw()
        return (
            "# weightvault X25519 identity. Keep it secret: it decrypts every file encrypted to\n"
            "# the recipient below. Share only the recipient line.\n"
            f"# recipient: {self.recipient().to_string()}\n"
            f"{SECRET_PREFIX}{b64url_encode(secret)}\n"
        )


def parse_identity_text(text: str, where: str) -> X25519Identity | None:
    """Parse an identity file's text; None if it is not an X25519 identity file."""
    raw = key_line_value(text, SECRET_PREFIX, f"{where}: X25519 secret")
    return None if raw is None else X25519Identity(raw, path=Path(where))


def load_identity_file(path: Path) -> X25519Identity:
    """Load an identity file; refuses group/world-accessible files."""
    identity = parse_identity_text(read_secret_file(path, "identity file"), str(path))
    if identity is None:
        raise KeyMaterialError(f"{path}: not a weightvault X25519 identity file")
    return identity


def generate_identity_file(
    path: Path, *, force: bool = False, rng: Random = os.urandom
) -> X25519Identity:
    """Create a new identity file (mode 0600) and return the identity."""
    identity = X25519Identity.generate(rng=rng)
    identity.path = path
    write_secret_file(path, identity.to_file_text(), force=force)
    return identity
