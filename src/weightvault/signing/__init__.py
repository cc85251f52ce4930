"""Sign and verify models in the OpenSSF Model Signing (OMS) v1.0 format.

Public nouns and verbs::

    from weightvault.signing import KeySigner, KeyVerifier, ManifestOptions, sign, verify, check

    signer = KeySigner.from_file("key.pem")
    sign("model/", signer)                                     # writes model/model.sig
    sign("model/", signer, hash_type="blake3", max_workers=4)  # choices as keywords,
    sign("model/", signer, options=ManifestOptions(serialization="shards"))  # or as one object
    result = check("model/", None, KeyVerifier.from_file("key.pub"))
    result.ok, result.changed, result.missing, result.extra
    verify("model/", None, KeyVerifier.from_file("key.pub"))  # raises VerificationError

Methods: :mod:`~weightvault.signing.key`, :mod:`~weightvault.signing.certificate`,
:mod:`~weightvault.signing.pkcs11` and :mod:`~weightvault.signing.sigstore` (optional extras),
all implementing :class:`~weightvault.signing._base.Signer` / ``Verifier``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from weightvault import _lazy_attributes
from weightvault.signing._base import Signer, SignerIdentity, VerifiedPayload, Verifier
from weightvault.signing._model import (
    SIGNATURE_FILE_NAME,
    ModelPlan,
    SignedModel,
    SignResult,
    compute_manifest,
    default_signature_path,
    digest,
    is_signature_file,
    plan_model,
    prepare_signature,
    sign,
    sign_manifest,
    signature_path_for,
    write_signature,
)
from weightvault.signing._verify import VerificationResult, check, read_signature, verify
from weightvault.signing.options import CheckKeywords, ManifestKeywords, ManifestOptions

if TYPE_CHECKING:
    from weightvault.signing.certificate import CertificateSigner, CertificateVerifier
    from weightvault.signing.key import KeySigner, KeyVerifier

__all__ = [
    "SIGNATURE_FILE_NAME",
    "CertificateSigner",
    "CertificateVerifier",
    "CheckKeywords",
    "KeySigner",
    "KeyVerifier",
    "ManifestKeywords",
    "ManifestOptions",
    "ModelPlan",
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
    "is_signature_file",
    "plan_model",
    "prepare_signature",
    "read_signature",
    "sign",
    "sign_manifest",
    "signature_path_for",
    "verify",
    "write_signature",
]

_METHODS = {
    "KeySigner": "weightvault.signing.key",
    "KeyVerifier": "weightvault.signing.key",
    "CertificateSigner": "weightvault.signing.certificate",
    "CertificateVerifier": "weightvault.signing.certificate",
}

__getattr__ = _lazy_attributes(__name__, _METHODS)
