"""Passkey decisions: approving or denying a grant request or a structured-access job with a
fresh WebAuthn assertion whose challenge is the SHA-256 of a :class:`~.signatures.PasskeyStatement`.

The statement is built from the terms as the approver's page showed them (their digest comes
back with the question): if the terms changed since the page was loaded the digests differ and
nothing is asked; if they change between the question and the answer, the statement no longer
binds them and is refused. A grant decision is recorded by :meth:`Grants.submit_approval` itself,
with this module's opener in place of the Ed25519 one, so every rule of the two-person check
applies. A job decision is recorded here, with the checks of :meth:`Jobs.decide` against
:func:`~weightvault.custody.jobs.job_terms` (the jobs room takes Ed25519 envelopes only), and
logged as ``job.approve``/``job.deny`` entries that ``audit verify`` checks offline the same way.
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from collections.abc import Collection
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from webauthn import generate_authentication_options, options_to_json
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    parse_authentication_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticationCredential,
    AuthenticatorAssertionResponse,
    PublicKeyCredentialDescriptor,
    UserVerificationRequirement,
)

from weightvault import _b64 as b64
from weightvault.custody import _names
from weightvault.custody.approvals import ApprovalStatement, RequestTerms
from weightvault.custody.console.room import (
    Console,
    RelyingParty,
    SessionView,
    credential_json,
    webauthn_failure,
)
from weightvault.custody.console.signatures import (
    PasskeyApproval,
    challenge_of,
    statement_for,
    verify_passkey_envelope,
)
from weightvault.custody.context import RequestContext, Room, Shared, require_role
from weightvault.custody.errors import ConflictError, NotFoundError
from weightvault.custody.grants import Grants, terms_of
from weightvault.custody.jobs import Jobs, job_terms
from weightvault.custody.jobs_runner import root_digest_of
from weightvault.custody.models import load_model
from weightvault.custody.store import GrantRequest, Job, JobApproval, ModelVersion, Principal
from weightvault.errors import FormatError, PolicyError, VerificationError

__all__ = ["Decisions"]


def _check_decision(decision: str, reason: str) -> str:
    """The decision's reason, stripped: a denial needs one, an approval takes none."""
    if decision not in ("approve", "deny"):
        raise FormatError("decision: expected approve or deny")
    reason = reason.strip()
    if decision == "deny":
        _names.check_justification(reason, "reason")
    elif reason:
        raise FormatError("reason: only a denial takes a reason")
    return reason


