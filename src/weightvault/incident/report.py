"""A shareable incident report built from a verified timeline: one document, four renderings.

:func:`build_report` turns a :class:`~weightvault.incident.timeline.Timeline` (and the rest of
the verified log, for actions taken against the people involved) into one JSON document:
summary, timeline, affected versions with their root digests, indicators, actions taken, the
release-gate decisions (with the attestation digests each relied on) and the model's risk
register as the log records it (every ``risk.*`` entry holds the whole entry after its change,
so the register is rebuilt from the verified log, not taken from the service's database).
:mod:`weightvault.incident.render` writes it as Markdown, self-contained HTML or a STIX 2.1
bundle; every rendering says the same things because they all read this document.

``redact`` is for sharing outside the organisation: people become ``principal-1``, ...,
the model and its versions get neutral names, addresses, token HMACs, justifications and
absolute paths are dropped, the audit entries' bytes are left out (they name people); digests,
key ids, times, byte counts and each line's leaf hash and inclusion proof are kept, so a
receiver can match files and anyone holding the log can still check every line.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from weightvault import _b64
from weightvault.custody.alerts import INCIDENT_SIGNALS
from weightvault.custody.risk import RISK_ACTIONS, register_from_events
from weightvault.incident.evidence import AuditEntry
from weightvault.incident.timeline import Timeline, TimelineEvent

__all__ = ["REPORT_FORMAT", "build_report"]

REPORT_FORMAT = "weightvault.dev/incident-report@v1"

_ACTIONS_TAKEN = {
    "grant.revoke": "revocation",
    "token.revoke": "token revocation",
    "principal.update": "principal change",
    "model.policy": "policy change",
}
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[\w.@+-]+/)*[\w.@+-]*")
_ADDRESS = re.compile(
    r"\b\d{1,3}(?:\.\d{1,3}){3}\b"  # IPv4
    r"|(?<![\w:])(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}(?![\w:])"  # IPv6, full
    r"|(?<![\w:])[0-9a-fA-F:]*::[0-9a-fA-F:]*(?![\w:])"  # IPv6, compressed
)


def _involved(timeline: Timeline) -> dict[str, set[str]]:
    """Principals by role in the events: who pushed, requested, approved, pulled, was denied."""
    roles: dict[str, set[str]] = {}
    for event in timeline.events:
        if event.principal:
            roles.setdefault(event.principal, set()).add(event.kind)
    return roles


def _actions(timeline: Timeline, people: Iterable[str]) -> list[tuple[AuditEntry, str, str]]:
    """Entries of the whole log that acted against the model or the people involved."""
    people = set(people)
    out = []
    grant_ids = set(timeline.grants)
    wanted = tuple(f'"action":"{action}"'.encode() for action in _ACTIONS_TAKEN)
    voided = timeline.evidence.voided  # never took effect
    for entry in timeline.evidence.iter_entries(wanted):
        kind = _ACTIONS_TAKEN.get(entry.action)
        if kind is None or entry.outcome != "allowed" or entry.index in voided:
            continue
        detail = entry.detail
        who = str(entry.event.get("principal") or "?")
        if entry.action == "grant.revoke" and detail.get("request_id") in grant_ids:
            grant = timeline.grants[str(detail["request_id"])]
            text = f"{who} revoked grant {grant.grant_id} of {grant.grantee} ({grant.version})"
        elif entry.action == "token.revoke" and detail.get("owner") in people:
            text = f"{who} revoked token {detail.get('token_id')} of {detail.get('owner')}"
        elif entry.action == "principal.update" and detail.get("name") in people:
            name = detail.get("name")
            if detail.get("approval_key_id"):
                kind = "key rotation"
                text = (
                    f"{who} replaced the approval key of {name} (now {detail['approval_key_id']})"
                )
            elif detail.get("disabled") is True:
                kind, text = "principal disabled", f"{who} disabled {name}"
            else:
                changes = ", ".join(sorted(k for k in detail if k != "name")) or "settings"
                text = f"{who} changed principal {name}: {changes}"
        elif entry.action == "model.policy" and detail.get("model") == timeline.model:
            signers = [s.get("name") for s in (detail.get("policy") or {}).get("signers", [])]
            text = f"{who} changed the policy of {timeline.model} (signers: {signers})"
        else:
            continue
        out.append((entry, kind, text))
    return out


def _versions(timeline: Timeline) -> list[dict[str, Any]]:
    pulled: dict[str, list[str]] = {}
    for grant in timeline.grants.values():
        if grant.bytes_pulled:
            pulled.setdefault(grant.version, []).append(grant.grant_id)
    out = []
    for name, facts in timeline.versions.items():
        out.append(
            {
                "version": name,
                "root_digest": facts.root_digest,
                "size": facts.size,
                "registered_by": facts.registered_by,
                "registered_at": facts.registered_at,
                "signer": facts.signer,
                "signature_sha256": facts.signature_sha256,
                "scan": facts.scan,
                "files": [
                    {"path": path, "size": size, "sha256": digest}
                    for path, size, digest in facts.files
                ],
                "pulled_under": sorted(pulled.get(name, [])),
            }
        )
    return out


def _refused_uploads(timeline: Timeline) -> list[dict[str, Any]]:
    out = []
    for event in timeline.events:
        if event.kind != "push.refused":
            continue
        received = event.entry.detail.get("received")
        files = [
            {"path": str(f.get("path")), "sha256": str(f.get("sha256"))}
            for f in (received if isinstance(received, list) else [])
            if isinstance(f, dict)
        ]
        out.append(
            {
                "version": event.version,
                "time": event.time,
                "by": event.principal,
                "reason": str(event.entry.detail.get("error", "")),
                "files": files,
                "log_index": event.proof.index,
            }
        )
    return out


def _indicators(
    timeline: Timeline, versions: list[dict[str, Any]], refused: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Digests worth watching for: released (pulled) files and files of refused uploads."""
    indicators: list[dict[str, Any]] = []
    for version in versions:
        if not version["pulled_under"]:
            continue
        indicators.append(
            {
                "type": "root-digest",
                "value": version["root_digest"],
                "why": f"released version {version['version']} (OMS root digest)",
            }
        )
        for f in version["files"]:
            indicators.append(
                {
                    "type": "sha256",
                    "value": f["sha256"],
                    "path": f["path"],
                    "why": f"file of released version {version['version']}",
                }
            )
    for upload in refused:
        for f in upload["files"]:
            indicators.append(
                {
                    "type": "sha256",
                    "value": f["sha256"],
                    "path": f["path"],
                    "why": f"file of a refused upload of {upload['version']} ({upload['reason']})",
                }
            )
    return indicators


