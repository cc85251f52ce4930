"""Routes of the audit room: the exported log, the log key, the alerts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from weightvault.custody.auditing import Auditing
from weightvault.custody.http.deps import Action, Ctx, room_routes

__all__ = ["audit_router"]


def audit_router(room: Auditing, action: Action) -> APIRouter:
    router = APIRouter()
    route = room_routes(router, action)

    @route("GET", "/v1/audit/export", "audit.export")
    def audit_export(ctx: Ctx) -> Response:
        return Response(room.export(ctx), media_type="application/json")

    @route("GET", "/v1/audit/key", "audit.key")
    def audit_key(ctx: Ctx) -> dict[str, Any]:
        return room.key(ctx)

    @route("GET", "/v1/alerts", "alerts.list")
    def alerts(ctx: Ctx) -> list[dict[str, Any]]:
        return room.list_alerts(ctx)

    return router
