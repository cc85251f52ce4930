"""The contract every signing method implements.

A method turns a DSSE payload (an in-toto statement) into a Sigstore bundle, and a bundle back into
the payload it vouches for plus who signed it. Bundles cross this boundary as JSON bytes, so each
method (key, certificate, PKCS#11, Sigstore) can use the parser that suits it, and the manifest
logic in :mod:`weightvault.signing` stays the same for all of them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

__all__ = ["Signer", "SignerIdentity", "VerifiedPayload", "Verifier"]


@dataclass(frozen=True)
class SignerIdentity:
    """Who produced a signature, as far as the verifying method established it."""

    method: str
    """``key``, ``certificate``, ``pkcs11`` or ``sigstore``."""
    subject: str
    """Human-readable identity: key fingerprint, certificate subject/SAN, OIDC identity."""
    issuer: str | None = None
    """Certificate issuer or OIDC issuer, where there is one."""
    key_fingerprint: str | None = None
    """Hex SHA-256 of the public key (the OMS ``publicKey.hint``), where there is one."""


@dataclass(frozen=True)
class VerifiedPayload:
    """A DSSE payload whose signature checked out, with the identity that signed it."""

    payload_type: str
    payload: bytes
    signer: SignerIdentity


class Signer(abc.ABC):
    """Signs a DSSE payload and wraps it in a Sigstore bundle (v0.3 JSON)."""

    @abc.abstractmethod
    def sign(self, payload_type: str, payload: bytes) -> bytes:
        """Return the bundle's JSON bytes."""

    @property
    @abc.abstractmethod
    def identity(self) -> SignerIdentity:
        """Who will appear as the signer."""


class Verifier(abc.ABC):
    """Checks a bundle's signature and returns the payload it covers.

    Raises :class:`~weightvault.errors.VerificationError` when the signature, key, certificate
    path or identity does not check out, and :class:`~weightvault.errors.FormatError` when the
    bundle is malformed.
    """

    @abc.abstractmethod
    def verify(self, bundle_json: bytes) -> VerifiedPayload:
        """Verify and return the signed payload."""
