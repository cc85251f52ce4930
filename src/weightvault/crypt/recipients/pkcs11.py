"""PKCS#11 recipients: the DEK is wrapped by a non-extractable AES key inside an HSM.

The key-encryption key never leaves the token; only the 32-byte DEK passes through it, wrapped
with ``CKM_AES_KEY_WRAP`` (RFC 3394, 40-byte blob). Bulk encryption stays on the CPU (an HSM
encrypts at a fraction of a GB/s). The same URI is both recipient (``--to``) and identity
(``--identity``); the PIN comes from the URI's ``pin-source``/``pin-value`` or
``$WEIGHTVAULT_PKCS11_PIN`` (see :mod:`weightvault.keys.pkcs11`) and is never written into the
header: the stanza records only the token and object attributes, as a hint.
"""

from __future__ import annotations

import dataclasses

from weightvault.crypt.recipients.base import Identity, Recipient
from weightvault.crypt.stanzas import Pkcs11Stanza, Stanza
from weightvault.errors import DecryptionError
from weightvault.keys.pkcs11 import Pkcs11Uri, unwrap_key, wrap_key

__all__ = ["Pkcs11Key"]


class Pkcs11Key(Recipient, Identity):
    """An AES key-encryption key on a PKCS#11 token, named by an RFC 7512 URI."""

    def __init__(self, uri: Pkcs11Uri) -> None:
        self.uri = uri
        public = dataclasses.replace(
            uri, pin_value=None, pin_source=None, module_path=None, module_name=None
        )
        self.public_uri = public.format(include_pin=False)

    @classmethod
    def from_uri(cls, text: str) -> Pkcs11Key:
        return cls(Pkcs11Uri.parse(text))

    def wrap(self, dek: bytes) -> Stanza:
        return Pkcs11Stanza(key=self.public_uri, wrapped=wrap_key(self.uri, dek, pad=False))

    def unwrap(self, stanza: Stanza) -> bytes | None:
        if not isinstance(stanza, Pkcs11Stanza):
            return None
        try:
            return unwrap_key(self.uri, stanza.wrapped, pad=False)
        except DecryptionError:
            return None

    def describe(self) -> str:
        return self.public_uri
