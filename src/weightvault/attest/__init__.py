"""Signed statements bound to a model's root digest: model cards, evaluation results, provenance.

An attestation is an in-toto Statement v1 whose subject is a model's OMS root digest (the
``sha256`` ``weightvault sign`` writes), signed into a Sigstore bundle by any
:class:`~weightvault.signing.Signer` and optionally logged::

    from weightvault.attest import (
        digest_subject, make_statement, sign_attestation, verify_attestation,
    )

    subject = digest_subject("tiny-model")            # the model's root digest, hashed now
    statement = make_statement(subject, "eval-results", {
        "suite": "held-out-v3", "metrics": {"accuracy": 0.91},
        "thresholds": {"accuracy": {"min": 0.9}},
        "evaluator": "evals@example.com", "evaluatedOn": "2026-12-06T06:00:00Z",
        "expires": "2027-06-06T06:00:00Z"})
    bundle = sign_attestation(statement, KeySigner.from_file("key.pem"))
    record = verify_attestation(bundle, verifier=KeyVerifier.from_file("key.pub"),
                                expected_subject_digest=subject.digest,
                                expected_predicate_type="eval-results")
    record.predicate["metrics"], record.signer.subject

Refusals raise :class:`AttestationError`; its ``failure`` (:class:`AttestationFailure`) is one
of ``malformed``, ``bad-signature``, ``unlisted-signer``, ``wrong-predicate-type``,
``wrong-subject``, ``expired`` (and ``missing``, ``failed-thresholds`` where attestations are
required). Predicate types: :data:`MODEL_CARD`, :data:`EVAL_RESULTS`,
:data:`TRAINING_PROVENANCE` (SLSA provenance v1), :data:`ROW_GROUPS`; see docs/attestations.md.

Stored beside the model in ``MODEL.attestations/`` (:func:`store_attestation`,
:func:`list_attestations`, :func:`check_attestations`, :func:`require_attestations`). Datasets
(docs/datasets.md): :func:`row_groups_predicate` digests each Parquet row group, Arrow record
batch or range of JSONL lines; :func:`verify_row_groups` / :func:`verify_dataset_rows` check a
subset reading only those bytes; :func:`open_verified_shard` / :func:`open_dataset_shard` hand a
reader (pyarrow) only bytes checked by the read that delivers them.
"""

from __future__ import annotations

from weightvault.attest._layouts import ByteRange, ShardLayout, layout_shard, shard_format
from weightvault.attest._predicates import (
    EVAL_RESULTS,
    KINDS,
    MODEL_CARD,
    ROW_GROUPS,
    TRAINING_PROVENANCE,
    check_predicate,
    format_time,
    kind_of,
    metric_misses,
    predicate_type_for,
    threshold_failures,
)
from weightvault.attest._rowgroups import (
    VerifiedShard,
    open_verified_shard,
    row_groups_predicate,
    verify_row_groups,
)
from weightvault.attest._sign import (
    AttestationError,
    AttestationFailure,
    LogCheck,
    VerifiedAttestation,
    log_attestation,
    sign_attestation,
    verify_attestation,
)
from weightvault.attest._statement import (
    STATEMENT_TYPE,
    Statement,
    Subject,
    digest_subject,
    make_statement,
    parse_statement,
)
from weightvault.attest._store import (
    ATTESTATIONS_SUFFIX,
    AttestationCheck,
    StoredAttestation,
    attest_row_groups,
    attestations_dir,
    check_attestations,
    list_attestations,
    open_dataset_shard,
    require_attestations,
    select_required,
    store_attestation,
    verify_dataset_rows,
)

__all__ = [
    "ATTESTATIONS_SUFFIX",
    "EVAL_RESULTS",
    "KINDS",
    "MODEL_CARD",
    "ROW_GROUPS",
    "STATEMENT_TYPE",
    "TRAINING_PROVENANCE",
    "AttestationCheck",
    "AttestationError",
    "AttestationFailure",
    "ByteRange",
    "LogCheck",
    "ShardLayout",
    "Statement",
    "StoredAttestation",
    "Subject",
    "VerifiedAttestation",
    "VerifiedShard",
    "attest_row_groups",
    "attestations_dir",
    "check_attestations",
    "check_predicate",
    "digest_subject",
    "format_time",
    "kind_of",
    "layout_shard",
    "list_attestations",
    "log_attestation",
    "make_statement",
    "metric_misses",
    "open_dataset_shard",
    "open_verified_shard",
    "parse_statement",
    "predicate_type_for",
    "require_attestations",
    "row_groups_predicate",
    "select_required",
    "shard_format",
    "sign_attestation",
    "store_attestation",
    "threshold_failures",
    "verify_attestation",
    "verify_dataset_rows",
    "verify_row_groups",
]
