"""What the console's pages show, read from the database and the audit log.

Each page sees what its principal may see: admins and auditors everything; an approver the
requests, grants, alerts and audit entries of the models whose policy names them; anyone their
own requests. The figures an approver needs to judge a request are computed here: the version's
size, the share of it the budget covers, how long a whole copy takes to leave at the egress rate
the service allows, the requester's history, and the other approvers' decisions.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from weightvault.custody.alerts import alert_view
from weightvault.custody.approvals import format_time
from weightvault.custody.audit import VOID_ACTION, AuditTrail
from weightvault.custody.context import ROLES, RequestContext, Room, Shared, require_role
from weightvault.custody.errors import NotFoundError
from weightvault.custody.gates import Gates
from weightvault.custody.grants import effective_status, terms_of
from weightvault.custody.jobs_runner import root_digest_of
from weightvault.custody.models import load_model
from weightvault.custody.policy import ModelPolicy
from weightvault.custody.store import (
    Alert,
    Approval,
    GrantRequest,
    Model,
    ModelVersion,
    Principal,
    WebAuthnCredential,
)

__all__ = ["Pages", "duration_text", "may_decide", "signed_with", "size_text"]


def may_decide(principal: Principal, item: dict[str, Any]) -> bool:
    """Whether the page of a request or job (``item``: its approvers, status, approvals and
    ``mine``) offers ``principal`` the passkey buttons; the room checks again on the answer."""
    return bool(
        "approver" in principal.role_set
        and principal.name in item["approvers"]
        and not item["mine"]
        and item["status"] == "pending"
        and not any(a["approver"] == principal.name for a in item["approvals"])
    )


def signed_with(session: Session, key_id: str) -> str:
    """What kind of key signed a decision: a registered passkey, else an Ed25519 key."""
    return "passkey" if session.get(WebAuthnCredential, key_id) is not None else "Ed25519 key"


def size_text(nbytes: float) -> str:
    """Bytes in binary units, three significant figures (``1.00 MiB``)."""
    value = float(nbytes)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.3g} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def duration_text(seconds: float) -> str:
    """A duration the way people say it (``0.1 s``, ``12 min``, ``3.5 h``, ``2.0 days``)."""
    if seconds < 60:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _number(value: object) -> str:
    """A metric as people read it (``0.05``, ``12``), whatever the attestation held."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f"{value:g}"
    return str(value)


def _gate(session: Session, request_id: str) -> dict[str, Any]:
    """The request's purpose and, for a deploy or release, the release gate's decision as it
    was recorded (:meth:`Gates.request_view`), with metrics and dates ready to show."""
    view = Gates.request_view(session, request_id)
    gate = view.get("gate")
    if gate is None:
        return {"purpose": view["purpose"], "gate": None}
    findings = []
    for finding in gate.get("findings", []):
        metrics = finding.get("metrics") or {}
        findings.append(
            {
                **finding,
                "metrics_text": ", ".join(f"{k} {_number(v)}" for k, v in sorted(metrics.items())),
            }
        )
    return {"purpose": view["purpose"], "gate": {**gate, "findings": findings}}


@dataclass(frozen=True)
class _Scope:
    """What one principal may see."""

    name: str
    sees_all: bool
    models: frozenset[str]
    """Models whose policy names this principal as an approver (or that it owns)."""


