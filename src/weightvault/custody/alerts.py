"""Alerts: budget exhaustion, unusual volume, a first-time principal, repeated denials, and the
incident signals: egress past a fraction of a grant's or a model's budget, pulls outside working
hours, the same pair of approvers releasing again and again, uploads whose signature fails, and
uploads the scanner refuses.

An alert is three things at once: a row in the ``alerts`` table (inside the transaction of the
request that caused it), an entry in the audit log, and a JSON POST to the configured webhook.
The webhook is sent by a background thread with a few retries: a slow or dead receiver never
blocks or fails a request (the audit log, which must be written, already holds the alert).

The sink knows nothing of the service: it is given an :class:`AlertEvent` (what happened, when,
to whom) and writes it through the audit appender it was built with.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import secrets
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from weightvault.custody.approvals import format_time
from weightvault.custody.store import Alert
from weightvault.errors import UsageError

__all__ = [
    "ALERT_KINDS",
    "INCIDENT_SIGNALS",
    "AlertEvent",
    "AlertSink",
    "AuditAppend",
    "alert_view",
    "crossed",
    "outside_hours",
]

ALERT_KINDS = (
    "budget.exhausted",
    "volume.unusual",
    "principal.first_pull",
    "denials.repeated",
    "egress.budget_fraction",
    "pull.off_hours",
    "approvals.same_pair",
    "upload.signature_failed",
    "scan.finding",
)
INCIDENT_SIGNALS = ALERT_KINDS[4:]
"""The kinds that make an incident candidate (``weightvault incident`` lists them first)."""

AuditAppend = Callable[[dict[str, Any]], object]
"""Appends one event to the audit log durably (raises when it cannot)."""


@dataclass(frozen=True)
class AlertEvent:
    """One thing worth an alert: its kind (one of :data:`ALERT_KINDS`), when, who, which model."""

    kind: str
    time: dt.datetime
    principal: str | None = None
    model: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in ALERT_KINDS:
            raise ValueError(f"unknown alert kind {self.kind!r}")


def outside_hours(when: dt.datetime, hours: tuple[int, int] | None) -> bool:
    """Whether ``when`` (UTC) falls outside ``(start, end)`` hours; a window may wrap midnight
    (``(22, 6)``). No window: never outside."""
    if hours is None:
        return False
    start, end = hours
    hour = when.astimezone(dt.UTC).hour
    inside = start <= hour < end if start <= end else hour >= start or hour < end
    return not inside


def alert_view(alert: Alert) -> dict[str, Any]:
    """A stored alert as the API and the console show it."""
    return {
        "time": format_time(alert.time),
        "kind": alert.kind,
        "principal": alert.principal,
        "model": alert.model,
        "detail": json.loads(alert.detail),
    }


def crossed(before: int, after: int, budget: int, fraction: float) -> bool:
    """Whether a count went from below ``fraction`` of ``budget`` to at or above it."""
    threshold = budget * fraction
    return budget > 0 and before < threshold <= after


class AlertSink:
    """Writes alerts to the database and the audit log, and posts them to a webhook."""

    def __init__(self, audit: AuditAppend, webhook_url: str | None, *, replica: str = "") -> None:
        self._audit = audit
        self._replica = replica
        self._url = webhook_url
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=10_000)
        self._thread: threading.Thread | None = None
        if webhook_url:
            if not webhook_url.startswith(("http://", "https://")) or len(webhook_url) > 2000:
                raise UsageError(
                    "alert webhook: expected an http:// or https:// URL", remedy="webhook"
                )
            self._thread = threading.Thread(target=self._send_loop, name="webhook", daemon=True)
            self._thread.start()

    def emit(self, session: Session, event: AlertEvent) -> None:
        """Record ``event`` in ``session``'s transaction, log it, and queue the webhook."""
        detail = dict(event.detail)
        payload = {
            "alert": event.kind,
            "time": format_time(event.time),
            "principal": event.principal,
            "model": event.model,
            "detail": detail,
            "replica": self._replica,
        }
        session.add(
            Alert(
                time=event.time,
                kind=event.kind,
                principal=event.principal,
                model=event.model,
                detail=json.dumps(detail, sort_keys=True),
            )
        )
        self._audit(
            {
                "action": f"alert.{event.kind}",
                "outcome": "alert",
                "principal": event.principal,
                "request_id": secrets.token_hex(16),
                "time": payload["time"],
                "detail": {"model": event.model, **detail},
            }
        )
        if self._thread is not None:
            try:
                self._queue.put_nowait(payload)
            except queue.Full:
                pass  # the alert is in the database and the audit log

    def _send_loop(self) -> None:
        assert self._url is not None
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            data = json.dumps(payload, sort_keys=True).encode("utf-8")
            for attempt in range(3):
                request = urllib.request.Request(  # noqa: S310 - URL scheme checked above
                    self._url,
                    data=data,
                    headers={"Content-Type": "application/json"},
                    method="POST",
                )
                try:
                    with urllib.request.urlopen(request, timeout=5):  # noqa: S310
                        break
                except OSError:
                    time.sleep(0.2 * (attempt + 1))

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
