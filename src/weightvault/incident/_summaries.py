"""The lines of a timeline's structured-access job and release-gate / risk entries (what
:mod:`weightvault.incident.timeline` says about each)."""

from __future__ import annotations

from typing import Any

__all__ = ["gate_or_risk_summary", "job_summary", "whole"]


def whole(value: object) -> int | None:
    """``value`` if it is an integer (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def job_summary(
    action: str, outcome: str, detail: dict[str, Any], who: str, job_id: str, subject: str
) -> tuple[str, str, int | None]:
    """Kind, line and bytes of a structured-access job's entry (submit, decide, run, release)."""
    job = detail.get("job") if isinstance(detail.get("job"), dict) else {}
    assert isinstance(job, dict)
    kind_of_job = str(job.get("kind") or detail.get("kind") or "job")
    if action == "job.submit":
        return "job", f"{who} submitted {kind_of_job} job {job_id} on {subject}", None
    if action in ("job.approve", "job.deny"):
        verb = "approved" if action == "job.approve" else "denied"
        line = f"{who} {verb} job {job_id} on {subject} ({detail.get('status', '?')})"
        return ("job.approval" if action == "job.approve" else "job.denial"), line, None
    if action == "job.finished":
        line = (
            f"job {job_id} ({kind_of_job}) on {subject} ran: {detail.get('status', outcome)}, "
            f"{detail.get('seconds', '?')} s, {detail.get('output_bytes', 0)} output bytes"
        )
        return "job.ran", line, whole(detail.get("output_bytes"))
    if action == "job.release":
        released = whole(detail.get("released_bytes"))
        line = f"{who} received the result of job {job_id} on {subject}: {released} bytes"
        return "job.release", line, released
    return action, f"{who}: {action} on job {job_id} ({subject}, {outcome})", None


def gate_or_risk_summary(
    action: str, outcome: str, detail: dict[str, Any], who: str, subject: str
) -> str:
    """The line of a release-gate or risk-register entry: a gate decision names the digests of
    the attestations it relied on (and what it refused), so the timeline alone shows what
    every deploy or release rested on."""
    if action == "gate.decision":
        relied = [str(d) for d in detail.get("relied_on") or []]
        refusals = [str(r) for r in detail.get("refusals") or []]
        override = f" by break-glass waiver {detail['override']}" if detail.get("override") else ""
        line = (
            f"release gate {outcome}{override}: {detail.get('purpose')} of {subject} "
            f"({detail.get('stage')}, asked by {who}); relied on {', '.join(relied) or 'nothing'}"
        )
        return line + (f"; refused: {' | '.join(refusals)}" if refusals else "")
    if action == "gate.override":
        return (
            f"{who} overrode the release gate of {subject} for {detail.get('purpose')} by "
            f"break-glass ({detail.get('shares')} shares): {detail.get('reason')!r}"
        )
    if action == "gate.attach":
        attestation = detail.get("attestation")
        facts = attestation if isinstance(attestation, dict) else {}
        return f"{who} attached {facts.get('kind')} {facts.get('digest')} to {subject}"
    risk = detail.get("risk")
    if action.startswith("risk.") and isinstance(risk, dict):
        verb = {"risk.add": "added", "risk.update": "updated", "risk.close": "closed"}.get(
            action, action
        )
        line = (
            f"{who} {verb} risk {risk.get('id')} of {subject}: {risk.get('hazard')} "
            f"({risk.get('likelihood')}/{risk.get('severity')})"
        )
        if action == "risk.close":
            line += f": {risk.get('close_reason')!r}"
        return line
    return f"{who}: {action} on {subject} ({outcome})"
