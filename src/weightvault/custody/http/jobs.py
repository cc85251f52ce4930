"""Routes of the jobs room: submit, list, read, approve or deny, cancel, and the one-time release
of a job's signed result."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import Field

from weightvault.custody.http.bodies import StrictBody
from weightvault.custody.http.deps import Action, Ctx, raw_answer, room_routes
from weightvault.custody.http.queues import DecisionQueue, decision_routes
from weightvault.custody.jobs import Jobs

__all__ = ["JobIn", "jobs_router"]


class JobIn(StrictBody):
    """A job: model version, kind, parameters and inputs (:mod:`weightvault.access.spec`)."""

    model: str = Field(max_length=128)
    version: str = Field(max_length=64)
    kind: Literal["query", "evaluate", "finetune", "inspect"]
    justification: str = Field(max_length=2000)
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)


def jobs_router(room: Jobs, action: Action) -> APIRouter:
    router = APIRouter()
    route = room_routes(router, action)

    @route("POST", "/v1/jobs", "job.submit", status_code=201)
    def submit(ctx: Ctx, body: JobIn) -> dict[str, Any]:
        document = body.model_dump(exclude={"justification"})
        return room.submit(ctx, document, body.justification)

    decision_routes(
        route,
        DecisionQueue(
            "/v1/jobs", "job", ("list_jobs", "get_job", "decide"), room.list, room.get, room.decide
        ),
    )

    @route("POST", "/v1/jobs/{job_id}/cancel", "job.cancel")
    def cancel(ctx: Ctx, job_id: str) -> dict[str, Any]:
        return room.cancel(ctx, job_id)

    released = raw_answer(Response, "application/json")

    @route("POST", "/v1/jobs/{job_id}/result", "job.release", **released)
    def release(ctx: Ctx, job_id: str) -> Response:
        return Response(room.release(ctx, job_id), media_type="application/json")

    return router