class Decisions(Room):
    """Passkey-signed decisions on grant requests and jobs."""

    def __init__(self, shared: Shared, console: Console, grants: Grants, jobs: Jobs) -> None:
        super().__init__(shared)
        self._console = console
        self._grants = grants
        self._jobs = jobs

    # -- the question --------------------------------------------------------------------------

    def _ask(
        self,
        session: Session,
        ctx: RequestContext,
        view: SessionView,
        *,
        what: str,
        terms: RequestTerms,
        shown_digest: str,
        version: ModelVersion | None,
        validity_s: int,
        decision: str,
        reason: str,
        rp: RelyingParty,
    ) -> str:
        """Assertion options whose challenge is the digest of this decision's statement."""
        principal = require_role(ctx, "approver")
        if shown_digest != terms.digest():
            raise ConflictError(
                f"the {what} changed after this page was loaded; reload it and read it again"
            )
        if version is None:
            raise NotFoundError(f"{terms.model}@{terms.version} not found")
        credentials = self._console.credentials(session, principal.name)
        if not credentials:
            raise PolicyError(f"{principal.name!r} has no passkey")
        statement = statement_for(
            ApprovalStatement.for_request(
                terms,
                approver=principal.name,
                decision=decision,
                issued_at=self._clock(),
                valid_for=dt.timedelta(seconds=validity_s),
            ),
            version_digest=root_digest_of(version.signature),
            reason=reason,
            nonce=secrets.token_hex(16),
            origin=rp.origin,
            rp_id=rp.rp_id,
        )
        payload = statement.to_json()
        options = generate_authentication_options(
            rp_id=rp.rp_id,
            challenge=challenge_of(payload),
            allow_credentials=[
                PublicKeyCredentialDescriptor(id=base64url_to_bytes(c.credential_id))
                for c in credentials
            ],
            user_verification=UserVerificationRequirement.REQUIRED,
        )
        self._console.put_ceremony(
            view,
            {"kind": f"decide-{what}", "id": terms.request_id, "statement": b64.encode(payload)},
        )
        self._audit(ctx, "allowed", {f"{what}_id": terms.request_id, "decision": decision})
        return options_to_json(options)

    def request_options(
        self,
        ctx: RequestContext,
        view: SessionView,
        request_id: str,
        decision: str,
        reason: str,
        shown_digest: str,
        rp: RelyingParty,
    ) -> str:
        """The question for a grant request (``shown_digest``: the terms digest the page showed)."""
        principal = require_role(ctx, "approver")
        _names.check_request_id(request_id)
        reason = _check_decision(decision, reason)
        with self._store.session(read_only=True) as session:
            grant = session.get(GrantRequest, request_id)
            if grant is None:
                raise NotFoundError("request not found")
            _model, policy = load_model(session, grant.model)
            if principal.name not in policy.approvers:
                raise PolicyError(f"{principal.name!r} is not an approver for {grant.model!r}")
            if grant.requester == principal.name:
                raise PolicyError("self-approval: the requester cannot approve their own request")
            if grant.status != "pending":
                raise ConflictError(f"request is {grant.status}, not pending")
            return self._ask(
                session, ctx, view,
                what="request",
                terms=terms_of(grant),
                shown_digest=shown_digest,
                version=session.get(ModelVersion, (grant.model, grant.version)),
                validity_s=policy.approval_validity_s,
                decision=decision, reason=reason, rp=rp,
            )  # fmt: skip

    def job_options(
        self,
        ctx: RequestContext,
        view: SessionView,
        job_id: str,
        decision: str,
        reason: str,
        shown_digest: str,
        rp: RelyingParty,
    ) -> str:
        """The question for a job (``shown_digest``: the job's terms digest the page showed)."""
        principal = require_role(ctx, "approver")
        _names.check_request_id(job_id, "job_id")
        reason = _check_decision(decision, reason)
        with self._store.session(read_only=True) as session:
            job = session.get(Job, job_id)
            if job is None:
                raise NotFoundError("job not found")
            _model, policy = load_model(session, job.model)
            self._check_job(principal, job, policy.approvers, self._clock())
            return self._ask(
                session, ctx, view,
                what="job",
                terms=job_terms(job),
                shown_digest=shown_digest,
                version=session.get(ModelVersion, (job.model, job.version)),
                validity_s=policy.approval_validity_s,
                decision=decision, reason=reason, rp=rp,
            )  # fmt: skip

    # -- the answer ----------------------------------------------------------------------------

    def _envelope(self, view: SessionView, what: str, item_id: str, credential: str) -> bytes:
        """The passkey's answer wrapped with the statement it signs."""
        try:
            parsed = parse_authentication_credential_json(credential_json(credential))
        except WebAuthnException as exc:
            raise webauthn_failure(exc) from exc
        with self._store.session() as session:
            ceremony = self._console.take_ceremony(session, view, f"decide-{what}")
        if ceremony.get("id") != item_id:
            raise ConflictError(f"the passkey answered for another {what}; reload the page")
        envelope = PasskeyApproval(
            statement_bytes=b64.decode(ceremony["statement"], "statement"),
            credential_id=parsed.raw_id,
            authenticator_data=parsed.response.authenticator_data,
            client_data_json=parsed.response.client_data_json,
            signature=parsed.response.signature,
        ).to_json()
        return envelope

    def _open(
        self, session: Session, approver: Principal, data: bytes, rp: RelyingParty
    ) -> tuple[ApprovalStatement, str, str]:
        """Check a passkey envelope (the assertion with the stored credential, its sign count
        advanced; the statement with the credential's key): (statement, key id, reason)."""
        approval = PasskeyApproval.from_json(data)
        assertion = AuthenticationCredential(
            id=bytes_to_base64url(approval.credential_id),
            raw_id=approval.credential_id,
            response=AuthenticatorAssertionResponse(
                client_data_json=approval.client_data_json,
                authenticator_data=approval.authenticator_data,
                signature=approval.signature,
            ),
        )
        stored = self._console.verify_assertion(
            session, assertion, challenge_of(approval.statement_bytes), rp
        )
        if stored.principal != approver.name:
            raise VerificationError("the passkey belongs to someone else")
        statement, _ = verify_passkey_envelope(data, stored.public_key, stored.algorithm)
        if statement.origin != rp.origin or statement.rp_id != rp.rp_id:
            raise VerificationError("the statement names another console")
        return statement.approval, stored.key_id, statement.reason

    def decide_request(
        self,
        ctx: RequestContext,
        view: SessionView,
        request_id: str,
        credential: str,
        rp: RelyingParty,
    ) -> dict[str, Any]:
        """Record the decision the passkey signed, through the grants room's own checks."""
        require_role(ctx, "approver")
        _names.check_request_id(request_id)
        envelope = self._envelope(view, "request", request_id, credential)

        def opener(
            session: Session, approver: Principal, data: bytes
        ) -> tuple[ApprovalStatement, str]:
            statement, key_id, reason = self._open(session, approver, data, rp)
            if reason:
                ctx.detail["reason"] = reason
            return statement, key_id

        return self._grants.submit_approval(ctx, request_id, b64.encode(envelope), opener=opener)

    @staticmethod
    def _check_job(
        principal: Principal, job: Job, approvers: Collection[str], now: dt.datetime
    ) -> None:
        """Checks (1)-(3) of :meth:`Jobs.decide`: a named approver, not the requester, a job
        pending and not expired."""
        if principal.name not in approvers:
            raise PolicyError(f"{principal.name!r} is not an approver for {job.model!r}")
        if job.requester == principal.name:
            raise PolicyError("self-approval: the requester cannot approve their own job")
        if job.status != "pending":
            raise ConflictError(f"job is {job.status}, not pending")
        if job.expires_at <= now:
            raise PolicyError("job request has expired; submit it again")

    def decide_job(
        self,
        ctx: RequestContext,
        view: SessionView,
        job_id: str,
        credential: str,
        rp: RelyingParty,
    ) -> dict[str, Any]:
        """Record a passkey-signed approval or denial of a job; start it with its last approval.

        Checks, in order, as :meth:`Jobs.decide` does for Ed25519 envelopes: (1) a named
        approver, not the requester, the job pending and unexpired; (2) the assertion verifies
        with the approver's own registered passkey, over a statement for this console; (3) the
        statement binds exactly this job's terms, is current and not valid longer than the
        policy allows; (4) no earlier decision by this principal or this key.
        """
        principal = require_role(ctx, "approver")
        _names.check_request_id(job_id, "job_id")
        envelope = self._envelope(view, "job", job_id, credential)
        now = self._clock()
        start = False
        with self._store.session() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None:
                raise NotFoundError("job not found")
            _model, policy = load_model(session, job.model)
            # (1)
            self._check_job(principal, job, policy.approvers, now)
            approver = session.get(Principal, principal.name)
            assert approver is not None
            # (2)
            statement, key_id, reason = self._open(session, approver, envelope, rp)
            # (3)
            statement.check_acceptable(
                principal.name, job_terms(job), now, policy.approval_validity_s
            )
            # (4)
            approvals = list(
                session.scalars(select(JobApproval).where(JobApproval.job_id == job_id))
            )
            if any(a.approver == principal.name or a.key_id == key_id for a in approvals):
                raise ConflictError("this approver (or this key) has already decided this job")
            valid = [a for a in approvals if a.decision == "approve" and a.expires_at > now]
            if policy.access is not None:  # a policy tightened meanwhile applies (never loosened)
                job.approvals_required = max(
                    job.approvals_required, policy.access.approvals[job.kind]
                )
            if statement.decision == "deny":
                job.status = "denied"
            elif len(valid) + 1 >= job.approvals_required:
                job.status = "approved"
                start = True
            record: dict[str, Any] = {
                "job_id": job_id,
                "model": job.model,
                "version": job.version,
                "requester": job.requester,
                "request_digest": job.request_digest,
                "decision": statement.decision,
                "key_id": key_id,
                "envelope": base64.b64encode(envelope).decode("ascii"),
                "status": job.status,
            }
            if reason:
                record["reason"] = reason
            ctx.action = "job.deny" if statement.decision == "deny" else "job.approve"
            index, entry = self._audit(ctx, "allowed", record)
            session.add(
                JobApproval(
                    job_id=job_id,
                    approver=principal.name,
                    key_id=key_id,
                    decision=statement.decision,
                    envelope=envelope,
                    expires_at=statement.expires_at,
                    created_at=now,
                    log_index=index,
                    log_entry=entry,
                )
            )
            try:
                session.flush()
            except IntegrityError as exc:
                raise ConflictError("this approver has already decided this job") from exc
            status = job.status
        if start:
            self._jobs.runner.start(job_id)
        return {"id": job_id, "status": status}