def _gate_decisions(timeline: Timeline) -> list[dict[str, Any]]:
    """The model's release-gate decisions in the timeline (allowed, refused, overridden)."""
    out = []
    for event in timeline.events:
        if event.entry.action != "gate.decision" or event.kind == "voided":
            continue
        detail = event.entry.detail
        out.append(
            {
                "time": event.time,
                "version": event.version,
                "purpose": str(detail.get("purpose", "")),
                "stage": str(detail.get("stage", "")),
                "outcome": event.outcome,
                "by": event.principal,
                "override": detail.get("override"),
                "root_digest": detail.get("root_digest"),
                "relied_on": [str(d) for d in detail.get("relied_on") or []],
                "refusals": [str(r) for r in detail.get("refusals") or []],
                "log_index": event.proof.index,
            }
        )
    return out


def _risk_register(timeline: Timeline) -> list[dict[str, Any]]:
    """The model's risk register as of the log's signed checkpoint (a ``since`` does not cut
    it: the register is a state, not a span), each entry with the proof of its last change."""
    wanted = tuple(f'"action":"{action}"'.encode() for action in RISK_ACTIONS)
    voided = timeline.evidence.voided
    events = (
        (e.index, e.event) for e in timeline.evidence.iter_entries(wanted) if e.index not in voided
    )
    register = register_from_events(events, timeline.model)
    for entry in register:
        entry["proof"] = timeline.evidence.prove(int(entry["log_index"])).to_json()
    return register


