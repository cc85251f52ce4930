"""Sign and verify models in the OpenSSF Model Signing (OMS) v1.0 format.

Public nouns and verbs::

    from weightvault.signing import KeySigner, KeyVerifier, sign, verify, check, digest

    sign("model/", KeySigner.from_file("key.pem"))            # writes model/model.sig
    result = check("model/", None, KeyVerifier.from_file("key.pub"))
    result.ok, result.changed, result.missing, result.extra
    verify("model/", None, KeyVerifier.from_file("key.pub"))  # raises VerificationError

Methods: :mod:`~weightvault.signing.key`, :mod:`~weightvault.signing.certificate`,
:mod:`~weightvault.signing.pkcs11` and :mod:`~weightvault.signing.sigstore` (optional extras),
all implementing :class:`~weightvault.signing._base.Signer` / ``Verifier``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from weightvault.signing._base import Signer, SignerIdentity, VerifiedPayload, Verifier
from weightvault.signing._model import (
    SIGNATURE_FILE_NAME,
    SignedModel,
    SignResult,
    VerificationResult,
    check,
    compute_manifest,
    default_signature_path,
    digest,
    prepare_signature,
    sign,
    verify,
    write_signature,
)

if TYPE_CHECKING:
    from weightvault.signing.certificate import CertificateSigner, CertificateVerifier
    from weightvault.signing.key import KeySigner, KeyVerifier

__all__ = [
    "SIGNATURE_FILE_NAME",
    "CertificateSigner",
    "CertificateVerifier",
    "KeySigner",
    "KeyVerifier",
    "SignResult",
    "SignedModel",
    "Signer",
    "SignerIdentity",
    "VerificationResult",
    "VerifiedPayload",
    "Verifier",
    "check",
    "compute_manifest",
    "default_signature_path",
    "digest",
    "prepare_signature",
    "sign",
    "verify",
    "write_signature",
]

_METHODS = {
    "KeySigner": "weightvault.signing.key",
    "KeyVerifier": "weightvault.signing.key",
    "CertificateSigner": "weightvault.signing.certificate",
    "CertificateVerifier": "weightvault.signing.certificate",
}


def __getattr__(name: str) -> Any:
    module = _METHODS.get(name)
    if module is None:
        raise AttributeError(f"module 'weightvault.signing' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
