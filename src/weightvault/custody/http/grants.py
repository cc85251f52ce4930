"""Routes of the grants room: requests, approvals and denials, revocation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from weightvault.custody.grants import Grants
from weightvault.custody.http.bodies import ApprovalIn, RequestIn, StatusFilter
from weightvault.custody.http.deps import Action, Ctx, room_routes

__all__ = ["grants_router"]


def grants_router(room: Grants, action: Action) -> APIRouter:
    router = APIRouter()
    route = room_routes(router, action)

    @route("POST", "/v1/requests", "request.create", status_code=201)
    def create_request(ctx: Ctx, body: RequestIn) -> dict[str, Any]:
        return room.create_request(
            ctx,
            body.model,
            body.version,
            body.justification,
            body.duration_s,
            body.byte_budget,
            body.purpose,
        )

    @route("GET", "/v1/requests", "request.list")
    def list_requests(ctx: Ctx, status: StatusFilter = None) -> list[dict[str, Any]]:
        return room.list_requests(ctx, status)

    @route("GET", "/v1/requests/{request_id}", "request.get")
    def get_request(ctx: Ctx, request_id: str) -> dict[str, Any]:
        return room.get_request(ctx, request_id)

    @route("POST", "/v1/requests/{request_id}/approvals", "request.decide", status_code=201)
    def approve(ctx: Ctx, request_id: str, body: ApprovalIn) -> dict[str, Any]:
        return room.submit_approval(ctx, request_id, body.envelope)

    @route("POST", "/v1/requests/{request_id}/revoke", "grant.revoke")
    def revoke(ctx: Ctx, request_id: str) -> dict[str, Any]:
        return room.revoke(ctx, request_id)

    return router
