"""Routes of the egress room: what a grant holds, and ranged pulls of its files."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header
from fastapi.responses import StreamingResponse

from weightvault.custody.context import RequestContext
from weightvault.custody.egress import Pulls
from weightvault.custody.http.deps import Action
from weightvault.custody.http.ranges import pull_headers, range_of

__all__ = ["egress_router"]


def egress_router(room: Pulls, action: Action) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/grants/{grant_id}/files")
    def grant_files(
        grant_id: str, ctx: RequestContext = Depends(action("grant.files"))
    ) -> dict[str, Any]:
        return room.grant_files(ctx, grant_id)

    @router.get(
        "/v1/grants/{grant_id}/files/{index}",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    def pull(
        grant_id: str,
        index: int,
        range_header: str | None = Header(default=None, alias="Range", max_length=100),
        ctx: RequestContext = Depends(action("pull")),
    ) -> StreamingResponse:
        ranged = range_header is not None
        opened = room.open_pull(ctx, grant_id, index, range_of(range_header))
        return StreamingResponse(
            opened.body,
            status_code=206 if ranged else 200,
            headers=pull_headers(opened, ranged=ranged),
        )

    return router
