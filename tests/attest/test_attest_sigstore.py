"""A keyless (Sigstore) attestation, signed against the private deployment run in the test."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.attest.conftest import eval_predicate
from tests.signing.test_sigstore_private_deployment import (
    IDENTITY,
    ISSUER,
    _token,
    deployment,  # noqa: F401 (the fixture)
)

from weightvault.attest import (
    AttestationError,
    AttestationFailure,
    digest_subject,
    make_statement,
    sign_attestation,
    verify_attestation,
)
from weightvault.signing.sigstore import SigstoreSigner, SigstoreVerifier


def test_keyless_attestation_verifies_by_identity(
    deployment: tuple[object, Path],  # noqa: F811
    model: Path,
) -> None:
    _state, trust_config = deployment
    signer = SigstoreSigner(_token(), trust_config=trust_config, use_ambient_credentials=False)
    subject = digest_subject(model)
    bundle = sign_attestation(make_statement(subject, "eval-results", eval_predicate()), signer)
    record = verify_attestation(
        bundle,
        verifier=SigstoreVerifier(IDENTITY, ISSUER, trust_config=trust_config),
        expected_subject_digest=subject.digest,
        expected_predicate_type="eval-results",
    )
    assert record.signer.method == "sigstore" and record.signer.subject == IDENTITY
    # Another expected identity: a valid signature by a signer the caller does not accept.
    other = SigstoreVerifier("mallory@example.com", ISSUER, trust_config=trust_config)
    with pytest.raises(AttestationError) as caught:
        verify_attestation(bundle, verifier=other, expected_subject_digest=subject.digest)
    assert caught.value.failure is AttestationFailure.UNLISTED_SIGNER
    with pytest.raises(AttestationError) as caught:
        verify_attestation(
            bundle,
            verifier=SigstoreVerifier(IDENTITY, ISSUER, trust_config=trust_config),
            expected_subject_digest=subject.digest,
            signers=["someone-else@example.com"],
        )
    assert caught.value.failure is AttestationFailure.UNLISTED_SIGNER
