"""The grants room: requests for access, signed approvals and denials, revocation, and the one
authorization function every release of bytes goes through.

A reader asks for one model version, for a duration and a byte budget, with a justification; M
distinct approvers named in the model's policy (never the requester) each sign a statement that
binds exactly these terms; with the M-th approval the request becomes an active grant until it
expires or is revoked. :func:`authorize_grant_use` decides, from the grant's and the caller's
state, whether bytes may flow: at the start of a pull, before each budget debit, and between the
pieces of a stream.
"""

from __future__ import annotations

import datetime as dt
import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, object_session

from weightvault.custody import _names, deciding
from weightvault.custody.alerts import AlertEvent, AlertSink
from weightvault.custody.approvals import AccessRequest, RequestTerms, format_time
from weightvault.custody.context import ROLES, RequestContext, require_role
from weightvault.custody.deciding import Decision, DecisionRoom, EnvelopeOpener
from weightvault.custody.errors import AuthenticationError, ConflictError, NotFoundError, found
from weightvault.custody.models import load_model
from weightvault.custody.policy import ModelPolicy
from weightvault.custody.store import (
    Approval,
    GrantRequest,
    ModelVersion,
    Principal,
    WebAuthnCredential,
)
from weightvault.errors import FormatError, PolicyError

__all__ = [
    "REQUEST_STATUSES",
    "EnvelopeOpener",
    "GrantUse",
    "Grants",
    "active_grant",
    "authorize_grant_use",
    "effective_status",
    "terms_of",
]


REQUEST_STATUSES = ("pending", "active", "denied", "revoked")
"""The statuses requests are listed by (expiry is computed, see :func:`effective_status`)."""


@dataclass(frozen=True)
class GrantUse:
    """What decides whether a grant may release bytes now, however it was read."""

    status: str | None
    """The grant's status; None when there is no such grant for this caller."""
    expires_at: dt.datetime | None
    token_valid: bool = True
    """The caller's token is not revoked (checked again while a transfer runs)."""
    principal_enabled: bool = True
    """The caller's principal is not disabled (checked again while a transfer runs)."""


def authorize_grant_use(use: GrantUse, now: dt.datetime, *, in_flight: bool) -> None:
    """The one grant check: raise unless ``use`` allows bytes to flow at ``now``.

    ``in_flight``: a transfer already started (the grant was found active before), so a grant
    that is gone or no longer active was revoked under it.
    """
    if use.status is None and not in_flight:
        raise NotFoundError("grant not found")
    if use.status != "active":
        raise PolicyError(
            "grant was revoked" if in_flight else f"grant is {use.status}, not active"
        )
    if use.expires_at is None or use.expires_at <= now:
        raise PolicyError("grant has expired")
    if not use.token_valid:
        raise AuthenticationError("token was revoked during the transfer")
    if not use.principal_enabled:
        raise AuthenticationError("principal was disabled during the transfer")


def active_grant(
    session: Session, ctx: RequestContext, grant_id: str, now: dt.datetime
) -> GrantRequest:
    """The caller's grant ``grant_id``, if it is active now (a reader's own grants only)."""
    principal = require_role(ctx, "reader")
    _names.check_request_id(grant_id, "grant_id")
    grant = session.get(GrantRequest, grant_id)
    mine = grant is not None and grant.requester == principal.name
    authorize_grant_use(
        GrantUse(
            status=grant.status if grant is not None and mine else None,
            expires_at=grant.grant_expires_at if grant is not None else None,
        ),
        now,
        in_flight=False,
    )
    assert grant is not None
    return grant


def effective_status(grant: GrantRequest, now: dt.datetime) -> str:
    """The stored status, or ``expired`` for an active grant or a pending request past its time
    (expiry is computed, not stored)."""
    status = grant.status
    if status == "active" and grant.grant_expires_at and grant.grant_expires_at <= now:
        return "expired"
    if status == "pending" and grant.request_expires_at <= now:
        return "expired"
    return status


