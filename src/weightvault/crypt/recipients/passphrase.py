"""Passphrase recipients (scrypt), for break-glass recovery when every key is lost.

Wrapping::

    wrap_key = scrypt(passphrase, salt="weightvault.wvenc/v1/scrypt" || salt16,
                      N=2**log_n, r=8, p=1)
    stanza = salt16, log_n, nonce,
             AES-256-GCM(wrap_key, nonce, DEK, aad="weightvault.wvenc/v1 scrypt")

scrypt is deliberately slow (2**18 by default: about 256 MiB and a fraction of a second), so one
encryption run derives the wrapping key once, with one salt, and wraps every file's DEK under it
with a fresh nonce; decryption caches derived keys per salt. Work factors above 2**20 in a header
are refused (a hostile header must not make us allocate gigabytes).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from weightvault.crypt.recipients.base import Identity, Random, Recipient
from weightvault.crypt.stanzas import (
    NONCE_SIZE,
    SCRYPT_MAX_LOG_N,
    SCRYPT_MIN_LOG_N,
    ScryptStanza,
    Stanza,
)

__all__ = ["DEFAULT_LOG_N", "PassphraseIdentity", "PassphraseRecipient"]

DEFAULT_LOG_N = 18
_SALT_LABEL = b"weightvault.wvenc/v1/scrypt"
_AAD = b"weightvault.wvenc/v1 scrypt"


def _derive(passphrase: bytes, salt: bytes, log_n: int) -> bytes:
    kdf = Scrypt(salt=_SALT_LABEL + salt, length=32, n=2**log_n, r=8, p=1)
    return kdf.derive(passphrase)


class PassphraseRecipient(Recipient):
    """Encrypt so that a passphrase opens the file."""

    def __init__(
        self, passphrase: bytes, *, log_n: int = DEFAULT_LOG_N, rng: Random = os.urandom
    ) -> None:
        if not passphrase:
            raise ValueError("empty passphrase")
        if not SCRYPT_MIN_LOG_N <= log_n <= SCRYPT_MAX_LOG_N:
            raise ValueError(f"log_n must be between {SCRYPT_MIN_LOG_N} and {SCRYPT_MAX_LOG_N}")
        self._passphrase = passphrase
        self._log_n = log_n
        self._rng = rng
        self._salt_and_key: tuple[bytes, AESGCM] | None = None

    def wrap(self, dek: bytes) -> Stanza:
        if self._salt_and_key is None:
            salt = self._rng(16)
            self._salt_and_key = (salt, AESGCM(_derive(self._passphrase, salt, self._log_n)))
        salt, aead = self._salt_and_key
        nonce = self._rng(NONCE_SIZE)
        return ScryptStanza(
            salt=salt, log_n=self._log_n, nonce=nonce, wrapped=aead.encrypt(nonce, dek, _AAD)
        )

    def describe(self) -> str:
        return f"passphrase (scrypt 2^{self._log_n})"


#: Distinct scrypt derivations one identity performs: a run shares one salt, so a few cover
#: any honest tree; a hostile header listing hundreds of salts must not cost minutes of scrypt.
MAX_DERIVATIONS = 8


class PassphraseIdentity(Identity):
    """Open passphrase stanzas; caches the derived key per salt (one scrypt per run)."""

    def __init__(self, passphrase: bytes, *, max_derivations: int = MAX_DERIVATIONS) -> None:
        if not passphrase:
            raise ValueError("empty passphrase")
        self._passphrase = passphrase
        self._keys: dict[tuple[bytes, int], AESGCM] = {}
        self._max_derivations = max_derivations

    def unwrap(self, stanza: Stanza) -> bytes | None:
        if not isinstance(stanza, ScryptStanza):
            return None
        cache_key = (stanza.salt, stanza.log_n)
        aead = self._keys.get(cache_key)
        if aead is None:
            if len(self._keys) >= self._max_derivations:
                return None
            aead = AESGCM(_derive(self._passphrase, stanza.salt, stanza.log_n))
            self._keys[cache_key] = aead
        try:
            return aead.decrypt(stanza.nonce, stanza.wrapped, _AAD)
        except InvalidTag:
            return None

    def describe(self) -> str:
        return "passphrase"