def build_report(timeline: Timeline, *, redact: bool = False) -> dict[str, Any]:
    """The report as one JSON document (see the module docstring for ``redact``)."""
    versions = _versions(timeline)
    refused = _refused_uploads(timeline)
    roles = _involved(timeline)
    actions = _actions(timeline, roles)
    approval_keys = sorted(
        {key for grant in timeline.grants.values() for key in grant.approval_keys if key}
    )
    signers = sorted({(v["signer"], v["signature_sha256"]) for v in versions})
    counts = Counter(event.kind for event in timeline.events)
    times = [event.time for event in timeline.events]
    released = sum(event.nbytes or 0 for event in timeline.events if event.kind == "pull")
    risks = _risk_register(timeline)
    summary = {
        "model": timeline.model,
        "first_event": min(times) if times else None,
        "last_event": max(times) if times else None,
        "events": len(timeline.events),
        "counts": dict(sorted(counts.items())),
        "versions": len(versions),
        "grants": len(timeline.grants),
        "bytes_released": released,
        "denied_requests": counts.get("denied", 0) + counts.get("push.refused", 0),
        "alerts": counts.get("alert", 0),
        "revocations": sum(1 for _e, kind, _t in actions if kind == "revocation"),
        "gate_decisions": counts.get("gate.decision", 0),
        "open_risks": sum(1 for r in risks if r.get("status", "open") == "open"),
    }
    doc: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "redacted": redact,
        "summary": summary,
        "versions": versions,
        "refused_uploads": refused,
        "grants": [
            {
                "grant_id": g.grant_id,
                "version": g.version,
                "grantee": g.grantee,
                "requested_at": g.requested_at,
                "byte_budget": g.byte_budget,
                "duration_s": g.duration_s,
                "justification": g.justification,
                "approvers": list(g.approvers),
                "approval_keys": list(g.approval_keys),
                "status": g.status,
                "revoked_by": g.revoked_by,
                "bytes_pulled": g.bytes_pulled,
            }
            for g in timeline.grants.values()
        ],
        "indicators": _indicators(timeline, versions, refused),
        "incident_signals": [
            {
                "signal": event.entry.action[len("alert.") :],
                "time": event.time,
                "principal": event.principal,
                "summary": event.summary,
                "log_index": event.proof.index,
            }
            for event in timeline.events
            if event.kind == "alert" and event.entry.action[len("alert.") :] in INCIDENT_SIGNALS
        ],
        "principals": [
            {"name": name, "did": sorted(kinds)} for name, kinds in sorted(roles.items())
        ],
        "approval_keys": approval_keys,
        "signing_identities": [{"signer": s, "signature_sha256": d} for s, d in signers],
        "client_addresses": sorted({e.client for e in timeline.events if e.client}),
        "actions_taken": [
            {
                "kind": kind,
                "time": str(entry.event.get("time", "")),
                "by": entry.event.get("principal"),
                "summary": text,
                "log_index": entry.index,
                "proof": timeline.evidence.prove(entry.index).to_json(),
                "entry": _b64.encode(entry.raw),
            }
            for entry, kind, text in actions
        ],
        "gate_decisions": _gate_decisions(timeline),
        "risk_register": risks,
        "timeline": timeline.to_json(),
    }
    return _redacted(doc, timeline) if redact else doc


class _Pseudonyms:
    """Replaces internal names in free text and fields with neutral ones, consistently."""

    def __init__(self, timeline: Timeline, people: Iterable[str]) -> None:
        self.literals: dict[str, str] = {
            repr(g.justification): "(justification redacted)"
            for g in timeline.grants.values()
            if g.justification
        }
        for facts in timeline.versions.values():  # "key:release-key": the key's internal name
            if ":" in facts.signer:
                self.literals[facts.signer] = facts.signer.split(":", 1)[0]
        self.names: dict[str, str] = {timeline.model: "model-1"}
        for number, version in enumerate(sorted(_all_versions(timeline)), start=1):
            self.names.setdefault(version, f"version-{number}")
        for number, person in enumerate(sorted(set(people)), start=1):
            self.names.setdefault(person, f"principal-{number}")
        ordered = sorted(self.names, key=len, reverse=True)
        self._pattern = re.compile(
            r"(?<![\w.-])(" + "|".join(re.escape(n) for n in ordered) + r")(?![\w-])"
        )

    def name(self, value: object) -> object:
        return self.names.get(value, value) if isinstance(value, str) else value

    def text(self, value: str) -> str:
        for literal in sorted(self.literals, key=len, reverse=True):  # free text: dropped whole
            value = value.replace(literal, self.literals[literal])
        value = _ADDRESS.sub("<address>", _ABSOLUTE_PATH.sub("<path>", value))
        return self._pattern.sub(lambda m: self.names[m.group(1)], value)


