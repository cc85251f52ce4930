"""Byte budgets spent by single conditional statements: no read-modify-write in Python.

Replicas share one database, so a budget check that reads a counter, adds in Python and writes
it back lets two replicas spend the same bytes twice unless every reader locks first. Here each
budget is spent by one ``UPDATE ... SET n = n + :bytes WHERE ... AND n + :bytes <= budget
RETURNING n``: the database evaluates the condition on the row it updates (PostgreSQL re-checks
it on the newest version of the row when a concurrent update got there first; SQLite has one
writer at a time), so whatever the interleaving, the sum of the debits that succeed never passes
the budget. A debit that matches no row was refused; nothing was spent.

The grant's budget is its ``bytes_used`` counter. The principal's and the model's budgets are
sliding windows: bytes in the window = the subject's all-time counter (:class:`EgressTotal`) less
the egress rows older than the window. Those old rows are settled (no transaction adds a row
stamped a whole window ago), so their sum is a constant of the statement, not a race.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from weightvault.custody.store import (
    Egress,
    EgressTotal,
    GrantRequest,
    core_table,
    create_egress_total,
    egress_subject,
)

__all__ = ["Debit", "debit_grant", "debit_window", "record_release", "spend", "window_used"]


@dataclass(frozen=True)
class Debit:
    """What :func:`spend` did: ``refused`` names the budget that refused (nothing was spent),
    else ``grant_used`` is the grant's counter after the debit and ``window_before`` the bytes
    each window held before it."""

    refused: str | None
    grant_used: int = 0
    window_before: dict[str, int] = field(default_factory=dict)


def debit_grant(session: Session, grant_id: str, nbytes: int, now: dt.datetime) -> int | None:
    """Spend ``nbytes`` of the grant's budget if it is active, unexpired at ``now`` and has them
    left; its ``bytes_used`` afterwards, or None (refused: nothing spent)."""
    table = core_table(GrantRequest)
    statement = (
        update(table)
        .where(
            table.c.id == grant_id,
            table.c.status == "active",
            table.c.grant_expires_at > now,
            table.c.bytes_used + nbytes <= table.c.byte_budget,
        )
        .values(bytes_used=table.c.bytes_used + nbytes)
        .returning(table.c.bytes_used)
    )
    spent = session.execute(statement).scalar_one_or_none()
    return None if spent is None else int(spent)


def _expired(session: Session, kind: str, subject: str, since: dt.datetime) -> int:
    """Bytes released to/of the subject at or before ``since`` (outside the window)."""
    query = select(func.coalesce(func.sum(Egress.nbytes), 0)).where(
        egress_subject(kind) == subject, Egress.time <= since
    )
    return int(session.scalar(query) or 0)


def debit_window(
    session: Session, kind: str, subject: str, nbytes: int, budget: int, since: dt.datetime
) -> int | None:
    """Spend ``nbytes`` of a ``principal`` or ``model`` window budget (the window starts after
    ``since``); the bytes in the window before this debit, or None (refused: nothing spent)."""
    table = core_table(EgressTotal)
    expired = _expired(session, kind, subject, since)
    statement = (
        update(table)
        .where(
            table.c.kind == kind,
            table.c.subject == subject,
            table.c.total - expired + nbytes <= budget,
        )
        .values(total=table.c.total + nbytes)
        .returning(table.c.total)
    )
    total = session.execute(statement).scalar_one_or_none()
    if total is None:
        # Refused, or no counter yet: make it (or wait for the replica making it), then once
        # more (a fresh statement sees the row another transaction just committed).
        create_egress_total(session.connection(), kind, subject)
        total = session.execute(statement).scalar_one_or_none()
    return None if total is None else int(total) - nbytes - expired


def window_used(session: Session, kind: str, subject: str, since: dt.datetime) -> int:
    """Bytes released to/of the subject after ``since`` (for messages and listings)."""
    total = session.scalar(
        select(EgressTotal.total).where(EgressTotal.kind == kind, EgressTotal.subject == subject)
    )
    if total is None:
        query = select(func.coalesce(func.sum(Egress.nbytes), 0)).where(
            egress_subject(kind) == subject, Egress.time > since
        )
        return int(session.scalar(query) or 0)
    return int(total) - _expired(session, kind, subject, since)


def spend(
    session: Session,
    grant_id: str,
    nbytes: int,
    now: dt.datetime,
    since: dt.datetime,
    windows: Sequence[tuple[str, str, int]],
) -> Debit:
    """Debit ``nbytes`` from the grant and from each ``(kind, subject, budget)`` window, all or
    none, and record the egress row.

    The debits run in a savepoint: the first budget that refuses undoes the ones before it, so
    a refused debit leaves every counter as it was (the caller's transaction goes on, to record
    the refusal). The egress row goes in through Core: the counters are raised already, and the
    ORM hook that counts other egress must not count it twice.
    """
    savepoint = session.begin_nested()
    grant_used = debit_grant(session, grant_id, nbytes, now)
    if grant_used is None:
        savepoint.rollback()
        return Debit("grant")
    before: dict[str, int] = {}
    for kind, subject, budget in windows:
        used = debit_window(session, kind, subject, nbytes, budget, since)
        if used is None:
            savepoint.rollback()
            return Debit(kind)
        before[kind] = used
    principal = next(s for k, s, _b in windows if k == "principal")
    model = next(s for k, s, _b in windows if k == "model")
    session.execute(
        insert(core_table(Egress)).values(
            time=now, principal=principal, model=model, grant_id=grant_id, nbytes=nbytes
        )
    )
    savepoint.commit()
    return Debit(None, grant_used, before)


def record_release(
    session: Session, principal: str, model: str, job_id: str, nbytes: int, now: dt.datetime
) -> None:
    """Record a job result's egress once the model window was debited for it
    (:func:`debit_window`): the egress row goes in through Core (the ORM hook would count the
    model's bytes a second time) and the principal's counter is raised (a release counts against
    the requester's pull window; its own output budget decided whether it may leave)."""
    session.execute(
        insert(core_table(Egress)).values(
            time=now, principal=principal, model=model, grant_id=job_id, nbytes=nbytes
        )
    )
    if not create_egress_total(session.connection(), "principal", principal):
        table = core_table(EgressTotal)
        session.execute(
            update(table)
            .where(table.c.kind == "principal", table.c.subject == principal)
            .values(total=table.c.total + nbytes)
        )
