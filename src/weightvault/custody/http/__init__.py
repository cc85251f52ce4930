"""HTTP interface of the custody service (FastAPI): one router per room, inside an audit guard.

Every request, whatever its outcome (allowed, denied, malformed, unknown route), leaves an entry
in the audit log before its response starts: handlers that change state write their entry before
committing; for everything else :class:`AuditMiddleware` writes it when the response begins, and
if that write fails the client gets 503 instead of the response (fail closed).

HTTP-only concerns live here and nowhere else: request bodies (:mod:`.bodies`), the ``Range``
and response headers of pulls (:mod:`.ranges`), statuses for errors (:mod:`.errors`), the body
size limit and the audit guard (:mod:`.guard`), and streaming an upload body to a worker thread
(:mod:`.upload`). The rooms of :class:`~weightvault.custody.service.Custody` make the decisions.
"""

from __future__ import annotations

from weightvault.custody.http.app import create_app
from weightvault.custody.http.guard import AuditMiddleware

__all__ = ["AuditMiddleware", "create_app"]
