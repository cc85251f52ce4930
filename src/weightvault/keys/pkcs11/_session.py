"""The session callers use, composed of the operation mixins, and one-shot helpers that open a
session for a single operation."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from weightvault.keys.pkcs11._generation import _GenerationOps
from weightvault.keys.pkcs11._signing import _SigningOps
from weightvault.keys.pkcs11._uri import Pkcs11Uri
from weightvault.keys.pkcs11._wrapping import _WrappingOps


class Pkcs11Session(_SigningOps, _WrappingOps, _GenerationOps):
    """An open (and, with a PIN, logged-in) session on the token a URI names.

    Use as a context manager; every operation works on the object the URI names.
    """


# --- one-shot helpers -----------------------------------------------------------------------------


def _session(uri: Pkcs11Uri | str, pin: str | None) -> Pkcs11Session:
    return Pkcs11Session(uri, pin=pin)


def load_public_key(
    uri: Pkcs11Uri | str, *, pin: str | None = None
) -> ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey:
    """The public key stored beside the key the URI names (no PIN needed for public objects)."""
    with _session(uri, pin) as session:
        return session.public_key()


def sign_ecdsa(uri: Pkcs11Uri | str, data: bytes, *, pin: str | None = None) -> bytes:
    """DER ECDSA signature over ``data`` (see :meth:`Pkcs11Session.sign_ecdsa`)."""
    with _session(uri, pin) as session:
        return session.sign_ecdsa(data)


def sign_ed25519(uri: Pkcs11Uri | str, data: bytes, *, pin: str | None = None) -> bytes:
    """64-byte Ed25519 signature over ``data`` (see :meth:`Pkcs11Session.sign_ed25519`)."""
    with _session(uri, pin) as session:
        return session.sign_ed25519(data)


def wrap_key(
    uri: Pkcs11Uri | str, secret: bytes, *, pad: bool = True, pin: str | None = None
) -> bytes:
    """Wrap ``secret`` under the token's AES key-encryption key (see
    :meth:`Pkcs11Session.wrap_key`)."""
    with _session(uri, pin) as session:
        return session.wrap_key(secret, pad=pad)


def unwrap_key(
    uri: Pkcs11Uri | str, wrapped: bytes, *, pad: bool = True, pin: str | None = None
) -> bytes:
    """Unwrap a blob made by :func:`wrap_key` (see :meth:`Pkcs11Session.unwrap_key`)."""
    with _session(uri, pin) as session:
        return session.unwrap_key(wrapped, pad=pad)
