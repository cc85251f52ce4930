"""Loading PEM keys and certificates for the key and certificate methods.

Failures say which file and what to do; a wrong password and a corrupt encrypted key look the
same (secret-dependent failures stay uniform).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from weightvault.errors import InputError, KeyMaterialError, Reason

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "ecdsa_hash_for",
    "load_certificates",
    "load_ec_private_key",
    "load_ec_public_key",
    "read_input_file",
]

#: Curves OMS signatures may use (the Sigstore protobuf key details), and their hash.
SUPPORTED_CURVES = {"secp256r1": 256, "secp384r1": 384, "secp521r1": 521}
_MAX_PEM_BYTES = 1 << 20


def read_input_file(
    path: str | os.PathLike[str],
    what: str,
    limit: int = _MAX_PEM_BYTES,
    *,
    hint: str | None = None,
    remedy: str | None = None,
) -> bytes:
    """Read a small input file, turning OS errors into one-line input errors (``hint`` and
    ``remedy`` say what to do when the file does not exist)."""
    target = Path(path)
    try:
        if target.is_dir():
            raise InputError(f"{target}: is a directory; expected a {what} file")
        with open(target, "rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError as exc:
        raise InputError(
            f"{target}: no such {what} file", hint=hint, remedy=remedy, reason=Reason.NOT_FOUND
        ) from exc
    except PermissionError as exc:
        raise InputError(f"{target}: permission denied reading the {what}") from exc
    except OSError as exc:
        raise InputError(f"{target}: cannot read the {what} ({exc.strerror})") from exc
    if len(data) > limit:
        raise InputError(f"{target}: too large for a {what} file")
    return data


def ecdsa_hash_for(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    """The ECDSA hash that follows the curve: P-256 SHA-256, P-384 SHA-384, P-521 SHA-512."""
    from cryptography.hazmat.primitives import hashes

    size = SUPPORTED_CURVES.get(curve.name)
    if size == 256:
        return hashes.SHA256()
    if size == 384:
        return hashes.SHA384()
    if size == 521:
        return hashes.SHA512()
    raise KeyMaterialError(f"unsupported elliptic curve {curve.name}; use P-256, P-384 or P-521")


def _check_ec(key: object, where: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        raise KeyMaterialError(
            f"{where}: not an elliptic-curve key; OMS signing keys are EC P-256, P-384 or P-521"
        )
    if key.curve.name not in SUPPORTED_CURVES:
        raise KeyMaterialError(
            f"{where}: unsupported curve {key.curve.name}; use P-256, P-384 or P-521"
        )


def load_ec_private_key(
    path: str | os.PathLike[str], password: str | bytes | None = None
) -> ec.EllipticCurvePrivateKey:
    """Load an EC private key from PEM (optionally encrypted)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    where = Path(path)
    data = read_input_file(where, "private key")
    secret = password.encode("utf-8") if isinstance(password, str) else password
    if b"PRIVATE KEY" not in data:
        if b"PUBLIC KEY" in data:
            raise KeyMaterialError(f"{where}: is a public key; signing needs the private key")
        raise KeyMaterialError(f"{where}: not a PEM private key")
    try:
        key = serialization.load_pem_private_key(data, secret)
    except TypeError as exc:
        if secret is None:
            raise KeyMaterialError(
                f"{where}: the private key is encrypted",
                hint="give its password",
                remedy="password",
            ) from exc
        raise KeyMaterialError(
            f"{where}: the private key is not encrypted",
            hint="give no password",
            remedy="no-password",
        ) from exc
    except ValueError as exc:
        if secret is not None:
            raise KeyMaterialError(
                f"{where}: cannot decrypt the private key (wrong password or corrupt key)"
            ) from exc
        raise KeyMaterialError(f"{where}: not a valid PEM private key") from exc
    _check_ec(key, where)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def load_ec_public_key(
    path: str | os.PathLike[str], password: str | bytes | None = None
) -> ec.EllipticCurvePublicKey:
    """Load an EC public key from PEM; a private key file is accepted (its public half is used)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    where = Path(path)
    data = read_input_file(where, "public key")
    if b"PRIVATE KEY" in data:
        return load_ec_private_key(where, password).public_key()
    if b"CERTIFICATE" in data:
        raise KeyMaterialError(
            f"{where}: is a certificate, not a public key",
            hint="verify with trust roots (the certificate method)",
            remedy="verify-with-trust-root",
        )
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise KeyMaterialError(f"{where}: not a valid PEM public key") from exc
    _check_ec(key, where)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def load_certificates(path: str | os.PathLike[str], what: str) -> list[x509.Certificate]:
    """Load one or more PEM certificates (a chain or a bundle of roots)."""
    from cryptography import x509

    where = Path(path)
    data = read_input_file(where, what, limit=16 << 20)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise KeyMaterialError(f"{where}: no PEM certificate found in the {what} file")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise KeyMaterialError(f"{where}: malformed certificate in the {what} file") from exc
