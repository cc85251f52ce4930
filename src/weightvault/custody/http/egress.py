"""Routes of the egress room: what a grant holds, and ranged pulls of its files."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse

from weightvault.custody.egress import Pulls
from weightvault.custody.http.deps import Action, Ctx, raw_answer, room_routes
from weightvault.custody.http.ranges import pull_headers, range_of

__all__ = ["egress_router"]


def egress_router(room: Pulls, action: Action) -> APIRouter:
    router = APIRouter()
    route = room_routes(router, action)

    @route("GET", "/v1/grants/{grant_id}/files", "grant.files")
    def grant_files(ctx: Ctx, grant_id: str) -> dict[str, Any]:
        return room.grant_files(ctx, grant_id)

    pulled = raw_answer(StreamingResponse, "application/octet-stream")

    @route("GET", "/v1/grants/{grant_id}/files/{index}", "pull", **pulled)
    def pull(
        ctx: Ctx,
        grant_id: str,
        index: int,
        range_header: str | None = Header(default=None, alias="Range", max_length=100),
    ) -> StreamingResponse:
        ranged = range_header is not None
        opened = room.open_pull(ctx, grant_id, index, range_of(range_header))
        return StreamingResponse(
            opened.body,
            status_code=206 if ranged else 200,
            headers=pull_headers(opened, ranged=ranged),
        )

    return router