def terms_of(grant: GrantRequest) -> RequestTerms:
    """The terms an approval of ``grant`` must bind."""
    return RequestTerms.of_row(grant, grant.justification, grant.duration_s, grant.byte_budget)


def _sees(principal: Principal, grant: GrantRequest, policy: ModelPolicy) -> bool:
    """Who may read a request: its requester, admins, auditors and the model's approvers."""
    return bool(
        grant.requester == principal.name
        or principal.role_set & {"admin", "auditor"}
        or principal.name in policy.approvers
    )


def _still_approver(session: Session, policy: ModelPolicy, approval: Approval) -> bool:
    """Whether an earlier approval still counts towards M (its approver is still eligible)."""
    if approval.approver not in policy.approvers:
        return False
    who = session.get(Principal, approval.approver)
    return (
        who is not None
        and not who.disabled
        and "approver" in who.role_set
        and (
            who.approval_key_id == approval.key_id
            or _passkey_is_current(session, who.name, approval.key_id)
        )
    )


def _passkey_is_current(session: Session, name: str, key_id: str) -> bool:
    """Whether ``key_id`` names a passkey of ``name`` that is not revoked."""
    credential = session.get(WebAuthnCredential, key_id)
    return credential is not None and credential.principal == name and not credential.revoked_at


