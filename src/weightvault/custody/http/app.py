"""The ASGI application of one replica: FastAPI with one router per room, inside the guard."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from weightvault.custody.context import RequestContext
from weightvault.custody.http.audit import audit_router
from weightvault.custody.http.deps import actions
from weightvault.custody.http.egress import egress_router
from weightvault.custody.http.errors import install_error_handler
from weightvault.custody.http.gates import gates_router
from weightvault.custody.http.grants import grants_router
from weightvault.custody.http.guard import AuditMiddleware
from weightvault.custody.http.identities import identities_router
from weightvault.custody.http.jobs import jobs_router
from weightvault.custody.http.models import models_router
from weightvault.custody.service import Custody

__all__ = ["create_app"]


def create_app(custody: Custody) -> AuditMiddleware:
    """The ASGI application for one :class:`Custody` replica (FastAPI inside the audit guard)."""
    app = FastAPI(
        title="weightvault custody service",
        version="1",
        description="Registry, just-in-time grants with M-of-N signed approvals, egress budgets, "
        "and an audit log that every request goes through.",
    )
    install_error_handler(app, custody)
    action = actions(custody.identities)

    @app.get("/v1/healthz")
    def healthz(ctx: RequestContext = Depends(action("healthz", auth=False))) -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(identities_router(custody.identities, action))
    app.include_router(models_router(custody.models, custody.push, action))
    app.include_router(grants_router(custody.grants, action))
    app.include_router(egress_router(custody.egress, action))
    app.include_router(audit_router(custody.auditing, action))
    app.include_router(jobs_router(custody.jobs, action))
    app.include_router(gates_router(custody.gates, custody.risks, action))
    from weightvault.custody.console.routes import console_router  # imports http: keep it late

    app.include_router(console_router(custody, action))
    guarded = AuditMiddleware(app, custody)
    guarded.fastapi = app
    return guarded
