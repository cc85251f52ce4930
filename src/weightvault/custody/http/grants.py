"""Routes of the grants room: requests, approvals and denials, revocation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from weightvault.custody.context import RequestContext
from weightvault.custody.grants import Grants
from weightvault.custody.http.bodies import ApprovalIn, RequestIn
from weightvault.custody.http.deps import Action

__all__ = ["grants_router"]


def grants_router(room: Grants, action: Action) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/requests", status_code=201)
    def create_request(
        body: RequestIn, ctx: RequestContext = Depends(action("request.create"))
    ) -> dict[str, Any]:
        return room.create_request(
            ctx,
            body.model,
            body.version,
            body.justification,
            body.duration_s,
            body.byte_budget,
            body.purpose,
        )

    @router.get("/v1/requests")
    def list_requests(
        status: str | None = Query(default=None, max_length=16),
        ctx: RequestContext = Depends(action("request.list")),
    ) -> list[dict[str, Any]]:
        return room.list_requests(ctx, status)

    @router.get("/v1/requests/{request_id}")
    def get_request(
        request_id: str, ctx: RequestContext = Depends(action("request.get"))
    ) -> dict[str, Any]:
        return room.get_request(ctx, request_id)

    @router.post("/v1/requests/{request_id}/approvals", status_code=201)
    def approve(
        request_id: str,
        body: ApprovalIn,
        ctx: RequestContext = Depends(action("request.decide")),
    ) -> dict[str, Any]:
        return room.submit_approval(ctx, request_id, body.envelope)

    @router.post("/v1/requests/{request_id}/revoke")
    def revoke(
        request_id: str, ctx: RequestContext = Depends(action("grant.revoke"))
    ) -> dict[str, Any]:
        return room.revoke(ctx, request_id)

    return router