class Grants(DecisionRoom[GrantRequest, Approval]):
    """Requests, approvals, denials and revocation."""

    what = "request"

    on_pending: Callable[[dict[str, Any]], None] | None = None
    """Told of each new request once it is committed (the console notifies approvers)."""
    alerts: AlertSink | None = None
    """Where incident signals go (the same pair approving again and again); set by the service."""
    gate: Callable[[Session, RequestContext, GrantRequest, str, str], None] | None = None
    """The release gate of deploy/release requests (:meth:`.gates.Gates.gate_request`): called
    with the purpose when a request is filed and again before the approval that activates it;
    raises to refuse. Set by the service."""
    fingerprint_id: Callable[[Session, GrantRequest], str | None] | None = None
    """The public id of the mark a grant's copies carry (None without a ``fingerprint``
    policy), logged with the approval that activates the grant, so the log ties a leaked copy's
    mark to the grant before any byte leaves (:meth:`.fingerprints.Fingerprinter.grant_mark`).
    Set by the service."""
    gate_view: Callable[[Session, str], dict[str, Any]] | None = None
    """A request's purpose and gate findings, shown beside it
    (:meth:`.gates.Gates.request_view`)."""

    def _view(self, grant: GrantRequest, approvals: list[Approval]) -> dict[str, Any]:
        status = effective_status(grant, self._clock())
        view: dict[str, Any] = {
            "id": grant.id,
            "model": grant.model,
            "version": grant.version,
            "requester": grant.requester,
            "justification": grant.justification,
            "duration_s": grant.duration_s,
            "byte_budget": grant.byte_budget,
            "bytes_used": grant.bytes_used,
            "status": status,
            "approvals_required": grant.approvals_required,
            "approvals": [
                {"approver": a.approver, "decision": a.decision, "log_index": a.log_index}
                for a in approvals
            ],
            "created_at": format_time(grant.created_at),
            "expires_at": format_time(grant.grant_expires_at) if grant.grant_expires_at else None,
            "request_digest": terms_of(grant).digest(),
        }
        session = object_session(grant)
        if self.gate_view is not None and session is not None:
            view.update(self.gate_view(session, grant.id))
        return view

    def create_request(self, ctx: RequestContext, asked: AccessRequest) -> dict[str, Any]:
        principal = require_role(ctx, "reader")
        _names.check_model_name(asked.model)
        _names.check_version_name(asked.version)
        # A refusal's entry names them too.
        ctx.detail.update(model=asked.model, version=asked.version)
        _names.check_justification(asked.justification)
        _names.check_duration(asked.duration_s)
        _names.check_byte_count(asked.byte_budget, "byte_budget")
        if principal.recipient is None:
            raise PolicyError(
                f"principal {principal.name!r} has no X25519 recipient to encrypt pulls to",
                hint="ask an admin to set one",
            )
        now = self._clock()
        with self._store.session() as session:
            _model, policy = load_model(session, asked.model)
            if session.get(ModelVersion, (asked.model, asked.version)) is None:
                raise NotFoundError(f"{asked.model}@{asked.version} not found")
            longest = min(policy.max_grant_duration_s, self._config.max_grant_duration_s)
            if asked.duration_s > longest:
                raise PolicyError(
                    f"duration_s: the policy allows at most {policy.max_grant_duration_s} s"
                )
            if asked.byte_budget > policy.max_grant_bytes:
                raise PolicyError(
                    f"byte_budget: the policy allows at most {policy.max_grant_bytes} bytes"
                )
            grant = GrantRequest(
                id=secrets.token_hex(16),
                requester=principal.name,
                **asked.terms(),
                created_at=now,
                request_expires_at=now + dt.timedelta(seconds=policy.request_ttl_s),
                status="pending",
                approvals_required=policy.approvals_required,
                bytes_used=0,
            )
            session.add(grant)
            session.flush()
            if asked.purpose != "pull" or self.gate is not None:
                ctx.detail.update(purpose=asked.purpose)
                if self.gate is None:
                    raise PolicyError(
                        f"purpose {asked.purpose!r}: this service has no release gate"
                    )
                self.gate(session, ctx, grant, asked.purpose, "request")
            view = self._view(grant, [])
            self._audit(ctx, "allowed", {"request": view})
        if self.on_pending is not None:
            self.on_pending(view)
        return view

    def get_request(self, ctx: RequestContext, request_id: str) -> dict[str, Any]:
        principal = require_role(ctx, *ROLES)
        _names.check_request_id(request_id)
        with self._store.session() as session:
            grant = found(session.get(GrantRequest, request_id), "request")
            _model, policy = load_model(session, grant.model)
            if not _sees(principal, grant, policy):
                raise NotFoundError("request not found")
            view = self._view(grant, self._approvals(session, request_id))
            self._audit(ctx, "allowed", {"request_id": request_id})
        return view

    def list_requests(self, ctx: RequestContext, status: str | None) -> list[dict[str, Any]]:
        principal = require_role(ctx, *ROLES)
        if status is not None and status not in REQUEST_STATUSES:
            raise FormatError("status: expected pending, active, denied or revoked")
        out = []
        with self._store.session() as session:
            query = select(GrantRequest).order_by(GrantRequest.created_at)
            if status:
                query = query.where(GrantRequest.status == status)
            for grant in session.scalars(query.limit(1000)):
                if grant.requester != principal.name and not principal.role_set & {
                    "admin",
                    "auditor",
                }:
                    _model, policy = load_model(session, grant.model)
                    if not _sees(principal, grant, policy):
                        continue
                out.append(self._view(grant, self._approvals(session, grant.id)))
            self._audit(ctx, "allowed", {"count": len(out)})
        return out

    # -- decisions (the steps: :meth:`.deciding.DecisionRoom.decide`) ----------------------------

    def _locked(self, session: Session, item_id: str) -> GrantRequest | None:
        return session.get(GrantRequest, item_id, with_for_update=True)

    def _check_open(self, name: str, grant: GrantRequest, now: dt.datetime) -> None:
        deciding.check_pending(name, grant.requester, grant.status, "request")
        if grant.request_expires_at <= now:
            raise PolicyError("request has expired; file a new one")

    def _terms(self, grant: GrantRequest) -> RequestTerms:
        return terms_of(grant)

    def _approvals(self, session: Session, item_id: str) -> list[Approval]:
        return list(session.scalars(select(Approval).where(Approval.request_id == item_id)))

    def _apply(
        self,
        session: Session,
        ctx: RequestContext,
        grant: GrantRequest,
        decision: Decision,
        approvals: list[Approval],
    ) -> dict[str, Any]:
        """An approval that makes M activates the grant (the release gate is asked again)."""
        policy, now = decision.policy, decision.now
        # Only approvals from principals who are still eligible count: named in the current
        # policy, holding the approver role, not disabled, and signed with their current key.
        valid = [
            a
            for a in approvals
            if a.decision == "approve"
            and a.expires_at > now
            and _still_approver(session, policy, a)
        ]
        record: dict[str, Any] = {
            "request_id": grant.id,
            "model": grant.model,
            "version": grant.version,
            "grantee": grant.requester,
            **decision.record(),
        }
        # A policy tightened while the request was pending applies to it (never loosened).
        grant.approvals_required = max(grant.approvals_required, policy.approvals_required)
        if decision.statement.decision == "deny":
            grant.status = "denied"
            record["status"] = "denied"
        elif len(valid) + 1 >= grant.approvals_required:
            if self.gate is not None:  # attestations may have expired since the request
                self.gate(session, ctx, grant, "", "activation")
            grant.status = "active"
            grant.activated_at = now
            grant.grant_expires_at = now + dt.timedelta(seconds=grant.duration_s)
            record["status"] = "active"
            record["grant_expires_at"] = format_time(grant.grant_expires_at)
            mark = self.fingerprint_id(session, grant) if self.fingerprint_id else None
            if mark is not None:
                record["fingerprint_id"] = mark
        else:
            record["status"] = "pending"
        approval = decision.file(session, ctx, self._audit, record, Approval, request_id=grant.id)
        if record["status"] == "active":
            released_by = {a.approver for a in valid} | {decision.approver}
            self._same_pair_signal(session, grant, sorted(released_by), now)
        return self._view(grant, [*approvals, approval])

    def _same_pair_signal(
        self, session: Session, grant: GrantRequest, approvers: list[str], now: dt.datetime
    ) -> None:
        """Alert each time two approvers have together released ``same_pair_approvals`` more
        grants of this model within the window (collusion or rubber-stamping looks like this)."""
        every = self._config.same_pair_approvals
        if self.alerts is None or every < 1:
            return
        since = now - dt.timedelta(seconds=self._config.same_pair_window_s)
        for first, second in itertools.combinations(approvers, 2):
            together = (
                select(Approval.request_id)
                .join(GrantRequest, GrantRequest.id == Approval.request_id)
                .where(
                    Approval.approver.in_((first, second)),
                    Approval.decision == "approve",
                    GrantRequest.model == grant.model,
                    GrantRequest.activated_at > since,
                )
                .group_by(Approval.request_id)
                .having(func.count(func.distinct(Approval.approver)) == 2)
                .subquery()
            )
            count = session.scalar(select(func.count()).select_from(together)) or 0
            if count and count % every == 0:
                self.alerts.emit(
                    session,
                    AlertEvent(
                        "approvals.same_pair",
                        now,
                        principal=grant.requester,
                        model=grant.model,
                        detail={
                            "approvers": [first, second],
                            "grants": count,
                            "window_s": self._config.same_pair_window_s,
                            "grant_id": grant.id,
                        },
                    ),
                )

    def revoke(self, ctx: RequestContext, request_id: str) -> dict[str, Any]:
        principal = require_role(ctx, *ROLES)
        _names.check_request_id(request_id)
        with self._store.session() as session:
            grant = found(session.get(GrantRequest, request_id, with_for_update=True), "request")
            model, policy = load_model(session, grant.model)
            allowed = (
                "admin" in principal.role_set
                or model.owner == principal.name
                or grant.requester == principal.name
                # it takes M approvers to grant and one to stop
                or ("approver" in principal.role_set and principal.name in policy.approvers)
            )
            if not allowed:
                raise PolicyError(
                    "only an admin, the model's owner, its approvers or the grantee may revoke"
                )
            if grant.status in ("revoked", "denied"):
                raise ConflictError(f"request is {grant.status} already")
            grant.status = "revoked"
            grant.revoked_at = self._clock()
            grant.revoked_by = principal.name
            self._audit(ctx, "allowed", {"request_id": request_id, "model": grant.model})
            return self._view(grant, self._approvals(session, request_id))
