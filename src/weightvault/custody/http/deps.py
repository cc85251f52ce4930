"""The dependency every route starts with: name the request's action and authenticate it."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Header, Request

from weightvault.custody.context import RequestContext
from weightvault.custody.identities import Identities

__all__ = ["Action", "actions"]

Action = Callable[..., Callable[..., RequestContext]]


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
