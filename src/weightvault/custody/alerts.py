"""Alerts: budget exhaustion, unusual volume, a first-time principal, repeated denials.

An alert is three things at once: a row in the ``alerts`` table (inside the transaction of the
request that caused it), an entry in the audit log, and a JSON POST to the configured webhook.
The webhook is sent by a background thread with a few retries: a slow or dead receiver never
blocks or fails a request (the audit log, which must be written, already holds the alert).
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
import urllib.request
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from weightvault.custody.approvals import format_time
from weightvault.custody.store import Alert
from weightvault.errors import UsageError

if TYPE_CHECKING:
    from weightvault.custody.service import Custody

__all__ = ["ALERT_KINDS", "AlertSink"]

ALERT_KINDS = ("budget.exhausted", "volume.unusual", "principal.first_pull", "denials.repeated")


class AlertSink:
    """Writes alerts to the database and the audit log, and posts them to a webhook."""

    def __init__(self, custody: Custody, webhook_url: str | None) -> None:
        self._custody = custody
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

    def emit(
        self,
        session: Session,
        kind: str,
        *,
        principal: str | None = None,
        model: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record an alert in ``session``'s transaction, log it, and queue the webhook."""
        now = self._custody.clock()
        payload = {
            "alert": kind,
            "time": format_time(now),
            "principal": principal,
            "model": model,
            "detail": detail or {},
            "replica": self._custody.config.replica,
        }
        session.add(
            Alert(
                time=now,
                kind=kind,
                principal=principal,
                model=model,
                detail=json.dumps(detail or {}, sort_keys=True),
            )
        )
        self._custody.trail.append(
            {
                "action": f"alert.{kind}",
                "outcome": "alert",
                "principal": principal,
                "request_id": secrets.token_hex(16),
                "time": payload["time"],
                "detail": {"model": model, **(detail or {})},
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
