"""Routes of the identities room: who am I, principals, tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from weightvault.custody.context import RequestContext
from weightvault.custody.http.bodies import PrincipalIn, PrincipalPatch, TokenIn
from weightvault.custody.http.deps import Action
from weightvault.custody.identities import Identities

__all__ = ["identities_router"]


def identities_router(room: Identities, action: Action) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/whoami")
    def whoami(ctx: RequestContext = Depends(action("whoami"))) -> dict[str, Any]:
        return room.whoami(ctx)

    @router.post("/v1/principals", status_code=201)
    def create_principal(
        body: PrincipalIn, ctx: RequestContext = Depends(action("principal.create"))
    ) -> dict[str, Any]:
        return room.create_principal(
            ctx, body.name, body.roles, body.recipient, body.approval_key_pem
        )

    @router.patch("/v1/principals/{name}")
    def update_principal(
        name: str,
        body: PrincipalPatch,
        ctx: RequestContext = Depends(action("principal.update")),
    ) -> dict[str, str]:
        room.update_principal(ctx, name, body.model_dump())
        return {"status": "updated"}

    @router.post("/v1/principals/{name}/tokens", status_code=201)
    def issue_token(
        name: str, body: TokenIn, ctx: RequestContext = Depends(action("token.issue"))
    ) -> dict[str, Any]:
        return room.issue_token(ctx, name, body.label)

    @router.delete("/v1/tokens/{token_id}")
    def revoke_token(
        token_id: str, ctx: RequestContext = Depends(action("token.revoke"))
    ) -> dict[str, str]:
        room.revoke_token(ctx, token_id[:32])
        return {"status": "revoked"}

    return router
