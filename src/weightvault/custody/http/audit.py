"""Routes of the audit room: the exported log, the log key, the alerts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from weightvault.custody.auditing import Auditing
from weightvault.custody.context import RequestContext
from weightvault.custody.http.deps import Action

__all__ = ["audit_router"]


def audit_router(room: Auditing, action: Action) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/audit/export")
    def audit_export(ctx: RequestContext = Depends(action("audit.export"))) -> Response:
        return Response(room.export(ctx), media_type="application/json")

    @router.get("/v1/audit/key")
    def audit_key(ctx: RequestContext = Depends(action("audit.key"))) -> dict[str, Any]:
        return room.key(ctx)

    @router.get("/v1/alerts")
    def alerts(ctx: RequestContext = Depends(action("alerts.list"))) -> list[dict[str, Any]]:
        return room.list_alerts(ctx)

    return router
