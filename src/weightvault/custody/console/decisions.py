"""Passkey decisions: approving or denying a grant request or a structured-access job with a
fresh WebAuthn assertion whose challenge is the SHA-256 of a :class:`~.signatures.PasskeyStatement`.

The statement is built from the terms as the approver's page showed them (their digest comes
back with the question): if the terms changed since the page was loaded the digests differ and
nothing is asked; if they change between the question and the answer, the statement no longer
binds them and is refused. A decision is recorded by the room itself
(:meth:`~weightvault.custody.deciding.DecisionRoom.decide`), with this module's opener in place of
the Ed25519 one, so every rule of the two-person check applies, and logged as the same entries
(``request.approve``, ``job.deny``, ...) that ``audit verify`` checks offline.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any, Literal

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
from weightvault.custody.approvals import ApprovalStatement
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
from weightvault.custody.deciding import (
    DecisionRoom,
    EnvelopeOpener,
    check_approver,
    check_pending,
)
from weightvault.custody.errors import ConflictError, NotFoundError, found
from weightvault.custody.grants import Grants, terms_of
from weightvault.custody.jobs import Jobs, check_job_open, job_terms
from weightvault.custody.jobs_runner import root_digest_of
from weightvault.custody.models import load_model
from weightvault.custody.store import GrantRequest, Job, ModelVersion, Principal
from weightvault.errors import FormatError, PolicyError, VerificationError

__all__ = ["Decisions", "Queue"]

Queue = Literal["request", "job"]
"""What approvers decide with a passkey: grant requests and structured-access jobs."""


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

    def options(
        self,
        what: Queue,
        ctx: RequestContext,
        view: SessionView,
        item_id: str,
        decision: str,
        reason: str,
        shown_digest: str,
        rp: RelyingParty,
    ) -> str:
        """Assertion options whose challenge is the digest of this decision's statement, for
        the grant request or job ``item_id`` (``shown_digest``: the terms digest the page
        showed). The room's checks that need no signature come first (its own order)."""
        principal = require_role(ctx, "approver")
        _names.check_request_id(item_id, f"{what}_id")
        reason = _check_decision(decision, reason)
        with self._store.session(read_only=True) as session:
            item: GrantRequest | Job | None = (
                session.get(GrantRequest, item_id)
                if what == "request"
                else session.get(Job, item_id)
            )
            if item is None:
                raise NotFoundError(f"{what} not found")
            _model, policy = load_model(session, item.model)
            check_approver(principal.name, policy.approvers, item.model)
            if isinstance(item, Job):
                check_job_open(principal.name, item, self._clock())
                terms = job_terms(item)
            else:
                check_pending(principal.name, item.requester, item.status, "request")
                terms = terms_of(item)
            if shown_digest != terms.digest():
                raise ConflictError(
                    f"the {what} changed after this page was loaded; reload it and read it again"
                )
            version = found(
                session.get(ModelVersion, (item.model, item.version)),
                f"{terms.model}@{terms.version}",
            )
            credentials = self._console.credentials(session, principal.name)
            if not credentials:
                raise PolicyError(f"{principal.name!r} has no passkey")
            statement = statement_for(
                ApprovalStatement.for_request(
                    terms,
                    approver=principal.name,
                    decision=decision,
                    issued_at=self._clock(),
                    valid_for=dt.timedelta(seconds=policy.approval_validity_s),
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
                view, {"kind": f"decide-{what}", "id": item_id, "statement": b64.encode(payload)}
            )
            self._audit(ctx, "allowed", {f"{what}_id": item_id, "decision": decision})
            return options_to_json(options)

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

    def _opener(self, ctx: RequestContext, rp: RelyingParty) -> EnvelopeOpener:
        """The rooms' envelope opener for passkey envelopes answered on ``rp``; a denial's
        reason goes into the audit entry."""

        def opener(
            session: Session, approver: Principal, data: bytes
        ) -> tuple[ApprovalStatement, str]:
            statement, key_id, reason = self._open(session, approver, data, rp)
            if reason:
                ctx.detail["reason"] = reason
            return statement, key_id

        return opener

    def decide(
        self,
        what: Queue,
        ctx: RequestContext,
        view: SessionView,
        item_id: str,
        credential: str,
        rp: RelyingParty,
    ) -> dict[str, Any]:
        """Record the decision the passkey signed, through the room's own checks
        (:meth:`~weightvault.custody.deciding.DecisionRoom.decide`: a job starts with its last
        approval)."""
        require_role(ctx, "approver")
        _names.check_request_id(item_id, f"{what}_id")
        envelope = b64.encode(self._envelope(view, what, item_id, credential))
        room: DecisionRoom[Any, Any] = self._grants if what == "request" else self._jobs
        return room.decide(ctx, item_id, envelope, opener=self._opener(ctx, rp))
