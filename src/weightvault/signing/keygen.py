"""Generating signing key pairs as PEM: what ``weightvault keygen`` writes.

ECDSA keys (P-256, P-384, P-521) sign and verify models with the key method, here and in
``model-signing`` (which accepts the same three curves); Ed25519 keys sign custody approvals
(``vault approve --key``). Private keys are PKCS#8, optionally encrypted under a passphrase
(``BestAvailableEncryption``: AES-256-CBC with a scrypt or PBKDF2 key, as pyca chooses); public
keys are SubjectPublicKeyInfo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from weightvault.errors import InputError, UsageError
from weightvault.signing._pem import read_input_file

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

__all__ = ["KEY_TYPES", "GeneratedKey", "generate_key", "read_passphrase_file"]

#: Key types by name, with what each one is for.
KEY_TYPES: dict[str, str] = {
    "ecdsa-p256": "model signatures with the key method (model-signing accepts it too)",
    "ecdsa-p384": "model signatures with the key method (model-signing accepts it too)",
    "ecdsa-p521": "model signatures with the key method (model-signing accepts it too)",
    "ed25519": "custody approval decisions; not for model signatures",
}


@dataclass(frozen=True)
class GeneratedKey:
    """A new key pair, serialized."""

    key_type: str
    private_pem: bytes
    public_pem: bytes
    fingerprint: str
    """Hex SHA-256 of the public key's PEM: the hint OMS bundles carry for key signatures."""


def _new_private_key(key_type: str) -> ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    curves: dict[str, ec.EllipticCurve] = {
        "ecdsa-p256": ec.SECP256R1(),
        "ecdsa-p384": ec.SECP384R1(),
        "ecdsa-p521": ec.SECP521R1(),
    }
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type in curves:
        return ec.generate_private_key(curves[key_type])
    raise UsageError(f"unknown key type {key_type!r}; use one of {', '.join(KEY_TYPES)}")


def generate_key(key_type: str = "ecdsa-p256", passphrase: bytes | None = None) -> GeneratedKey:
    """Generate a key pair of ``key_type`` (see :data:`KEY_TYPES`).

    With ``passphrase`` the private key is encrypted. Ed25519 keys are refused a passphrase:
    approvals read them unencrypted (protect the file, or keep the key on a PKCS#11 token).
    """
    import hashlib

    from cryptography.hazmat.primitives import serialization

    if passphrase is not None and not passphrase:
        raise UsageError("the passphrase is empty")
    if passphrase is not None and key_type == "ed25519":
        raise UsageError(
            "Ed25519 approval keys are read unencrypted, so a passphrase would lock them away",
            hint="keep the file private (it is written 0600), or keep the key on a PKCS#11 token",
        )
    private_key = _new_private_key(key_type)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase is not None
        else serialization.NoEncryption()
    )
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return GeneratedKey(key_type, private_pem, public_pem, hashlib.sha256(public_pem).hexdigest())


#: A passphrase file holds one line; anything much longer is not one.
_MAX_PASSPHRASE_FILE = 4096


def read_passphrase_file(path: str | os.PathLike[str]) -> bytes:
    """The file's first line (without its line ending): a passphrase kept out of the process
    list and the shell history."""
    data = read_input_file(path, "passphrase", limit=_MAX_PASSPHRASE_FILE)
    first = data.split(b"\n", 1)[0].removesuffix(b"\r")
    if not first:
        raise UsageError(f"{path}: the passphrase file is empty")
    try:
        first.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: the passphrase is not UTF-8 text") from exc
    return first
