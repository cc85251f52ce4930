"""Routes of the grants room: requests, approvals and denials, revocation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from weightvault.custody.approvals import AccessRequest
from weightvault.custody.grants import Grants
from weightvault.custody.http.bodies import RequestIn
from weightvault.custody.http.deps import Action, Ctx, room_routes
from weightvault.custody.http.queues import DecisionQueue, decision_routes

__all__ = ["grants_router"]


def grants_router(room: Grants, action: Action) -> APIRouter:
    router = APIRouter()
    route = room_routes(router, action)

    @route("POST", "/v1/requests", "request.create", status_code=201)
    def create_request(ctx: Ctx, body: RequestIn) -> dict[str, Any]:
        return room.create_request(ctx, AccessRequest(**body.model_dump()))

    decision_routes(
        route,
        DecisionQueue(
            "/v1/requests",
            "request",
            ("list_requests", "get_request", "approve"),
            room.list_requests,
            room.get_request,
            room.decide,
        ),
    )

    @route("POST", "/v1/requests/{request_id}/revoke", "grant.revoke")
    def revoke(ctx: Ctx, request_id: str) -> dict[str, Any]:
        return room.revoke(ctx, request_id)

    return router
