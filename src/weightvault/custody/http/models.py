"""Routes of the models room: register a model, set its policy, the inventory, push a version."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request

from weightvault.custody.http.bodies import ModelIn, PolicyIn
from weightvault.custody.http.deps import Action, Ctx, room_routes
from weightvault.custody.http.upload import StreamReader
from weightvault.custody.models import Models
from weightvault.custody.push import Push

__all__ = ["models_router"]


def models_router(models: Models, push: Push, action: Action) -> APIRouter:
    router = APIRouter()
    route = room_routes(router, action)

    @route("POST", "/v1/models", "model.create", status_code=201)
    def create_model(ctx: Ctx, body: ModelIn) -> dict[str, Any]:
        return models.create_model(ctx, body.name, body.policy)

    @route("PUT", "/v1/models/{name}/policy", "model.policy")
    def set_policy(ctx: Ctx, name: str, body: PolicyIn) -> dict[str, Any]:
        return models.set_policy(ctx, name, body.policy)

    @route("GET", "/v1/inventory", "inventory")
    def inventory(ctx: Ctx) -> list[dict[str, Any]]:
        return models.inventory(ctx)

    @route("POST", "/v1/models/{name}/versions/{version}/upload", "version.upload", status_code=201)
    async def upload(ctx: Ctx, name: str, version: str, request: Request) -> dict[str, Any]:
        reader = StreamReader(request.stream().__aiter__())
        result: dict[str, Any] = await anyio.to_thread.run_sync(
            push.upload, ctx, name, version, reader
        )
        return result

    return router
