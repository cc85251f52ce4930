"""Job results as signed in-toto statements, and their offline verification against the log.

A released result is a DSSE envelope (payload type ``application/vnd.in-toto+json``) holding an
in-toto Statement v1 whose subject is the job's outputs (SHA-256 of their canonical JSON) and
whose predicate (:data:`PREDICATE_TYPE`) carries the job kind, parameters, the digests of its
request and inputs, the model version and its root digest, the approvals, the worker's
environment digest, the outputs themselves, and where the release is recorded in the custody's
transparency log. It is signed with the log's own Ed25519 key, so ``audit.pub`` checks both.

:func:`verify_job_result` needs no service: (1) the envelope's signature under the log key;
(2) the statement's shape and the subject digest recomputed from the outputs; (3) the exported
log verifies under the same key; (4) the entry at the predicate's index is in the verified part,
hashes to the recorded digest, records this job's release, and agrees with the predicate on
every digest. Any edited byte of the result, a metric, or the log entry fails one of them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from weightvault._json import canonical, load_object
from weightvault.errors import FormatError, VerificationError
from weightvault.oms.dsse import INTOTO_PAYLOAD_TYPE, Envelope, EnvelopeSignature, pae

if TYPE_CHECKING:
    from weightvault.tlog import VerifierKey

__all__ = [
    "MAX_RESULT_BYTES",
    "PREDICATE_TYPE",
    "RELEASE_ACTION",
    "STATEMENT_TYPE",
    "JobResultNotLoggedError",
    "JobResultVerification",
    "digest_of",
    "make_result_statement",
    "public_key_id",
    "sign_result",
    "verify_job_result",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://weightvault.dev/access/job-result/v1"
RELEASE_ACTION = "job.release"
MAX_RESULT_BYTES = 64 * 1024 * 1024
_BOUND_FIELDS = (
    "job_id",
    "kind",
    "model",
    "version",
    "requester",
    "request_digest",
    "model_root_digest",
    "outputs_digest",
    "environment_digest",
)


def digest_of(document: Any) -> str:
    """``sha256:<hex>`` of a document's canonical JSON."""
    return "sha256:" + hashlib.sha256(canonical(document, ascii_only=True)).hexdigest()


def make_result_statement(release: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
    """The in-toto statement of one release.

    ``release`` holds the bound fields (:data:`_BOUND_FIELDS`), ``parameters``,
    ``inputs_digest``, ``approvals`` and ``log`` (``origin``, ``index``, ``entry_sha256``).
    """
    predicate = {name: release[name] for name in _BOUND_FIELDS}
    predicate.update(
        parameters=release["parameters"],
        inputs_digest=release["inputs_digest"],
        approvals=release["approvals"],
        log=release["log"],
        outputs=outputs,
    )
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {
                "name": f"job-outputs:{release['job_id']}",
                "digest": {"sha256": release["outputs_digest"].removeprefix("sha256:")},
            }
        ],
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def sign_result(statement: dict[str, Any], sign: Callable[[bytes], bytes], key_id: str) -> bytes:
    """A DSSE envelope over the statement, signed by ``sign`` (the log key's raw signer)."""
    payload = canonical(statement, ascii_only=True)
    signature = sign(pae(INTOTO_PAYLOAD_TYPE, payload))
    envelope = Envelope(INTOTO_PAYLOAD_TYPE, payload, (EnvelopeSignature(signature, key_id),))
    return canonical(envelope.to_json_obj(), ascii_only=True)


@dataclass(frozen=True)
class JobResultVerification:
    """A result that verified: the statement's predicate, and the log entry that records it."""

    predicate: dict[str, Any]
    log_index: int
    log_size: int

    @property
    def outputs(self) -> dict[str, Any]:
        outputs: dict[str, Any] = self.predicate["outputs"]
        return outputs


def _open_envelope(result: bytes, public_key: bytes) -> dict[str, Any]:
    # Step 1.
    if len(result) > MAX_RESULT_BYTES:
        raise FormatError(f"job result: larger than {MAX_RESULT_BYTES} bytes")
    envelope = Envelope.from_json_obj(load_object(result, "job result"), "job result")
    if envelope.payload_type != INTOTO_PAYLOAD_TYPE or len(envelope.signatures) != 1:
        raise VerificationError("job result: expected one signature over an in-toto statement")
    if envelope.signatures[0].keyid != public_key_id(public_key):
        raise VerificationError("job result: not signed by the log key")
    if canonical(envelope.to_json_obj(), ascii_only=True) != result:
        raise FormatError(
            "job result: not in canonical form (sorted keys, no spaces, strict base64)"
        )
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            envelope.signatures[0].sig, pae(INTOTO_PAYLOAD_TYPE, envelope.payload)
        )
    except InvalidSignature as exc:
        raise VerificationError("job result: signature does not verify under the log key") from exc
    statement = load_object(envelope.payload, "job result statement")
    if canonical(statement, ascii_only=True) != envelope.payload:
        raise FormatError("job result statement: not in canonical JSON form")
    return statement


