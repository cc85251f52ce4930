"""HTTP interface of the custody service: :func:`create_app` (the ASGI app of one replica).

Kept as the documented entry point; the routers, the audit guard and the HTTP-only parsing live
in :mod:`weightvault.custody.http`.
"""

from __future__ import annotations

from weightvault.custody.http import AuditMiddleware, create_app

__all__ = ["AuditMiddleware", "create_app"]
