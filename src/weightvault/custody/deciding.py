"""What every signed decision shares, on a grant request (:mod:`.grants`) or on a job
(:mod:`.jobs`), signed with an Ed25519 approval key or a console passkey: who may decide, that
the thing decided is still open, how the envelope is opened and checked
(:func:`check_decision`), what the audit entry says of it and how its row is filed
(:meth:`Decision.file`), and the steps of taking one (:meth:`DecisionRoom.decide`).

Why one module: the two rooms and the console (which checks before it asks the passkey the
question) must accept exactly the same deciders; written once, they cannot drift apart.
"""

from __future__ import annotations

import base64
import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from weightvault import _b64 as b64
from weightvault.custody import _names
from weightvault.custody.approvals import (
    MAX_ENVELOPE_BYTES,
    ApprovalStatement,
    RequestTerms,
    open_envelope,
)
from weightvault.custody.context import Recorder, RequestContext, Room, require_role
from weightvault.custody.errors import ConflictError, found
from weightvault.custody.models import load_model
from weightvault.custody.policy import ModelPolicy
from weightvault.custody.store import GrantRequest, Job, Principal, SignedDecision
from weightvault.errors import PolicyError

__all__ = [
    "Decision",
    "DecisionRoom",
    "EnvelopeOpener",
    "approver_row",
    "check_approver",
    "check_decision",
    "check_pending",
    "decode_envelope",
    "open_decision",
]

R = TypeVar("R")
Item = TypeVar("Item", GrantRequest, Job)
"""What approvers decide on: a grant request or a job."""
Row = TypeVar("Row", bound=SignedDecision)

EnvelopeOpener = Callable[[Session, Principal, bytes], tuple[ApprovalStatement, str]]
"""Checks a signed decision by ``approver`` and returns its statement and the signing key's id
(an Ed25519 DSSE envelope by default; the approver console passes its WebAuthn opener)."""


def decode_envelope(envelope_b64: str) -> bytes:
    """A decision's envelope as sent (base64, any padding the clients write)."""
    return b64.decode(envelope_b64, "envelope", max_size=MAX_ENVELOPE_BYTES, canonical=False)


def check_approver(name: str, approvers: Collection[str], model: str) -> None:
    """``name`` is an approver named in ``model``'s policy."""
    if name not in approvers:
        raise PolicyError(f"{name!r} is not an approver for {model!r}")


def approver_row(session: Session, name: str, *, keyed: bool) -> Principal:
    """The approver's row; ``keyed`` (its Ed25519 key is to open the envelope): it has one."""
    approver = session.get(Principal, name)
    if approver is None or (
        keyed and (approver.approval_key is None or not approver.approval_key_id)
    ):
        raise PolicyError(f"{name!r} has no registered approval key")
    return approver


def check_pending(name: str, requester: str, status: str, what: str) -> None:
    """Not the requester's own ``what`` (two persons), and still pending."""
    if requester == name:
        raise PolicyError(f"self-approval: the requester cannot approve their own {what}")
    if status != "pending":
        raise ConflictError(f"{what} is {status}, not pending")


def open_decision(
    session: Session, approver: Principal, envelope: bytes, opener: EnvelopeOpener | None
) -> tuple[ApprovalStatement, str]:
    """(statement, key id) of ``envelope``: by ``opener``, else the approver's Ed25519 key."""
    if opener is not None:
        return opener(session, approver, envelope)
    assert approver.approval_key is not None and approver.approval_key_id
    return open_envelope(envelope, approver.approval_key), approver.approval_key_id


@dataclass(frozen=True)
class Decision:
    """A signed decision that passed every check of its envelope (:func:`check_decision`)."""

    what: str
    """``request`` or ``job``: what was decided (its audit actions are ``{what}.approve``
    and ``{what}.deny``)."""
    policy: ModelPolicy
    """The model's policy as it is now (a policy tightened meanwhile applies)."""
    approver: str
    statement: ApprovalStatement
    key_id: str
    envelope: bytes
    now: dt.datetime

    def check_first(self, earlier: Iterable[SignedDecision]) -> None:
        """Check (7): no ``earlier`` decision on the same item by this approver or signed with
        this key (the rows' unique constraints still catch a race; this names the conflict)."""
        if any(e.approver == self.approver or e.key_id == self.key_id for e in earlier):
            raise ConflictError(f"this approver (or this key) has already decided this {self.what}")

    def record(self) -> dict[str, Any]:
        """What the audit entry says of the decision itself (the envelope whole, so
        ``audit verify`` re-checks the signature offline)."""
        return {
            "decision": self.statement.decision,
            "key_id": self.key_id,
            "envelope": base64.b64encode(self.envelope).decode("ascii"),
        }

    def file(
        self,
        session: Session,
        ctx: RequestContext,
        audit: Recorder,
        record: dict[str, Any],
        row: Callable[..., R],
        **parent: str,
    ) -> R:
        """Log ``record`` as this decision's audit entry, then add its row (``row(**parent,
        columns)``: an :class:`Approval` or a :class:`JobApproval`) naming that entry. A second
        decision by the same approver (a race the checks missed) is a conflict, by the table's
        unique key."""
        ctx.action = f"{self.what}.{'deny' if self.statement.decision == 'deny' else 'approve'}"
        index, entry = audit(ctx, "allowed", record)
        added = row(
            **parent,
            approver=self.approver,
            key_id=self.key_id,
            decision=self.statement.decision,
            envelope=self.envelope,
            expires_at=self.statement.expires_at,
            created_at=self.now,
            log_index=index,
            log_entry=entry,
        )
        session.add(added)
        try:
            session.flush()
        except IntegrityError as exc:
            raise ConflictError(f"this approver has already decided this {self.what}") from exc
        return added