def _check_statement(statement: dict[str, Any]) -> dict[str, Any]:
    # Step 2.
    if set(statement) != {"_type", "subject", "predicateType", "predicate"}:
        raise FormatError("job result statement: expected _type, subject, predicateType, predicate")
    if statement["_type"] != STATEMENT_TYPE or statement["predicateType"] != PREDICATE_TYPE:
        raise FormatError(f"job result statement: not a {PREDICATE_TYPE} statement")
    predicate = statement["predicate"]
    if not isinstance(predicate, dict) or not isinstance(predicate.get("outputs"), dict):
        raise FormatError("job result statement.predicate: expected an object with outputs")
    missing = [name for name in (*_BOUND_FIELDS, "log") if name not in predicate]
    if missing:
        raise FormatError(f"job result statement.predicate: missing field {missing[0]}")
    subject = statement["subject"]
    if not isinstance(subject, list) or len(subject) != 1 or not isinstance(subject[0], dict):
        raise FormatError("job result statement.subject: expected one subject")
    outputs_digest = digest_of(predicate["outputs"])
    if predicate["outputs_digest"] != outputs_digest:
        raise VerificationError("job result: the outputs do not match their recorded digest")
    if subject[0].get("digest") != {"sha256": outputs_digest.removeprefix("sha256:")}:
        raise VerificationError("job result: the subject digest does not match the outputs")
    return predicate


class JobResultNotLoggedError(VerificationError):
    """The result itself verifies, but the log does not (steps 3 and 4): its release is unproven.

    Callers that grade refusals (release gates) tell "not logged" from "bad signature" by type.
    """


def verify_job_result(result: bytes, log_export: bytes, log_key_text: str) -> JobResultVerification:
    """Verify a released job result offline (see the module docstring); raise on any mismatch.

    Steps 1-2 raise :class:`VerificationError` or :class:`FormatError`; steps 3-4 raise
    :class:`JobResultNotLoggedError`.
    """
    from weightvault.tlog import VerifierKey

    key = VerifierKey.from_text(log_key_text)
    predicate = _check_statement(_open_envelope(result, key.public_key))
    try:
        return _check_logged(predicate, log_export, key)
    except (VerificationError, FormatError) as exc:
        if isinstance(exc, JobResultNotLoggedError):
            raise
        raise JobResultNotLoggedError(exc.message) from exc


def _check_logged(
    predicate: dict[str, Any], log_export: bytes, key: VerifierKey
) -> JobResultVerification:
    from weightvault.tlog import LogExport, verify_export

    # Step 3.
    verified = verify_export(log_export, key)
    entries = LogExport.from_json(log_export).entries
    # Step 4.
    log = predicate["log"]
    index = log.get("index") if isinstance(log, dict) else None
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < verified.size:
        raise VerificationError("job result: its log entry is not in the verified log")
    entry = entries[index]
    if hashlib.sha256(entry).hexdigest() != log.get("entry_sha256"):
        raise VerificationError(
            f"job result: log entry {index} is not the one it was released under"
        )
    try:
        event = json.loads(entry)
    except ValueError as exc:
        raise VerificationError(f"log entry {index}: not JSON") from exc
    detail = event.get("detail") if isinstance(event, dict) else None
    if event.get("action") != RELEASE_ACTION or not isinstance(detail, dict):
        raise VerificationError(f"log entry {index}: not a job release")
    for name in (*_BOUND_FIELDS, "inputs_digest", "parameters", "approvals"):
        if detail.get(name) != predicate.get(name):
            raise VerificationError(f"job result: {name} differs from log entry {index}")
    return JobResultVerification(predicate, index, verified.size)


def public_key_id(public_key: bytes) -> str:
    """The key id written into result envelopes: hex SHA-256 of the raw Ed25519 key."""
    return hashlib.sha256(public_key).hexdigest()
