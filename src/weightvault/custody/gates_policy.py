"""Release gates, the part without a service: the decision over a set of attestations (used
by custody's gate room and by ``weightvault gate check --offline``).

The release policy itself (what a version needs, who may sign it) is
:mod:`weightvault.custody.gates_spec`, re-exported here. :func:`decide` verifies every
attestation offered, matches them to the requirements and returns a :class:`GateDecision`:
allowed, or the refusals, one line per requirement, naming why (``missing``,
``bad-signature``, ``unlisted-signer``, ``wrong-subject``, ``expired``, ``failed-thresholds``,
``external-not-allowed``, ``not-logged``, ``objection``, ``wrong-inputs``,
``signer-unusable``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from weightvault._json import load_object
from weightvault.attest import (
    EVAL_RESULTS,
    AttestationError,
    AttestationFailure,
    metric_misses,
    parse_statement,
    verify_attestation,
)
from weightvault.custody.gates_spec import (
    AUDIT_STATEMENT,
    CUSTODY,
    GATED_PURPOSES,
    RISK_ASSESSMENT,
    ReleasePolicy,
    Requirement,
    SignerSpec,
    _fields,
    _text,
    parse_time,
)
from weightvault.errors import FormatError, KeyMaterialError, UsageError, VerificationError

__all__ = [
    "AUDIT_STATEMENT",
    "CUSTODY",
    "GATED_PURPOSES",
    "RISK_ASSESSMENT",
    "Evidence",
    "GateDecision",
    "ReleasePolicy",
    "Requirement",
    "SignerSpec",
    "decide",
    "parse_evidence",
]

# -- evidence -----------------------------------------------------------------------------------

_MAX_EVIDENCE_BYTES = 512 * 1024


@dataclass(frozen=True)
class Evidence:
    """An attestation as offered (parsed, not yet verified): what it claims to be about."""

    digest: str
    """``sha256:<hex>`` of the exact bytes (how decisions and the risk register cite it)."""
    data: bytes = field(repr=False)
    kind: str
    """``evaluation``, ``risk-assessment`` or ``audit-statement``."""
    custody: bool
    """A custody job result (DSSE envelope signed with the log key) rather than a bundle."""
    suite: str = ""
    subjects: tuple[str, ...] = ()
    """The root digests it claims to be about (``sha256:<hex>``)."""

    def summary(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "kind": self.kind,
            "suite": self.suite or None,
            "producer": CUSTODY if self.custody else "external",
            "subjects": list(self.subjects),
        }


def parse_evidence(data: bytes) -> Evidence:
    """Classify an offered attestation from its (unverified) content; refuse anything that is
    not an evaluation, a risk assessment or an audit statement."""
    from weightvault.access.result import PREDICATE_TYPE as JOB_RESULT

    if len(data) > _MAX_EVIDENCE_BYTES:
        raise FormatError(f"attestation: larger than {_MAX_EVIDENCE_BYTES} bytes")
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    doc = load_object(data, "attestation")
    if "payloadType" in doc and "signatures" in doc:
        try:
            payload = base64.b64decode(str(doc.get("payload", "")), validate=True)
        except ValueError as exc:
            raise FormatError("attestation: payload is not base64") from exc
        statement = load_object(payload, "attestation statement")
        predicate = statement.get("predicate")
        if statement.get("predicateType") != JOB_RESULT or not isinstance(predicate, dict):
            raise FormatError("attestation: an envelope that is not a custody job result")
        if predicate.get("kind") != "evaluate":
            raise FormatError(
                f"attestation: a custody {predicate.get('kind')} job result, not an evaluation"
            )
        parameters = predicate.get("parameters")
        suite = parameters.get("evaluation") if isinstance(parameters, dict) else None
        root = predicate.get("model_root_digest")
        if not isinstance(suite, str) or not isinstance(root, str):
            raise FormatError("attestation: a job result without an evaluation or root digest")
        return Evidence(digest, data, "evaluation", True, suite, (root,))
    from weightvault.oms.bundle import parse_bundle

    bundle = parse_bundle(data)
    parsed = parse_statement(bundle.payload)
    subjects = tuple("sha256:" + s.digest.hex() for s in parsed.subjects)
    if parsed.predicate_type == EVAL_RESULTS:
        return Evidence(digest, data, "evaluation", False, parsed.predicate["suite"], subjects)
    if parsed.predicate_type == RISK_ASSESSMENT:
        _check_document(parsed.predicate, "risk-assessment")
        return Evidence(digest, data, "risk-assessment", False, "", subjects)
    if parsed.predicate_type == AUDIT_STATEMENT:
        _check_document(parsed.predicate, "audit-statement")
        return Evidence(digest, data, "audit-statement", False, "", subjects)
    raise FormatError(
        f"attestation: a {parsed.predicate_type} statement is not an evaluation, a risk "
        "assessment or an audit statement"
    )


_DOCUMENT_FIELDS = {
    "risk-assessment": (
        {"summary", "assessor", "assessedOn"},
        {"expires", "document", "misuse", "notes"},
    ),
    "audit-statement": (
        {"summary", "auditor", "auditedOn", "conclusion"},
        {"expires", "document", "notes"},
    ),
}


def _check_document(predicate: dict[str, Any], kind: str) -> dt.datetime:
    """Check a risk assessment's or audit statement's fields; return when it was made."""
    required, optional = _DOCUMENT_FIELDS[kind]
    where = "predicate"
    _fields(predicate, required | optional, where)
    for name in sorted(required):
        if name not in predicate:
            raise FormatError(f"{where}.{name}: missing")
    _text(predicate, "summary", where)
    made = parse_time(
        predicate["assessedOn" if kind == "risk-assessment" else "auditedOn"], f"{where}.made"
    )
    if "expires" in predicate:
        parse_time(predicate["expires"], f"{where}.expires")
    if kind == "audit-statement" and predicate["conclusion"] not in ("no-objection", "objection"):
        raise FormatError(f"{where}.conclusion: expected no-objection or objection")
    return made


# -- the decision -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One requirement's outcome."""

    requirement: str
    ok: bool
    failure: str = ""
    """The named failure when not ok (``missing``, ``bad-signature`` ...)."""
    message: str = ""
    digest: str | None = None
    """The attestation relied on (ok) or the closest one refused."""
    signer: str | None = None
    made: str | None = None
    metrics: dict[str, float] | None = None
    summary: str | None = None

    def line(self) -> str:
        if self.ok:
            return f"{self.requirement}: satisfied by {self.digest} (signed by {self.signer})"
        return f"{self.requirement}: {self.failure}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "requirement": self.requirement,
            "ok": self.ok,
            "digest": self.digest,
        }
        if not self.ok:
            doc.update(failure=self.failure, message=self.message)
        else:
            doc.update(signer=self.signer, made=self.made)
            if self.metrics is not None:
                doc["metrics"] = self.metrics
            if self.summary is not None:
                doc["summary"] = self.summary
        return doc


