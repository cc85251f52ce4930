"""The routes both queues approvers decide on share (grant requests, jobs): list the queue, read
one item, file a signed approval or denial of one.

Why one function: the two rooms ask the same three questions of their queue, with the same
status filter, reads and decision body; written once, their HTTP faces cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Path

from weightvault.custody.context import RequestContext
from weightvault.custody.http.bodies import ApprovalIn, StatusFilter
from weightvault.custody.http.deps import Ctx, Route

__all__ = ["DecisionQueue", "decision_routes"]


@dataclass(frozen=True)
class DecisionQueue:
    """One queue: its URL (``base``, items at ``base/{<what>_id}``), the audit actions'
    prefix ``what`` (``<what>.list``, ``.get``, ``.decide``), the handlers' names (they name the
    operations in the OpenAPI schema) and the room's three calls."""

    base: str
    what: str
    names: tuple[str, str, str]
    listing: Callable[[RequestContext, str | None], list[dict[str, Any]]]
    item: Callable[[RequestContext, str], dict[str, Any]]
    decide: Callable[[RequestContext, str, str], dict[str, Any]]


def decision_routes(route: Route, queue: DecisionQueue) -> None:
    """Add ``queue``'s list, item and decision routes (in that order) with ``route``."""
    key = f"{queue.what}_id"
    one = f"{queue.base}/{{{key}}}"
    list_name, item_name, decide_name = queue.names

    @route("GET", queue.base, f"{queue.what}.list", name=list_name)
    def listing(ctx: Ctx, status: StatusFilter = None) -> list[dict[str, Any]]:
        return queue.listing(ctx, status)

    @route("GET", one, f"{queue.what}.get", name=item_name)
    def item(ctx: Ctx, item_id: str = Path(alias=key)) -> dict[str, Any]:
        return queue.item(ctx, item_id)

    @route("POST", f"{one}/approvals", f"{queue.what}.decide", name=decide_name, status_code=201)
    def decide(ctx: Ctx, body: ApprovalIn, item_id: str = Path(alias=key)) -> dict[str, Any]:
        return queue.decide(ctx, item_id, body.envelope)
