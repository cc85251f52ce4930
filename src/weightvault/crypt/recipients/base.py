"""What every recipient kind implements: the interfaces the rest of :mod:`weightvault.crypt`
(and custody's service key) program against, without importing any one kind."""

from __future__ import annotations

import abc
from collections.abc import Callable

from weightvault.crypt.stanzas import Stanza

__all__ = ["Identity", "Random", "Recipient"]

#: Randomness source, injectable for tests: ``rng(n)`` returns ``n`` random bytes.
Random = Callable[[int], bytes]


class Recipient(abc.ABC):
    """Someone a file is encrypted to: wraps a file's data key (DEK) into a stanza."""

    @abc.abstractmethod
    def wrap(self, dek: bytes) -> Stanza:
        """Return a header stanza holding ``dek`` so that only this recipient can open it."""

    @abc.abstractmethod
    def describe(self) -> str:
        """A short public description (type and public id), for messages and ``inspect``."""


class Identity(abc.ABC):
    """What opens stanzas: a keyring KEK, an X25519 secret, a passphrase, an HSM key."""

    @abc.abstractmethod
    def unwrap(self, stanza: Stanza) -> bytes | None:
        """Return the DEK from ``stanza``, or None when the stanza is not for this identity.

        None covers both "another recipient's stanza" and "authentication failed": callers turn
        every None into one uniform error, so nothing secret-dependent leaks.
        """

    @abc.abstractmethod
    def describe(self) -> str:
        """A short public description, for messages."""