@dataclass(frozen=True)
class GateDecision:
    """Whether a version passes its release gate, and why (one finding per requirement)."""

    allowed: bool
    root_digest: str
    findings: tuple[Finding, ...]

    @property
    def relied_on(self) -> list[str]:
        return [f.digest for f in self.findings if f.ok and f.digest]

    def refusal_lines(self) -> list[str]:
        return [f.line() for f in self.findings if not f.ok]

    def to_json(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "root_digest": self.root_digest,
            "relied_on": self.relied_on,
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass(frozen=True)
class _Verified:
    signer: str
    made: dt.datetime
    expires: dt.datetime | None
    predicate: dict[str, Any]
    subject: str


class _Refused(Exception):
    def __init__(self, failure: str, message: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message


@dataclass
class _Log:
    """The custody's transparency log, verified once: job results are checked against it and
    fine-tuned versions' lineage is read from it."""

    export: bytes
    key_text: str
    times: dict[int, dt.datetime] = field(default_factory=dict)
    derived: dict[str, str] = field(default_factory=dict)
    """Root digest of each fine-tuned version -> the root digest of its base version."""

    @classmethod
    def load(cls, export: bytes, key_text: str) -> _Log:
        from weightvault.tlog import LogExport, VerifierKey, verify_export

        verified = verify_export(export, VerifierKey.from_text(key_text))
        log = cls(export, key_text)
        for index, entry in enumerate(LogExport.from_json(export).entries[: verified.size]):
            try:
                event = json.loads(entry)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            detail = event.get("detail")
            if event.get("action") == "version.derived" and isinstance(detail, dict):
                lineage = detail.get("lineage", {})
                base = lineage.get("base", {}) if isinstance(lineage, dict) else {}
                if isinstance(base, dict) and isinstance(lineage.get("root_digest"), str):
                    log.derived[lineage["root_digest"]] = str(base.get("root_digest"))
            if event.get("action") == "job.release" and isinstance(event.get("time"), str):
                log.times[index] = parse_time(event["time"], f"log entry {index}.time")
        return log


def _verify_custody(evidence: Evidence, log: _Log | None) -> _Verified:
    from weightvault.access.result import JobResultNotLoggedError, verify_job_result

    if log is None:
        raise _Refused("not-logged", "a custody result needs the custody's log to verify")
    try:
        result = verify_job_result(evidence.data, log.export, log.key_text)
    except JobResultNotLoggedError as exc:
        raise _Refused("not-logged", exc.message) from exc
    except (VerificationError, FormatError) as exc:
        raise _Refused("bad-signature", exc.message) from exc
    predicate = result.predicate
    metrics = predicate["outputs"].get("metrics")
    if not isinstance(metrics, dict):
        raise _Refused("malformed", "the job result holds no metrics")
    made = log.times.get(result.log_index)
    if made is None:
        raise _Refused("not-logged", "the job's release entry has no time")
    return _Verified(
        CUSTODY,
        made,
        None,
        {"metrics": metrics, "inputs_digest": predicate.get("inputs_digest")},
        predicate["model_root_digest"],
    )


def _verify_bundle(
    evidence: Evidence, requirement: Requirement, subject: str, now: dt.datetime
) -> _Verified:
    specs = [s for s in requirement.signers if not s.is_custody]
    if not specs:
        raise _Refused("unlisted-signer", "only custody's own results are accepted")
    errors: list[AttestationError] = []
    unusable: list[str] = []
    for spec in specs:
        try:
            verifier = spec.verifier()
        except (KeyMaterialError, UsageError) as exc:
            # A signer this service cannot check (no Sigstore support installed, a trust
            # config sigstore-python refuses): never a pass, and said as such.
            unusable.append(f"signer {spec.name}: {exc.message}")
            continue
        try:
            record = verify_attestation(
                evidence.data,
                verifier=verifier,
                expected_subject_digest=subject,
                signers=spec.accepted_ids(),
                now=now,
            )
        except AttestationError as exc:
            errors.append(exc)
            continue
        predicate = record.predicate
        if requirement.kind == "evaluation":
            made = parse_time(predicate["evaluatedOn"], "predicate.evaluatedOn")
        else:
            made = _check_document(predicate, requirement.kind)
        expires = parse_time(predicate["expires"], "expires") if "expires" in predicate else None
        return _Verified(spec.name, made, expires, predicate, subject)
    # The most telling refusal: the one from the signer it claims to be (not "unlisted").
    telling = [e for e in errors if e.failure is not AttestationFailure.UNLISTED_SIGNER]
    if not telling and unusable:
        raise _Refused("signer-unusable", "; ".join(unusable))
    chosen = (telling or errors)[0]
    raise _Refused(chosen.failure.value, chosen.detail)


def _check(
    evidence: Evidence,
    requirement: Requirement,
    acceptable: set[str],
    now: dt.datetime,
    log: _Log | None,
) -> Finding:
    """Verify one attestation against one requirement; a Finding either way."""
    label = requirement.label
    try:
        if evidence.custody:
            if not any(s.is_custody for s in requirement.signers):
                raise _Refused("unlisted-signer", "custody is not a listed signer here")
            verified = _verify_custody(evidence, log)
            pinned = requirement.inputs_digest
            if pinned and verified.predicate["inputs_digest"] != pinned:
                raise _Refused("wrong-inputs", f"the job's inputs are not {pinned[:23]}...")
        else:
            if requirement.kind == "evaluation" and not requirement.external_allowed:
                raise _Refused(
                    "external-not-allowed",
                    "produced outside custody and the policy allows only custody evaluations",
                )
            subject = next((s for s in evidence.subjects if s in acceptable), "")
            target = subject or (sorted(acceptable)[0] if acceptable else "")
            if not target:
                raise _Refused("wrong-subject", "no fine-tuned version of this version is known")
            verified = _verify_bundle(evidence, requirement, target, now)
        if verified.subject not in acceptable:
            what = (
                "a fine-tuned version of this version"
                if requirement.after_enhancement
                else ("this version")
            )
            raise _Refused("wrong-subject", f"about {verified.subject[:23]}..., not {what}")
        if verified.expires is not None and now >= verified.expires:
            raise _Refused("expired", f"expired at {verified.expires.isoformat()}")
        if requirement.max_age_s is not None:
            limit = verified.made + dt.timedelta(seconds=requirement.max_age_s)
            if now >= limit:
                raise _Refused(
                    "expired",
                    f"older than the policy's {requirement.max_age_s} s "
                    f"(made {verified.made.isoformat()})",
                )
        metrics: dict[str, float] | None = None
        summary: str | None = None
        if requirement.kind == "evaluation":
            metrics = {str(k): float(v) for k, v in verified.predicate["metrics"].items()}
            misses = metric_misses(requirement.thresholds, metrics)
            if misses:
                raise _Refused("failed-thresholds", ", ".join(misses))
        else:
            summary = str(verified.predicate["summary"])
            if verified.predicate.get("conclusion") == "objection":
                raise _Refused("objection", "the auditor's conclusion is objection")
    except _Refused as refused:
        return Finding(label, False, refused.failure, refused.message, evidence.digest)
    return Finding(
        label,
        True,
        digest=evidence.digest,
        signer=verified.signer,
        made=verified.made.astimezone(dt.UTC).isoformat(),
        metrics=metrics,
        summary=summary,
    )


_SEVERITY = ("wrong-subject", "external-not-allowed", "unlisted-signer", "malformed")
"""Failures that say the attestation is probably not meant for this requirement; any other
failure of an attestation that is about the right subject is the more telling one."""


def decide(
    policy: ReleasePolicy,
    root_digest: str,
    offered: Sequence[Evidence],
    *,
    now: dt.datetime,
    log_export: bytes | None = None,
    log_key_text: str | None = None,
) -> GateDecision:
    """Decide the gate for the version whose root digest is ``root_digest`` (``sha256:<hex>``).

    ``log_export`` and ``log_key_text``: the custody's transparency log and its key, needed for
    custody job results and for ``after_enhancement`` evaluations (the lineage of fine-tuned
    versions is read from the verified log).
    """
    log = _Log.load(log_export, log_key_text) if log_export and log_key_text else None
    derived = {d for d, base in (log.derived.items() if log else ()) if base == root_digest}
    findings = []
    for requirement in policy.requirements:
        acceptable = derived if requirement.after_enhancement else {root_digest}
        candidates = [
            e
            for e in offered
            if e.kind == requirement.kind
            and (requirement.kind != "evaluation" or e.suite == requirement.suite)
        ]
        checked = [_check(e, requirement, acceptable, now, log) for e in candidates]
        passing = [f for f in checked if f.ok]
        if passing:
            findings.append(passing[-1])
        elif checked:
            checked.sort(key=lambda f: f.failure in _SEVERITY)
            findings.append(checked[0])
        else:
            findings.append(Finding(requirement.label, False, "missing", "no attestation offered"))
    return GateDecision(all(f.ok for f in findings), root_digest, tuple(findings))
