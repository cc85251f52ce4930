"""The local keyring: one AES-256 key-encryption key (KEK) in a 0600 file; the default recipient.

Location: ``$WEIGHTVAULT_HOME/keyring.kek`` (``WEIGHTVAULT_HOME`` defaults to
``~/.config/weightvault``). Created on first use by ``encrypt``. A stanza names the KEK by a key
id (a hash of the key, 8 bytes hex), so decryption knows which stanza to try.

Wrapping: ``AES-256-GCM(KEK, random nonce, DEK, aad="weightvault.wvenc/v1 keyring " || kid)``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from weightvault._b64 import encode_url as b64url_encode
from weightvault.crypt.recipients.base import Identity, Random, Recipient
from weightvault.crypt.stanzas import NONCE_SIZE, KeyringStanza, Stanza
from weightvault.errors import InputError, KeyMaterialError
from weightvault.keys.files import key_line_value, read_secret_file, write_secret_file

__all__ = [
    "KEYRING_FILE_NAME",
    "KeyringKey",
    "create_keyring",
    "default_keyring_path",
    "load_keyring",
    "load_or_create_keyring",
    "weightvault_home",
]

HOME_ENV = "WEIGHTVAULT_HOME"
KEYRING_FILE_NAME = "keyring.kek"
_KEY_PREFIX = "wvkek1:"
_AAD = b"weightvault.wvenc/v1 keyring "


def weightvault_home() -> Path:
    """``$WEIGHTVAULT_HOME``, or ``~/.config/weightvault``."""
    value = os.environ.get(HOME_ENV)
    if value:
        return Path(value)
    return Path.home() / ".config" / "weightvault"


def default_keyring_path() -> Path:
    """Where the default keyring KEK lives."""
    return weightvault_home() / KEYRING_FILE_NAME


class KeyringKey(Recipient, Identity):
    """A keyring KEK: both a recipient (wraps) and an identity (unwraps)."""

    def __init__(self, kek: bytes, *, path: Path | None = None, rng: Random = os.urandom) -> None:
        if len(kek) != 32:
            raise ValueError("a keyring KEK is 32 bytes")
        self._aead = AESGCM(kek)
        self._rng = rng
        self.path = path
        self.kid = hashlib.sha256(b"weightvault keyring kid\x00" + kek).hexdigest()[:16]

    def wrap(self, dek: bytes) -> Stanza:
        nonce = self._rng(NONCE_SIZE)
        wrapped = self._aead.encrypt(nonce, dek, _AAD + self.kid.encode("ascii"))
        return KeyringStanza(kid=self.kid, nonce=nonce, wrapped=wrapped)

    def unwrap(self, stanza: Stanza) -> bytes | None:
        if not isinstance(stanza, KeyringStanza) or stanza.kid != self.kid:
            return None
        try:
            return self._aead.decrypt(stanza.nonce, stanza.wrapped, _AAD + self.kid.encode("ascii"))
        except InvalidTag:
            return None

    def describe(self) -> str:
        where = f" ({self.path})" if self.path else ""
        return f"keyring:{self.kid}{where}"


def _format_keyring(kek: bytes, kid: str) -> str:
    return (
        "# weightvault keyring key-encryption key (KEK). Keep it secret: anyone holding this\n"
        "# file can decrypt every file encrypted to it. Back it up offline.\n"
        f"# kid: {kid}\n"
        f"{_KEY_PREFIX}{b64url_encode(kek)}\n"
    )


def create_keyring(path: Path, *, rng: Random = os.urandom, force: bool = False) -> KeyringKey:
    """Create a new KEK file (mode 0600, folder 0700) and return it."""
    kek = rng(32)
    key = KeyringKey(kek, path=path, rng=rng)
    write_secret_file(path, _format_keyring(kek, key.kid), force=force)
    return key


def parse_keyring_text(text: str, where: str, *, rng: Random = os.urandom) -> KeyringKey | None:
    """Parse a keyring file's text; None if it is not a keyring file."""
    kek = key_line_value(text, _KEY_PREFIX, f"{where}: keyring key")
    return None if kek is None else KeyringKey(kek, path=Path(where), rng=rng)


def load_keyring(path: Path, *, rng: Random = os.urandom) -> KeyringKey:
    """Load a KEK file; refuses group/world-accessible files."""
    text = read_secret_file(path, "keyring file")
    key = parse_keyring_text(text, str(path), rng=rng)
    if key is None:
        raise KeyMaterialError(f"{path}: not a weightvault keyring file")
    key.path = path
    return key


def load_or_create_keyring(path: Path | None = None, *, rng: Random = os.urandom) -> KeyringKey:
    """The default recipient: load the keyring, creating it on first use."""
    path = path or default_keyring_path()
    if path.exists():
        return load_keyring(path, rng=rng)
    try:
        return create_keyring(path, rng=rng)
    except InputError:
        # Another process created it between our check and our write: use theirs.
        return load_keyring(path, rng=rng)