class Pages(Room):
    """Read-only views for the console's pages."""

    def __init__(self, shared: Shared, trail: AuditTrail) -> None:
        super().__init__(shared)
        self._trail = trail

    def _scope(self, session: Session, principal: Principal) -> _Scope:
        models = set()
        for model in session.scalars(select(Model)):
            policy = ModelPolicy.from_json(model.policy_json)
            if principal.name in policy.approvers or model.owner == principal.name:
                models.add(model.name)
        return _Scope(
            principal.name, bool(principal.role_set & {"admin", "auditor"}), frozenset(models)
        )

    def _sees(self, scope: _Scope, grant: GrantRequest) -> bool:
        return scope.sees_all or grant.model in scope.models or grant.requester == scope.name

    def _rate(self, policy: ModelPolicy) -> float:
        """Bytes per second a grantee can take out at most: model and principal windows."""
        window = self._config.window_s
        return (
            min(policy.egress_bytes_per_window, self._config.principal_egress_bytes_per_window)
            / window
        )

    def _history(self, session: Session, requester: str, exclude: str) -> dict[str, Any]:
        rows = session.scalars(
            select(GrantRequest)
            .where(GrantRequest.requester == requester, GrantRequest.id != exclude)
            .order_by(GrantRequest.created_at.desc())
        ).all()
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        return {
            "total": len(rows),
            "counts": counts,
            "bytes_pulled": size_text(sum(r.bytes_used for r in rows)),
            "recent": [
                {
                    "id": r.id,
                    "what": f"{r.model}@{r.version}",
                    "status": r.status,
                    "created_at": format_time(r.created_at),
                    "justification": r.justification,
                }
                for r in rows[:5]
            ],
        }

    def _summary(self, session: Session, grant: GrantRequest, now: dt.datetime) -> dict[str, Any]:
        _model, policy = load_model(session, grant.model)
        version = session.get(ModelVersion, (grant.model, grant.version))
        size = version.size if version is not None else 0
        rate = self._rate(policy)
        budget_share = grant.byte_budget / size if size else 0.0
        approvals = session.scalars(
            select(Approval).where(Approval.request_id == grant.id).order_by(Approval.id)
        ).all()
        status = effective_status(grant, now)
        whole_copy = budget_share >= 1.0
        return {
            "id": grant.id,
            "model": grant.model,
            "version": grant.version,
            "requester": grant.requester,
            "justification": grant.justification,
            "status": status,
            "size": size_text(size),
            "budget": size_text(grant.byte_budget),
            "budget_bytes": grant.byte_budget,
            "bytes_used": size_text(grant.bytes_used),
            "duration": duration_text(grant.duration_s),
            "budget_share": f"{min(budget_share, 999.0):.0%}",
            "whole_copy": whole_copy,
            "time_to_exfiltrate": duration_text(size / rate) if rate else "never",
            "time_to_spend_budget": duration_text(grant.byte_budget / rate) if rate else "never",
            "created_at": format_time(grant.created_at),
            "request_expires_at": format_time(grant.request_expires_at),
            "grant_expires_at": (
                format_time(grant.grant_expires_at) if grant.grant_expires_at else None
            ),
            "approvals_required": max(grant.approvals_required, policy.approvals_required),
            "approvals": [
                {
                    "approver": a.approver,
                    "decision": a.decision,
                    "at": format_time(a.created_at),
                    "log_index": a.log_index,
                    "kind": signed_with(session, a.key_id),
                }
                for a in approvals
            ],
            "approved": sum(1 for a in approvals if a.decision == "approve"),
            "approvers": list(policy.approvers),
            "digest": terms_of(grant).digest(),
            "version_digest": root_digest_of(version.signature) if version is not None else "",
            **_gate(session, grant.id),
        }

    def requests(self, ctx: RequestContext, status: str) -> list[dict[str, Any]]:
        """Requests with ``status`` this principal may see, newest first, with history."""
        principal = require_role(ctx, *ROLES)
        now = self._clock()
        out = []
        with self._store.session(read_only=True) as session:
            scope = self._scope(session, principal)
            query = (
                select(GrantRequest)
                .where(GrantRequest.status == status)
                .order_by(GrantRequest.created_at.desc())
                .limit(200)
            )
            for grant in session.scalars(query):
                if not self._sees(scope, grant):
                    continue
                summary = self._summary(session, grant, now)
                if summary["status"] != status:
                    continue
                summary["history"] = self._history(session, grant.requester, grant.id)
                summary["mine"] = grant.requester == principal.name
                summary["decided"] = any(
                    a["approver"] == principal.name for a in summary["approvals"]
                )
                out.append(summary)
        self._audit(ctx, "allowed", {"count": len(out)})
        return out

    def request(self, ctx: RequestContext, request_id: str) -> dict[str, Any]:
        principal = require_role(ctx, *ROLES)
        now = self._clock()
        with self._store.session(read_only=True) as session:
            grant = session.get(GrantRequest, request_id)
            scope = self._scope(session, principal)
            if grant is None or not self._sees(scope, grant):
                raise NotFoundError("request not found")
            summary = self._summary(session, grant, now)
            summary["history"] = self._history(session, grant.requester, grant.id)
            summary["mine"] = grant.requester == principal.name
            summary["may_decide"] = may_decide(principal, summary)
        self._audit(ctx, "allowed", {"request_id": request_id})
        return summary

    def grants(self, ctx: RequestContext) -> list[dict[str, Any]]:
        """Active grants this principal may see, each saying whether it may revoke it."""
        principal = require_role(ctx, *ROLES)
        now = self._clock()
        out = []
        with self._store.session(read_only=True) as session:
            scope = self._scope(session, principal)
            for grant in session.scalars(
                select(GrantRequest)
                .where(GrantRequest.status == "active")
                .order_by(GrantRequest.activated_at.desc())
            ):
                if not self._sees(scope, grant):
                    continue
                summary = self._summary(session, grant, now)
                if summary["status"] != "active":
                    continue
                summary["may_revoke"] = (
                    "admin" in principal.role_set
                    or grant.model in scope.models
                    or grant.requester == principal.name
                )
                out.append(summary)
        self._audit(ctx, "allowed", {"count": len(out)})
        return out

    def alerts(self, ctx: RequestContext) -> list[dict[str, Any]]:
        principal = require_role(ctx, *ROLES)
        with self._store.session(read_only=True) as session:
            scope = self._scope(session, principal)
            rows = session.scalars(select(Alert).order_by(Alert.id.desc()).limit(200)).all()
            out = [
                alert_view(a)
                for a in rows
                if scope.sees_all or (a.model in scope.models) or a.principal == principal.name
            ]
        self._audit(ctx, "allowed", {"count": len(out)})
        return out

    def timeline(self, ctx: RequestContext, count: int = 200) -> dict[str, Any]:
        """The latest audit entries this principal may see, each with its proof status."""
        principal = require_role(ctx, *ROLES)
        checkpoint_size, entries = self._trail.recent(count)
        with self._store.session(read_only=True) as session:
            scope = self._scope(session, principal)
            visible = {g.id for g in session.scalars(select(GrantRequest)) if self._sees(scope, g)}
        rows = []
        events = [(index, json.loads(entry), proven) for index, entry, proven in entries]
        voided = {  # within the window: an entry whose commit was in doubt, its request refused
            e["detail"].get("index")
            for _i, e, _p in events
            if e.get("action") == VOID_ACTION and isinstance(e.get("detail"), dict)
        }
        for index, event, proven in events:
            detail = event.get("detail") if isinstance(event.get("detail"), dict) else {}
            request_id = detail.get("request_id") or (detail.get("request") or {}).get("id")
            if not (
                scope.sees_all or event.get("principal") == principal.name or request_id in visible
            ):
                continue
            rows.append(
                {
                    "index": index,
                    "time": event.get("time", ""),
                    "action": event.get("action", ""),
                    "principal": event.get("principal") or "-",
                    "outcome": "voided" if index in voided else event.get("outcome", ""),
                    "request_id": request_id if request_id in visible else None,
                    "proven": proven,
                }
            )
        self._audit(ctx, "allowed", {"count": len(rows)})
        return {"checkpoint_size": checkpoint_size, "entries": rows}
