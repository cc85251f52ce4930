"""Who did what to which version of a model, when and from where, each line with its proof.

The custody service writes one audit entry per request (allowed or denied) into its
transparency log. A timeline picks the entries about one model, resolves what each refers to
(a pull names a grant; the grant's request names the model, version and grantee), and keeps
each entry's bytes and inclusion proof with its line. :func:`verify_timeline_document` checks a
saved timeline (``--json``) line by line with only the log's public key, so the document itself
is the evidence, not the word of whoever produced it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from weightvault import _b64
from weightvault._json import load_object
from weightvault.custody.audit import VOID_ACTION
from weightvault.errors import FormatError, UsageError, VerificationError
from weightvault.incident._summaries import gate_or_risk_summary, job_summary
from weightvault.incident._summaries import whole as _int
from weightvault.incident.evidence import AuditEntry, Evidence, LineProof, verify_line
from weightvault.tlog import VerifierKey

__all__ = [
    "TIMELINE_FORMAT",
    "GrantFacts",
    "Timeline",
    "TimelineEvent",
    "VersionFacts",
    "build_timeline",
    "parse_since",
    "verify_timeline_document",
]

TIMELINE_FORMAT = "weightvault.dev/incident-timeline@v1"

_GRANT_PATH = re.compile(r"^/v1/(?:grants|requests)/([0-9a-f]{32})(?:/|$)")
_JOB_PATH = re.compile(r"^/v1/jobs/([0-9a-f]{32})(?:/|$)")
_MODEL_PATH = re.compile(r"^/v1/models/([^/]+)(?:/versions/([^/]+))?(?:/|$)")
_STAGING_PATH = re.compile(r"(?<![\w./-])/?(?:[^\s/:(]+/)+[^\s/:]*: ")
"""A server-side folder at the start of a refusal's reason (where the service staged an upload):
the entry keeps it, the line leaves it out."""
_QUIET_READS = frozenset(
    {"request.get", "request.list", "job.get", "job.list", "whoami", "healthz", "inventory"}
)
"""Allowed reads that change nothing and release nothing: left out of a timeline."""


@dataclass(frozen=True)
class GrantFacts:
    """What the log says about one grant request."""

    grant_id: str
    model: str
    version: str
    grantee: str
    byte_budget: int
    duration_s: int
    justification: str
    requested_at: str
    approvers: tuple[str, ...] = ()
    approval_keys: tuple[str, ...] = ()
    """Ids of the Ed25519 keys that signed decisions on it (approvals and denials)."""
    status: str = "pending"
    revoked_by: str | None = None
    bytes_pulled: int = 0


@dataclass(frozen=True)
class VersionFacts:
    """A version registered by the service, as its push entry records it."""

    version: str
    registered_by: str
    registered_at: str
    signer: str
    signature_sha256: str
    scan: str
    files: tuple[tuple[str, int, str], ...]
    """``(path, size, sha256 hex)`` of every file, as uploaded."""

    @property
    def size(self) -> int:
        return sum(size for _path, size, _digest in self.files)

    @property
    def root_digest(self) -> str:
        """The OMS root digest of a ``files``/SHA-256 signature over these files (what
        ``weightvault sign`` makes by default): SHA-256 over the file digests in path order."""
        import hashlib

        from weightvault.oms.manifest import component_key

        hasher = hashlib.sha256()
        for _path, _size, digest in sorted(self.files, key=lambda f: component_key(f[0])):
            hasher.update(bytes.fromhex(digest))
        return "sha256:" + hasher.hexdigest()


@dataclass(frozen=True)
class TimelineEvent:
    """One line: what happened, its audit entry and that entry's inclusion proof."""

    kind: str
    """``push``, ``push.started``, ``push.refused``, ``request``, ``approval``, ``denial``,
    ``revocation``, ``files.listed``, ``pull``, ``pull.stopped``, ``denied``, ``alert``,
    ``model``, ``policy``, ``job``, ``job.approval``, ``job.denial``, ``job.ran``,
    ``job.release``, ``voided`` (an entry that never took effect: its commit was in doubt, its
    request refused), ``void`` (the entry that says so), or the audit action itself for
    anything else about the model."""
    time: str
    principal: str | None
    client: str | None
    version: str | None
    grant_id: str | None
    nbytes: int | None
    outcome: str
    summary: str
    entry: AuditEntry
    proof: LineProof

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "time": self.time,
            "principal": self.principal,
            "client": self.client,
            "version": self.version,
            "grant_id": self.grant_id,
            "bytes": self.nbytes,
            "outcome": self.outcome,
            "summary": self.summary,
            "action": self.entry.action,
            "entry": _b64.encode(self.entry.raw),
            "proof": self.proof.to_json(),
        }


