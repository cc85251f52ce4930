"""Telling approvers that a request waits for them: a JSON POST to the service's webhook.

The notice names the request, its terms and the console page to decide it on (``path``, and
``url`` when the console's origin is configured). It is sent by a background thread with a
few retries, so a slow or dead receiver never delays the request that filed it (the request is
in the audit log already).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.request
from typing import Any

__all__ = ["PendingNotifier"]


class PendingNotifier:
    """Posts ``{"notification": "approval.needed", ...}`` for each new request."""

    def __init__(self, webhook_url: str, console_origin: str) -> None:
        self._url = webhook_url
        self._origin = console_origin
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=1000)
        self._thread = threading.Thread(target=self._run, name="approval-notices", daemon=True)
        self._thread.start()

    def __call__(self, request: dict[str, Any]) -> None:
        notice = {
            "notification": "approval.needed",
            "request_id": request["id"],
            "model": request["model"],
            "version": request["version"],
            "requester": request["requester"],
            "justification": request["justification"],
            "byte_budget": request["byte_budget"],
            "duration_s": request["duration_s"],
            "approvals_required": request["approvals_required"],
            "path": f"/console/requests/{request['id']}",
        }
        if self._origin:
            notice["url"] = self._origin + notice["path"]
        try:
            self._queue.put_nowait(json.dumps(notice, sort_keys=True).encode())
        except queue.Full:
            pass  # the request is in the audit log and on the console's pending page

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            for attempt in range(3):
                post = urllib.request.Request(  # noqa: S310 - the alert webhook, checked at start
                    self._url, data=body, headers={"Content-Type": "application/json"}
                )
                try:
                    with urllib.request.urlopen(post, timeout=5):  # noqa: S310
                        break
                except OSError:
                    time.sleep(0.2 * (attempt + 1))