def _all_versions(timeline: Timeline) -> set[str]:
    found = set(timeline.versions) | {g.version for g in timeline.grants.values()}
    return found | {e.version for e in timeline.events if e.version}


def _people(doc: dict[str, Any], timeline: Timeline) -> set[str]:
    people = {p["name"] for p in doc["principals"]}
    for grant in timeline.grants.values():
        people.update({grant.grantee, *grant.approvers, grant.revoked_by or ""})
    for version in doc["versions"]:
        people.add(version["registered_by"])
    for action in doc["actions_taken"]:
        people.add(str(action["by"] or ""))
    for decision in doc["gate_decisions"]:
        people.add(str(decision["by"] or ""))
    for risk in doc["risk_register"]:
        people.update(str(risk.get(k) or "") for k in ("owner", "created_by", "updated_by"))
    people.discard("")
    return people


def _redacted(doc: dict[str, Any], timeline: Timeline) -> dict[str, Any]:
    names = _Pseudonyms(timeline, _people(doc, timeline))
    doc["summary"]["model"] = names.name(doc["summary"]["model"])
    for version in doc["versions"]:
        version["version"] = names.name(version["version"])
        version["registered_by"] = names.name(version["registered_by"])
        version["signer"] = str(version["signer"]).split(":", 1)[0]
        for f in version["files"]:
            f["path"] = f["path"].rsplit("/", 1)[-1]
    for upload in doc["refused_uploads"]:
        upload["version"] = names.name(upload["version"])
        upload["by"] = names.name(upload["by"])
        upload["reason"] = names.text(upload["reason"])
        for f in upload["files"]:
            f["path"] = f["path"].rsplit("/", 1)[-1]
    for grant in doc["grants"]:
        grant["version"] = names.name(grant["version"])
        grant["grantee"] = names.name(grant["grantee"])
        grant["justification"] = "(redacted)"
        grant["approvers"] = [names.name(a) for a in grant["approvers"]]
        grant["revoked_by"] = names.name(grant["revoked_by"])
    for indicator in doc["indicators"]:
        indicator["why"] = names.text(indicator["why"])
        if "path" in indicator:
            indicator["path"] = indicator["path"].rsplit("/", 1)[-1]
    doc["principals"] = [
        {"name": names.name(p["name"]), "did": p["did"]} for p in doc["principals"]
    ]
    doc["signing_identities"] = [
        {"signer": str(s["signer"]).split(":", 1)[0], "signature_sha256": s["signature_sha256"]}
        for s in doc["signing_identities"]
    ]
    doc["client_addresses"] = []
    for signal in doc["incident_signals"]:
        signal["principal"] = names.name(signal["principal"])
        signal["summary"] = names.text(signal["summary"])
    for action in doc["actions_taken"]:
        action["by"] = names.name(action["by"])
        action["summary"] = names.text(action["summary"])
        del action["entry"]
    for decision in doc["gate_decisions"]:
        decision["version"] = names.name(decision["version"])
        decision["by"] = names.name(decision["by"])
        decision["refusals"] = [names.text(r) for r in decision["refusals"]]
    for risk in doc["risk_register"]:
        risk["model"] = names.name(risk["model"])
        for key in ("owner", "created_by", "updated_by"):
            risk[key] = names.name(risk.get(key))
        for key in ("hazard", "close_reason"):
            if isinstance(risk.get(key), str):
                risk[key] = names.text(risk[key])
        risk["mitigations"] = [names.text(m) for m in risk["mitigations"]]
    doc["timeline"] = _redacted_timeline(doc["timeline"], timeline.events, names)
    return doc


def _redacted_timeline(
    data: dict[str, Any], events: tuple[TimelineEvent, ...], names: _Pseudonyms
) -> dict[str, Any]:
    data["model"] = names.name(data["model"])
    data["source"] = "(redacted)"
    for line in data["events"]:
        line["principal"] = names.name(line["principal"])
        line["client"] = None
        line["version"] = names.name(line["version"])
        line["summary"] = names.text(line["summary"])
        del line["entry"]  # it names people; the leaf hash and proof stay checkable
    del events
    return data
