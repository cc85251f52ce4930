"""The dependency every route starts with: name the request's action and authenticate it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response

from weightvault.custody.context import RequestContext
from weightvault.custody.identities import Identities

__all__ = ["Action", "Ctx", "Route", "actions", "raw_answer", "room_routes"]

Action = Callable[..., Callable[..., RequestContext]]

_Handler = TypeVar("_Handler", bound=Callable[..., Any])


class Route(Protocol):
    """What :func:`room_routes` gives: ``route(method, path, acting, **options)(handler)``."""

    def __call__(
        self, method: str, path: str, acting: str, **options: Any
    ) -> Callable[[_Handler], _Handler]: ...


def actions(identities: Identities) -> Action:
    """``action(name, auth=True)``: a dependency giving the request's :class:`RequestContext`
    (made by the audit guard), named ``name`` and, with ``auth``, authenticated."""

    def action(name: str, *, auth: bool = True) -> Callable[..., RequestContext]:
        def dependency(
            request: Request, authorization: str | None = Header(default=None, max_length=200)
        ) -> RequestContext:
            ctx: RequestContext = request.state.wv_ctx
            ctx.action = name
            if auth:
                identities.authenticate(ctx, authorization)
            return ctx

        return dependency

    return action


def _request_context(request: Request) -> RequestContext:
    ctx: RequestContext = request.state.wv_ctx
    return ctx


Ctx = Annotated[RequestContext, Depends(_request_context)]
"""A handler's ``ctx`` parameter under :func:`room_routes`: the context its route's action named
and authenticated (a route-level dependency, which FastAPI solves before the handler's own)."""


def room_routes(router: APIRouter, action: Action) -> Route:
    """``route(method, path, acting, **options)``: a decorator adding a handler to ``router``
    whose request is named ``acting`` and authenticated before anything else, so that every
    route of a room says its audit action beside its path, and its handler takes just
    ``ctx: Ctx`` and the request's own parameters (``options`` as for
    :meth:`APIRouter.api_route`, ``name`` included)."""

    def route(
        method: str, path: str, acting: str, **options: Any
    ) -> Callable[[_Handler], _Handler]:
        return router.api_route(
            path, methods=[method], dependencies=[Depends(action(acting))], **options
        )

    return route


def raw_answer(response_class: type[Response], media_type: str) -> dict[str, Any]:
    """The ``route`` options of a handler that answers with a response it makes itself (bytes or
    a stream), so that the OpenAPI schema still names the media type of its 200 answer."""
    return {"response_class": response_class, "responses": {200: {"content": {media_type: {}}}}}
