"""Routes of the models room: register a model, set its policy, the inventory, push a version."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request

from weightvault.custody.context import RequestContext
from weightvault.custody.http.bodies import ModelIn, PolicyIn
from weightvault.custody.http.deps import Action
from weightvault.custody.http.upload import StreamReader
from weightvault.custody.models import Models
from weightvault.custody.push import Push

__all__ = ["models_router"]


def models_router(models: Models, push: Push, action: Action) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/models", status_code=201)
    def create_model(
        body: ModelIn, ctx: RequestContext = Depends(action("model.create"))
    ) -> dict[str, Any]:
        return models.create_model(ctx, body.name, body.policy)

    @router.put("/v1/models/{name}/policy")
    def set_policy(
        name: str, body: PolicyIn, ctx: RequestContext = Depends(action("model.policy"))
    ) -> dict[str, Any]:
        return models.set_policy(ctx, name, body.policy)

    @router.get("/v1/inventory")
    def inventory(ctx: RequestContext = Depends(action("inventory"))) -> list[dict[str, Any]]:
        return models.inventory(ctx)

    @router.post("/v1/models/{name}/versions/{version}/upload", status_code=201)
    async def upload(
        name: str,
        version: str,
        request: Request,
        ctx: RequestContext = Depends(action("version.upload")),
    ) -> dict[str, Any]:
        reader = StreamReader(request.stream().__aiter__())
        result: dict[str, Any] = await anyio.to_thread.run_sync(
            push.upload, ctx, name, version, reader
        )
        return result

    return router
