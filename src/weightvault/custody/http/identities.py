"""Routes of the identities room: who am I, principals, tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from weightvault.custody.http.bodies import PrincipalIn, PrincipalPatch, TokenIn
from weightvault.custody.http.deps import Action, Ctx, room_routes
from weightvault.custody.identities import Identities

__all__ = ["identities_router"]


def identities_router(room: Identities, action: Action) -> APIRouter:
    router = APIRouter()
    route = room_routes(router, action)

    @route("GET", "/v1/whoami", "whoami")
    def whoami(ctx: Ctx) -> dict[str, Any]:
        return room.whoami(ctx)

    @route("POST", "/v1/principals", "principal.create", status_code=201)
    def create_principal(ctx: Ctx, body: PrincipalIn) -> dict[str, Any]:
        return room.create_principal(
            ctx, body.name, body.roles, body.recipient, body.approval_key_pem
        )

    @route("PATCH", "/v1/principals/{name}", "principal.update")
    def update_principal(ctx: Ctx, name: str, body: PrincipalPatch) -> dict[str, str]:
        room.update_principal(ctx, name, body.model_dump())
        return {"status": "updated"}

    @route("POST", "/v1/principals/{name}/tokens", "token.issue", status_code=201)
    def issue_token(ctx: Ctx, name: str, body: TokenIn) -> dict[str, Any]:
        return room.issue_token(ctx, name, body.label)

    @route("DELETE", "/v1/tokens/{token_id}", "token.revoke")
    def revoke_token(ctx: Ctx, token_id: str) -> dict[str, str]:
        room.revoke_token(ctx, token_id[:32])
        return {"status": "revoked"}

    return router
