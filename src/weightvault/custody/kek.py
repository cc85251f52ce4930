"""The service's key-encryption key (KEK), shared by every request thread.

Every file's data key is wrapped by the KEK when a version is pushed, and unwrapped again when a
grantee's delivery header is made. The KEK is a keyring key or a non-extractable key on a PKCS#11
token, whose session must not be used by two threads at once: :class:`ServiceKek` lets one
thread at a time through. It is both a :class:`~weightvault.crypt.Recipient` and an
:class:`~weightvault.crypt.Identity`, so it goes to crypt's public functions as either.
"""

from __future__ import annotations

import threading

from weightvault.crypt.recipients import Identity, Recipient
from weightvault.crypt.stanzas import Stanza
from weightvault.errors import UsageError

__all__ = ["ServiceKek"]


class ServiceKek(Recipient, Identity):
    """A KEK that wraps and unwraps data keys for one thread at a time."""

    def __init__(self, key: Identity) -> None:
        if not isinstance(key, Recipient):
            raise UsageError(
                f"service KEK {key.describe()}: cannot wrap keys; use a keyring or a PKCS#11 key"
            )
        self._key = key
        self._wrapper: Recipient = key
        self._lock = threading.Lock()

    def wrap(self, dek: bytes) -> Stanza:
        with self._lock:
            return self._wrapper.wrap(dek)

    def unwrap(self, stanza: Stanza) -> bytes | None:
        with self._lock:
            return self._key.unwrap(stanza)

    def describe(self) -> str:
        return self._key.describe()
