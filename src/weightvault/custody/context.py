"""What every room of the custody service shares: the request context, roles, and :class:`Room`
(configuration, database, clock, audit recorder).

Each room (:mod:`.identities`, :mod:`.models`, :mod:`.push`, :mod:`.grants`, :mod:`.egress`,
:mod:`.auditing`) takes a :class:`RequestContext` (who is asking, how) in each public method and
either returns a result or raises a :class:`~weightvault.errors.WeightvaultError`. State changes
follow one order: check everything, write the audit entry (durably, in the transparency log),
then commit the database transaction. If the log cannot be written the transaction is rolled
back and the request fails (fail closed); if the process dies between the two, the log holds an
entry for an action that did not happen, never the reverse.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from weightvault.custody.config import ServiceConfig
from weightvault.custody.errors import AuthenticationError
from weightvault.custody.store import Principal, Store
from weightvault.errors import PolicyError

__all__ = ["ROLES", "Recorder", "RequestContext", "Room", "Shared", "require_role"]

ROLES = ("admin", "owner", "approver", "reader", "auditor", "researcher")


@dataclass
class RequestContext:
    """One request as the service sees it (HTTP, or a local command such as ``vault init``)."""

    request_id: str
    """Random, one per request: pairs the request's audit entries."""
    method: str
    path: str
    client: str
    """The peer's address (``local`` for a local command)."""
    principal: Principal | None = None
    """Who is asking, once authenticated."""
    token_id: str | None = None
    token_hmac: str | None = None
    """The presented token, HMACed with the audit key (what the audit log records)."""
    action: str = ""
    """What is asked, e.g. ``request.create`` (the audit entry's action)."""
    detail: dict[str, Any] = field(default_factory=dict)
    """Facts gathered along the way, for the audit entry."""
    audited: bool = False
    """Whether this request's entry is written (the audit guard writes one otherwise)."""
    responding: bool = False
    """Whether the response has begun (bytes were sent): an entry written from then on records
    what happened, and stands even if its commit is in doubt (:meth:`AuditTrail.append`)."""

    @property
    def name(self) -> str:
        return self.principal.name if self.principal else ""


def require_role(ctx: RequestContext, *roles: str) -> Principal:
    """The authenticated principal, if it holds one of ``roles``; raise otherwise."""
    principal = ctx.principal
    if principal is None:
        raise AuthenticationError("missing bearer token")
    if not principal.role_set & set(roles):
        raise PolicyError(
            f"principal {principal.name!r} lacks the role for this ({' or '.join(roles)} needed)"
        )
    return principal


class Recorder(Protocol):
    """Writes a request's audit entry now (before the response and before any commit)."""

    def __call__(
        self,
        ctx: RequestContext,
        outcome: str,
        detail: dict[str, Any] | None = None,
        /,
    ) -> tuple[int, bytes]: ...


@dataclass(frozen=True)
class Shared:
    """What every room uses: configuration, the database, the clock and the audit recorder."""

    config: ServiceConfig
    store: Store
    clock: Callable[[], dt.datetime]
    audit: Recorder


class Room:
    """A room of the service: one job, with what every room uses at hand."""

    def __init__(self, shared: Shared) -> None:
        self._config = shared.config
        self._store = shared.store
        self._clock = shared.clock
        self._audit = shared.audit
