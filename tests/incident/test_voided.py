"""A pull whose audit commit was in doubt (refused with 503, its entry durable anyway) shows on
the incident timeline as voided, next to the void entry, and counts as no release; a saved
timeline that hides the void, or the voiding, fails verification."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from tests.custody.in_doubt import CommitFaults

from weightvault.custody.audit import AuditTrail, AuditUnavailable
from weightvault.errors import VerificationError
from weightvault.incident import build_timeline, verify_timeline_document
from weightvault.incident.evidence import evidence_from_export
from weightvault.incident.report import build_report
from weightvault.incident.timeline import Timeline
from weightvault.tlog import Ed25519NoteSigner

ORIGIN = "weightvault.custody/audit"
GRANT = "9" * 32


def _event(action: str, principal: str, detail: dict[str, Any], outcome: str = "allowed") -> Any:
    return {
        "action": action,
        "outcome": outcome,
        "principal": principal,
        "client": "127.0.0.1",
        "path": f"/v1/grants/{GRANT}" if action == "pull" else "/v1/requests",
        "request_id": secrets.token_hex(16),
        "time": "2026-12-07T03:00:00Z",
        "detail": detail,
    }


def _pull(end: int, outcome: str = "allowed", **more: Any) -> Any:
    detail = {"grant_id": GRANT, "file": "model.safetensors", "range": [0, end], "total": 1000}
    return _event("pull", "rita", {**detail, **more}, outcome)


@pytest.fixture
def timeline(tmp_path: Path) -> Timeline:
    signer = Ed25519NoteSigner.generate(ORIGIN)
    trail = AuditTrail(str(tmp_path / "audit.tlog"), ORIGIN, signer, b"k" * 32)
    faults = CommitFaults(trail)
    request = {
        "id": GRANT,
        "model": "llama",
        "version": "v1",
        "requester": "rita",
        "byte_budget": 1000,
        "duration_s": 3600,
        "justification": "eval",
    }
    trail.append(_event("request.create", "rita", {"request": request}))
    for who, status in (("alice", "pending"), ("bob", "active")):
        trail.append(_event("request.approve", who, {"request_id": GRANT, "status": status}))
    faults.plan = ["after"]  # the pull's entry lands, its answer is lost: the pull is refused
    with pytest.raises(AuditUnavailable):
        trail.append(_pull(400))
    trail.append(_pull(400, "denied", status=503, error="the audit log cannot be written"))
    trail.append(_pull(1000))  # a retry, served
    export = trail.export()
    trail.close()
    evidence = evidence_from_export(export, signer.verifier_key, source="test")
    assert sorted(evidence.voided) == [3]
    return build_timeline(evidence, "llama")


def test_the_timeline_shows_the_pull_as_voided_and_counts_only_the_served_one(
    timeline: Timeline,
) -> None:
    kinds = [(e.kind, e.proof.index) for e in timeline.events]
    assert kinds == [
        ("request", 0),
        ("approval", 1),
        ("approval", 2),
        ("voided", 3),
        ("denied", 4),
        ("void", 5),
        ("pull", 6),
    ]
    voided = timeline.events[3]
    assert voided.entry.action == "pull" and voided.outcome == "voided" and voided.nbytes is None
    assert "VOIDED by log entry 5" in voided.summary and "answered 503" in voided.summary
    assert timeline.grants[GRANT].bytes_pulled == 1000
    report = build_report(timeline)
    assert report["summary"]["bytes_released"] == 1000
    assert report["summary"]["counts"]["voided"] == 1


def test_a_saved_timeline_must_keep_the_void_and_the_voiding(timeline: Timeline) -> None:
    doc = timeline.to_json()
    key = timeline.evidence.log_key
    assert verify_timeline_document(json.dumps(doc).encode(), key).lines == 7
    without_void = {**doc, "events": [e for e in doc["events"] if e["kind"] != "void"]}
    with pytest.raises(VerificationError, match="voided line and the void entries"):
        verify_timeline_document(json.dumps(without_void).encode(), key)
    unmarked = json.loads(json.dumps(doc))
    unmarked["events"][3].update(kind="pull", outcome="allowed")  # as if it had been served
    with pytest.raises(VerificationError, match="voided line and the void entries"):
        verify_timeline_document(json.dumps(unmarked).encode(), key)