def check_decision(
    session: Session,
    name: str,
    *,
    what: str,
    model: str,
    check_open: Callable[[], None],
    terms: RequestTerms,
    envelope: bytes,
    opener: EnvelopeOpener | None,
    now: dt.datetime,
) -> Decision:
    """Checks (1)-(6) of a decision by ``name`` on a request or job of ``model``, in order:
    (1) an approver named in the model's policy, with a registered key unless ``opener``
    opens the envelope; (2)-(3) ``check_open`` (not the requester's own, still pending, not
    expired); (4) the envelope opens under the approver's own key; (5) the statement names
    this approver and binds exactly ``terms``, (6) is current and not valid longer than the
    policy allows."""
    # (1)
    _model, policy = load_model(session, model)
    check_approver(name, policy.approvers, model)
    approver = approver_row(session, name, keyed=opener is None)
    # (2) (3)
    check_open()
    # (4)
    statement, key_id = open_decision(session, approver, envelope, opener)
    # (5) (6)
    statement.check_acceptable(name, terms, now, policy.approval_validity_s)
    return Decision(what, policy, name, statement, key_id, envelope, now)


class DecisionRoom(Room, ABC, Generic[Item, Row]):
    """A room whose items approvers decide on: grant requests (:class:`.grants.Grants`) and jobs
    (:class:`.jobs.Jobs`). :meth:`decide` is written once, so a decision on either goes through
    the same steps in the same order; a room says what its items are and what a decision does
    to one."""

    what: ClassVar[str]
    """``request`` or ``job``: names the item in messages, its id field (``{what}_id``) and its
    decisions' audit actions."""

    def decide(
        self,
        ctx: RequestContext,
        item_id: str,
        envelope_b64: str,
        *,
        opener: EnvelopeOpener | None = None,
    ) -> dict[str, Any]:
        """Record a signed approval or denial of item ``item_id``; return the item's view.

        Checks, in order: (1) a named approver, with a registered key unless ``opener`` (the
        console's passkey opener) opens the envelope; (2) not the requester; (3) the item is
        pending and not expired; (4) the envelope opens under the approver's own key; (5) the
        statement names this approver and binds exactly the item's terms; (6) it is current and
        not valid longer than the policy allows; (7) no earlier decision by this principal or
        this key. Then :meth:`_apply` files it, and :meth:`_committed` follows the commit.
        """
        principal = require_role(ctx, "approver")
        _names.check_request_id(item_id, f"{self.what}_id")
        envelope = decode_envelope(envelope_b64)
        now = self._clock()
        with self._store.session() as session:
            item = found(self._locked(session, item_id), self.what)
            decision = check_decision(
                session, principal.name, what=self.what, model=item.model,
                check_open=lambda: self._check_open(principal.name, item, now),
                terms=self._terms(item), envelope=envelope, opener=opener, now=now,
            )  # fmt: skip
            approvals = self._approvals(session, item_id)
            decision.check_first(approvals)  # (7)
            view = self._apply(session, ctx, item, decision, approvals)
        self._committed(view)
        return view

    @abstractmethod
    def _locked(self, session: Session, item_id: str) -> Item | None:
        """The item, locked for the decision (None if there is none)."""

    @abstractmethod
    def _check_open(self, name: str, item: Item, now: dt.datetime) -> None:
        """Checks (2)-(3): not ``name``'s own item; pending, not expired."""

    @abstractmethod
    def _terms(self, item: Item) -> RequestTerms:
        """The terms a decision on ``item`` must bind."""

    @abstractmethod
    def _approvals(self, session: Session, item_id: str) -> list[Row]:
        """The decisions filed on the item so far."""

    @abstractmethod
    def _apply(
        self,
        session: Session,
        ctx: RequestContext,
        item: Item,
        decision: Decision,
        approvals: list[Row],
    ) -> dict[str, Any]:
        """What a checked ``decision`` does to ``item`` (``approvals``: the earlier ones); file
        it (:meth:`Decision.file`) and return the item's view."""

    def _committed(self, view: dict[str, Any]) -> None:
        """Runs once the decision is committed (a job starts with its last approval)."""