@dataclass(frozen=True)
class Timeline:
    """A model's events, oldest first, and what they were proven against."""

    model: str
    since: str | None
    events: tuple[TimelineEvent, ...]
    grants: dict[str, GrantFacts]
    versions: dict[str, VersionFacts]
    evidence: Evidence

    def to_json(self) -> dict[str, Any]:
        return {
            "format": TIMELINE_FORMAT,
            "model": self.model,
            "since": self.since,
            "source": self.evidence.source,
            "log_key": self.evidence.log_key.to_text(),
            "checkpoint": self.evidence.checkpoint.raw.decode("utf-8"),
            "tree_size": self.evidence.tree_size,
            "unproven_tail": self.evidence.unproven_tail,
            "events": [event.to_json() for event in self.events],
        }


def parse_since(text: str) -> dt.datetime:
    """``2026-12-06``, ``2026-12-06T07:00:00Z`` or any ISO 8601 time (UTC unless zoned)."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(f"since: {text!r} is not an ISO 8601 date or time") from exc
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _entry_time(entry: AuditEntry) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(str(entry.event.get("time", "")).replace("Z", "+00:00"))
    except ValueError:
        return None


def _grant_of(entry: AuditEntry) -> str | None:
    detail = entry.detail
    for key in ("grant_id", "request_id"):
        value = detail.get(key)
        if isinstance(value, str) and len(value) == 32:
            return value
    request = detail.get("request")
    if isinstance(request, dict) and isinstance(request.get("id"), str):
        return str(request["id"])
    match = _GRANT_PATH.match(str(entry.event.get("path", "")))
    return match.group(1) if match else None


def _job_of(entry: AuditEntry) -> str | None:
    detail = entry.detail
    if isinstance(detail.get("job_id"), str):
        return str(detail["job_id"])
    job = detail.get("job")
    if isinstance(job, dict) and isinstance(job.get("id"), str):
        return str(job["id"])
    match = _JOB_PATH.match(str(entry.event.get("path", "")))
    return match.group(1) if match else None


def _model_version_of(entry: AuditEntry) -> tuple[str | None, str | None]:
    detail = entry.detail
    for key in ("request", "job"):  # a grant request's or a job's view
        view = detail.get(key)
        if isinstance(view, dict):
            return _str(view.get("model")), _str(view.get("version"))
    model, version = _str(detail.get("model")), _str(detail.get("version"))
    match = _MODEL_PATH.match(str(entry.event.get("path", "")))
    if match:
        model = model or match.group(1)
        version = version or match.group(2)
    return model, version


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


class _Collector:
    """One pass over the log: grants and versions of the model, then its events."""

    def __init__(self, evidence: Evidence, model: str) -> None:
        self.evidence = evidence
        self.model = model
        self.grants: dict[str, dict[str, Any]] = {}
        self.versions: dict[str, VersionFacts] = {}
        self.jobs: dict[str, dict[str, str]] = {}
        """Job id -> model, version, requester, kind (from the jobs' submit entries)."""

    def learn(self, entries: Iterable[AuditEntry]) -> None:
        """Grants (from their request entries) and versions (from their push entries)."""
        for entry in entries:
            model, version = _model_version_of(entry)
            if model != self.model or entry.outcome not in ("allowed",):
                continue
            grant_id = _grant_of(entry)
            if entry.action == "job.submit" and isinstance(entry.detail.get("job"), dict):
                job = entry.detail["job"]
                self.jobs[str(job.get("id"))] = {
                    "version": version or "",
                    "requester": str(job.get("requester", "")),
                    "kind": str(job.get("kind", "")),
                }
            if entry.action == "request.create" and grant_id:
                request = entry.detail.get("request", {})
                self.grants[grant_id] = {
                    "grant_id": grant_id,
                    "model": model,
                    "version": version or "",
                    "grantee": str(request.get("requester", "")),
                    "byte_budget": _int(request.get("byte_budget")) or 0,
                    "duration_s": _int(request.get("duration_s")) or 0,
                    "justification": str(request.get("justification", "")),
                    "requested_at": str(entry.event.get("time", "")),
                    "approvers": [],
                    "approval_keys": [],
                    "status": "pending",
                    "revoked_by": None,
                    "bytes_pulled": 0,
                }
            elif entry.action == "version.upload" and version and "files" in entry.detail:
                files = tuple(
                    (str(f.get("path")), _int(f.get("size")) or 0, str(f.get("sha256")))
                    for f in entry.detail["files"]
                    if isinstance(f, dict)
                )
                self.versions[version] = VersionFacts(
                    version=version,
                    registered_by=str(entry.event.get("principal") or ""),
                    registered_at=str(entry.event.get("time", "")),
                    signer=str(entry.detail.get("signer", "")),
                    signature_sha256=str(entry.detail.get("signature_sha256", "")),
                    scan=str(entry.detail.get("scan", "")),
                    files=files,
                )

    def about_model(self, entry: AuditEntry) -> bool:
        model, _version = _model_version_of(entry)
        if model is not None:
            return model == self.model
        grant_id = _grant_of(entry)
        if grant_id is not None and grant_id in self.grants:
            return True
        job_id = _job_of(entry)
        return job_id is not None and job_id in self.jobs

    def event(self, entry: AuditEntry) -> TimelineEvent | None:
        action, outcome, detail = entry.action, entry.outcome, entry.detail
        if outcome == "allowed" and action in _QUIET_READS:
            return None
        principal = _str(entry.event.get("principal"))
        who = principal or f"an unauthenticated client ({entry.event.get('client') or '?'})"
        grant_id = _grant_of(entry)
        grant = self.grants.get(grant_id or "")
        _model, version = _model_version_of(entry)
        if version is None and grant is not None:
            version = grant["version"]
        job_id = _job_of(entry) if action.startswith("job.") or grant is None else None
        job = self.jobs.get(job_id or "")
        if version is None and job is not None:
            version = job["version"] or None
        nbytes: int | None = None
        subject = f"{self.model}@{version}" if version else self.model
        on_grant = f"grant {grant_id} ({grant['grantee']}, {subject})" if grant else subject
        kind = action
        if outcome == "denied":
            kind = "push.refused" if action == "version.upload" else "denied"
            reason = _STAGING_PATH.sub(
                "", str(detail.get("error") or f"HTTP {detail.get('status')}")
            )
            target = on_grant if grant_id else subject
            summary = f"{who} was denied {action} on {target}: {reason}"
            if action == "version.upload":
                nbytes = _int(detail.get("bytes"))
                summary = f"upload of {subject} by {who} refused: {reason}"
        elif action == "version.upload" and outcome == "started":
            kind, nbytes = "push.started", _int(detail.get("bytes"))
            summary = f"{who} started an upload of {subject} ({nbytes} bytes)"
        elif action == "version.upload":
            facts = self.versions.get(version or "")
            kind, nbytes = "push", _int(detail.get("bytes"))
            files = len(facts.files) if facts else 0
            root = f", root {facts.root_digest}" if facts else ""
            summary = (
                f"{who} pushed {subject}: {files} files, {nbytes} bytes, signer "
                f"{detail.get('signer')}, scan {detail.get('scan')}{root}"
            )
        elif action == "request.create" and grant is not None:
            kind = "request"
            summary = (
                f"{who} requested {subject} (request {grant_id}, {grant['duration_s']} s, "
                f"{grant['byte_budget']} bytes): {grant['justification']!r}"
            )
        elif action in ("request.approve", "request.deny") and grant is not None:
            kind = "approval" if action == "request.approve" else "denial"
            verb = "approved" if kind == "approval" else "denied"
            status = str(detail.get("status", "?"))
            key_id = str(detail.get("key_id", ""))
            if kind == "approval":
                grant["approvers"].append(principal or "?")
            grant["approval_keys"].append(key_id)  # every key that signed a decision
            grant["status"] = status
            summary = (
                f"{who} {verb} request {grant_id} of {grant['grantee']} for {subject} ({status})"
            )
        elif action == "grant.revoke" and grant is not None:
            kind = "revocation"
            grant["status"], grant["revoked_by"] = "revoked", principal
            summary = f"{who} revoked {on_grant}"
        elif action == "grant.files":
            kind = "files.listed"
            summary = f"{who} listed the files of {on_grant}"
        elif action == "pull" and grant is not None:
            span = detail.get("range")
            start, end = span if isinstance(span, list) and len(span) == 2 else (0, 0)
            kind, nbytes = "pull", (_int(end) or 0) - (_int(start) or 0)
            grant["bytes_pulled"] += nbytes
            summary = (
                f"{who} pulled {detail.get('file')} of {subject} under grant {grant_id}: "
                f"bytes {start}-{end} of {detail.get('total')}"
            )
        elif action == "pull.incomplete":
            kind, nbytes = "pull.stopped", _int(detail.get("sent"))
            summary = (
                f"pull of {detail.get('file')} by {who} under {on_grant} stopped after "
                f"{nbytes} of {detail.get('expected')} bytes"
            )
        elif action.startswith("job.") and job_id:
            kind, summary, nbytes = job_summary(action, outcome, detail, who, job_id, subject)
        elif action.startswith("alert."):
            kind = "alert"
            summary = f"alert {action[len('alert.') :]} about {principal or '-'}: " + ", ".join(
                f"{k}={_STAGING_PATH.sub('', v) if isinstance(v, str) else v}"
                for k, v in sorted(detail.items())
                if k not in ("model", "received")  # the digests are in the report's indicators
            )
        elif action.startswith(("gate.", "risk.")) and outcome in ("allowed", "refused"):
            summary = gate_or_risk_summary(action, outcome, detail, who, subject)
        elif action == "model.create":
            kind, summary = "model", f"{who} registered model {self.model}"
        elif action == "model.policy":
            kind, summary = "policy", f"{who} changed the policy of {self.model}"
        else:
            summary = f"{who}: {action} on {on_grant if grant else subject} ({outcome})"
        return self._line(entry, kind, outcome, summary, (version, grant_id, nbytes))

    def _line(
        self,
        entry: AuditEntry,
        kind: str,
        outcome: str,
        summary: str,
        facts: tuple[str | None, str | None, int | None],
    ) -> TimelineEvent:
        """A line with its entry's proof; ``facts``: version, grant id, bytes."""
        version, grant_id, nbytes = facts
        return TimelineEvent(
            kind=kind,
            time=str(entry.event.get("time", "")),
            principal=_str(entry.event.get("principal")),
            client=_str(entry.event.get("client")),
            version=version,
            grant_id=grant_id,
            nbytes=nbytes,
            outcome=outcome,
            summary=summary,
            entry=entry,
            proof=self.evidence.prove(entry.index),
        )

    def cancelled(
        self, entry: AuditEntry, void: AuditEntry | None, shown: set[int]
    ) -> TimelineEvent | None:
        """The line of a voided entry of the model (``void`` voids it: it never took effect, so
        nothing is learnt or counted from it), or of an ``audit.void`` entry whose voided entry
        is ``shown`` (on the timeline); both carry their proofs, so a reader checks the void."""
        if void is not None:
            if not self.about_model(entry):
                return None
            who = _str(entry.event.get("principal")) or "an unauthenticated client"
            summary = (
                f"VOIDED by log entry {void.index} ({void.detail.get('reason')}): {who}: "
                f"{entry.action} ({entry.outcome}) never took effect"
            )
            kind = "voided"
        elif _int(entry.detail.get("index")) in shown:
            kind, summary = "void", f"log entry {entry.detail['index']} voided"
        else:
            return None
        facts = (_model_version_of(entry)[1], _grant_of(entry), None)
        return self._line(entry, kind, "voided", summary, facts)


def build_timeline(evidence: Evidence, model: str, since: dt.datetime | None = None) -> Timeline:
    """The events of ``model`` in the verified log, oldest first (optionally from ``since``)."""
    if not model:
        raise ValueError("model must be named")
    collector = _Collector(evidence, model)
    events = []
    # One pass: a grant's request (a job's submission, a version's push) comes before every
    # entry that refers to it, so what is learnt from an entry serves the entries after it.
    voided, shown = evidence.voided, set[int]()
    for entry in evidence.iter_entries():
        void = voided.get(entry.index)
        if void is not None or entry.action == VOID_ACTION:
            event = collector.cancelled(entry, void, shown)
        else:
            collector.learn((entry,))
            if not collector.about_model(entry):
                continue
            event = collector.event(entry)  # every entry updates the grants' state
        if event is None:
            continue
        when = _entry_time(entry)
        if event.kind != "void" and since is not None and (when is None or when < since):
            continue  # a void goes with the line it voids
        if event.kind == "voided":
            shown.add(entry.index)
        events.append(event)
    grants = {
        gid: GrantFacts(
            **{
                **facts,
                "approvers": tuple(facts["approvers"]),
                "approval_keys": tuple(facts["approval_keys"]),
            }
        )
        for gid, facts in collector.grants.items()
    }
    return Timeline(
        model=model,
        since=since.isoformat().replace("+00:00", "Z") if since else None,
        events=tuple(events),
        grants=grants,
        versions=dict(collector.versions),
        evidence=evidence,
    )


@dataclass(frozen=True)
class TimelineCheck:
    """A saved timeline whose every line verified."""

    model: str
    lines: int
    tree_size: int


def _proven_line(
    line: object, where: str, checkpoint: bytes, log_key: VerifierKey
) -> tuple[LineProof, Any]:
    """A saved line (an event or an action taken) whose log entry reaches the signed
    checkpoint: its proof and the entry it carries, parsed. Lines and actions are proven the
    same way; only the facts compared with the entry differ."""
    if not isinstance(line, dict):
        raise FormatError(f"{where}: not an object")
    proof = LineProof.from_json(line.get("proof"), f"{where}.proof")
    entry = _b64.decode(str(line.get("entry", "")), f"{where}.entry")
    verify_line(entry, proof, checkpoint, log_key)
    return proof, json.loads(entry)


def verify_timeline_document(data: bytes, log_key: VerifierKey) -> TimelineCheck:
    """Check a saved timeline (or a JSON report: its timeline and actions taken) with only the
    log key.

    Every line's entry must hash to its leaf, its proof must reach the signed checkpoint's
    root, and the line's facts must be what its entry says (time, principal, client, action);
    a line shown as voided needs the line of the void entry that names it, and vice versa.
    """
    doc = load_object(data, "timeline", max_bytes=1 << 30)
    actions: list[Any] = []
    if "timeline" in doc and isinstance(doc["timeline"], dict):
        # A JSON incident report carries its timeline whole, and its actions taken with proofs.
        listed = doc.get("actions_taken")
        actions = listed if isinstance(listed, list) else []
        doc = doc["timeline"]
    if doc.get("format") != TIMELINE_FORMAT:
        raise FormatError(f"timeline: format is not {TIMELINE_FORMAT}")
    checkpoint = doc.get("checkpoint")
    events = doc.get("events")
    if not isinstance(checkpoint, str) or not isinstance(events, list):
        raise FormatError("timeline: checkpoint and events are required")
    tree_size = 0
    signed = checkpoint.encode("utf-8")
    marked: set[tuple[object, object]] = set()  # the voided lines, and what the void lines
    named: set[tuple[object, object]] = set()  # name as voided: the same, or a line was altered
    for position, line in enumerate(events):
        proof, event = _proven_line(line, f"timeline.events[{position}]", signed, log_key)
        if line.get("outcome") == "voided" and event.get("action") != VOID_ACTION:
            marked.add((proof.index, proof.leaf_hash.hex()))
        elif event.get("action") == VOID_ACTION and isinstance(event.get("detail"), dict):
            named.add((event["detail"].get("index"), event["detail"].get("leaf_hash")))
        for name, key in (("time", "time"), ("principal", "principal"), ("client", "client")):
            if line.get(name) != event.get(key):
                raise VerificationError(
                    f"log entry {proof.index}: the line's {name} is not what the entry says"
                )
        if line.get("action") != event.get("action"):
            raise VerificationError(f"log entry {proof.index}: the line's action was changed")
        tree_size = proof.tree_size
    if marked != named:
        raise VerificationError("timeline: a voided line and the void entries do not match")
    for position, action in enumerate(actions):
        proof, event = _proven_line(action, f"actions_taken[{position}]", signed, log_key)
        if action.get("by") != event.get("principal"):
            raise VerificationError(f"log entry {proof.index}: the action's author was changed")
    return TimelineCheck(
        model=str(doc.get("model", "")), lines=len(events) + len(actions), tree_size=tree_size
    )
