"""Routes of the jobs room: submit, list, read, approve or deny, cancel, and the one-time release
of a job's signed result."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import Field

from weightvault.custody.context import RequestContext
from weightvault.custody.http.bodies import ApprovalIn, StrictBody
from weightvault.custody.http.deps import Action
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

    @router.post("/v1/jobs", status_code=201)
    def submit(body: JobIn, ctx: RequestContext = Depends(action("job.submit"))) -> dict[str, Any]:
        document = body.model_dump(exclude={"justification"})
        return room.submit(ctx, document, body.justification)

    @router.get("/v1/jobs")
    def list_jobs(
        status: str | None = Query(default=None, max_length=16),
        ctx: RequestContext = Depends(action("job.list")),
    ) -> list[dict[str, Any]]:
        return room.list(ctx, status)

    @router.get("/v1/jobs/{job_id}")
    def get_job(job_id: str, ctx: RequestContext = Depends(action("job.get"))) -> dict[str, Any]:
        return room.get(ctx, job_id)

    @router.post("/v1/jobs/{job_id}/approvals", status_code=201)
    def decide(
        job_id: str, body: ApprovalIn, ctx: RequestContext = Depends(action("job.decide"))
    ) -> dict[str, Any]:
        return room.decide(ctx, job_id, body.envelope)

    @router.post("/v1/jobs/{job_id}/cancel")
    def cancel(job_id: str, ctx: RequestContext = Depends(action("job.cancel"))) -> dict[str, Any]:
        return room.cancel(ctx, job_id)

    @router.post(
        "/v1/jobs/{job_id}/result",
        response_class=Response,
        responses={200: {"content": {"application/json": {}}}},
    )
    def release(job_id: str, ctx: RequestContext = Depends(action("job.release"))) -> Response:
        return Response(room.release(ctx, job_id), media_type="application/json")

    return router
