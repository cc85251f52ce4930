"""The audit room: each request's entry in the transparency log, denials counted for alerts, and
what auditors read (the exported log, the log key, the alerts).

Entries are written through :class:`~weightvault.custody.audit.AuditTrail`, which appends through
the log's group committer; secrets never enter them (tokens appear as HMACs).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from weightvault.custody.alerts import AlertEvent, AlertSink, alert_view
from weightvault.custody.approvals import format_time
from weightvault.custody.audit import AuditTrail
from weightvault.custody.config import ServiceConfig
from weightvault.custody.context import ROLES, RequestContext, Room, Shared, require_role
from weightvault.custody.store import Alert, Denial, Store

__all__ = ["Auditing"]


class Auditing(Room):
    """Writes request entries, counts denials, and serves the log and alerts to auditors.

    It is the room that gives every other room (and itself) its audit recorder, :meth:`record`.
    """

    def __init__(
        self,
        config: ServiceConfig,
        store: Store,
        clock: Callable[[], dt.datetime],
        trail: AuditTrail,
        alerts: AlertSink,
    ) -> None:
        super().__init__(Shared(config, store, clock, self.record))
        self._trail = trail
        self._alerts = alerts

    def record(
        self,
        ctx: RequestContext,
        outcome: str,
        detail: dict[str, Any] | None = None,
        /,
    ) -> tuple[int, bytes]:
        """Append this request's entry now (before the response and before any commit).

        If the append fails, the request is refused and its entry, should it have landed, is
        voided later; not once the response has begun (``ctx.responding``): that entry records
        what happened and stands (:meth:`AuditTrail.append`)."""
        event = {
            "action": ctx.action or "http",
            "client": ctx.client,
            "detail": {**ctx.detail, **(detail or {})},
            "method": ctx.method,
            "outcome": outcome,
            "path": ctx.path,
            "principal": ctx.name or None,
            "request_id": ctx.request_id,
            "time": format_time(self._clock()),
            "token": ctx.token_hmac,
        }
        result = self._trail.append(event, void_in_doubt=not ctx.responding)
        ctx.audited = True
        return result

    def record_denial(self, ctx: RequestContext, message: str) -> None:
        """Count a refused request; several in a short time raise an alert."""
        subject = ctx.name or ctx.token_hmac or f"client:{ctx.client}"
        now = self._clock()
        with self._store.session() as session:
            session.add(Denial(time=now, subject=subject[:128]))
            since = now - dt.timedelta(seconds=self._config.denials_window_s)
            count = session.scalar(
                select(func.count())
                .select_from(Denial)
                .where(Denial.subject == subject[:128], Denial.time > since)
            )
            if count == self._config.repeated_denials:
                self._alerts.emit(
                    session,
                    AlertEvent(
                        "denials.repeated",
                        now,
                        principal=ctx.name or None,
                        detail={"subject": subject, "count": count, "last": message[:200]},
                    ),
                )

    def export(self, ctx: RequestContext) -> bytes:
        """The whole log under a fresh signed checkpoint (auditors and admins)."""
        require_role(ctx, "auditor", "admin")
        self.record(ctx, "allowed")
        return self._trail.export()

    def key(self, ctx: RequestContext) -> dict[str, Any]:
        """The log's verifier key and its latest checkpoint (any principal)."""
        require_role(ctx, *ROLES)
        self.record(ctx, "allowed")
        note = self._trail.latest_checkpoint()
        return {
            "log_key": self._trail.verifier_key.to_text(),
            "checkpoint": note.decode() if note else None,
        }

    def list_alerts(self, ctx: RequestContext) -> list[dict[str, Any]]:
        """The latest 1,000 alerts, newest first (auditors and admins)."""
        require_role(ctx, "auditor", "admin")
        with self._store.session() as session:
            rows = session.scalars(select(Alert).order_by(Alert.id.desc()).limit(1000)).all()
            out = [alert_view(a) for a in rows]
            self._audit(ctx, "allowed", {"count": len(out)})
        return out
