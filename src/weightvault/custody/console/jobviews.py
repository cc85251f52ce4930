"""What the console's jobs pages show: structured-access jobs (pending, running, done) with
each requester's output budget, used and left, as the release step counts it.

The jobs room decides who sees which job (:meth:`Jobs.list`, :meth:`Jobs.get`); this module adds
what an approver needs to judge one: the share of the output budget the requester has spent in
the current window (and of the total inspect budget, for inspect jobs), how many bytes this job
released, the version's root digest, and whether each decision was signed with a passkey or an
Ed25519 key.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from weightvault.access.policy import AccessPolicy
from weightvault.custody.console.views import may_decide, signed_with, size_text
from weightvault.custody.context import ROLES, RequestContext, Room, Shared, require_role
from weightvault.custody.jobs import Jobs
from weightvault.custody.jobs_runner import root_digest_of
from weightvault.custody.models import load_model
from weightvault.custody.store import Job, JobApproval, ModelVersion

__all__ = ["JOB_GROUPS", "JobPages"]

JOB_GROUPS = {
    "pending": ("pending",),
    "running": ("approved", "running"),
    "done": ("succeeded", "failed", "killed", "denied", "cancelled", "released"),
}
"""The jobs page's tabs and the job statuses each shows."""


class JobPages(Room):
    """Read-only views of jobs, over the jobs room's own visibility rules."""

    def __init__(self, shared: Shared, jobs: Jobs) -> None:
        super().__init__(shared)
        self._jobs = jobs

    def _released(self, session: Session, requester: str, model: str, *where: Any) -> int:
        total = session.scalar(
            select(func.coalesce(func.sum(Job.released_bytes), 0)).where(
                Job.requester == requester, Job.model == model, *where
            )
        )
        return int(total or 0)

    def _budgets(self, session: Session, view: dict[str, Any], now: dt.datetime) -> None:
        """Add the requester's output (and inspect) budget, used and left, to a job's view."""
        _model, policy = load_model(session, view["model"])
        access = policy.access or AccessPolicy()
        since = now - dt.timedelta(seconds=self._config.window_s)
        requester, model = view["requester"], view["model"]
        budgets = [
            (
                "Output budget (this window)",
                self._released(session, requester, model, Job.released_at > since),
                access.output_bytes_per_window,
            )
        ]
        if view["kind"] == "inspect":
            budgets.append(
                (
                    "Inspect budget (in all)",
                    self._released(session, requester, model, Job.kind == "inspect"),
                    access.inspect_bytes_total,
                )
            )
        view["budgets"] = [
            {
                "name": name,
                "used": size_text(used),
                "left": size_text(max(limit - used, 0)),
                "limit": size_text(limit),
                "share": f"{min(used / limit, 9.99) if limit else 1.0:.0%}",
                "exhausted": used >= limit,
            }
            for name, used, limit in budgets
        ]
        row = session.get(Job, view["id"])
        released = row.released_bytes if row is not None else None
        view["released"] = size_text(released) if released is not None else None
        view["output_limit_text"] = size_text(view["output_limit"])
        view["approved"] = sum(1 for a in view["approvals"] if a["decision"] == "approve")

    def jobs(self, ctx: RequestContext, group: str) -> list[dict[str, Any]]:
        """Jobs in ``group`` (a :data:`JOB_GROUPS` key) this principal may see, newest first."""
        principal = require_role(ctx, *ROLES)
        statuses = JOB_GROUPS[group]
        items = [j for j in self._jobs.list(ctx, None) if j["status"] in statuses]
        items = list(reversed(items))[:200]
        now = self._clock()
        with self._store.session(read_only=True) as session:
            for item in items:
                self._budgets(session, item, now)
                item["mine"] = item["requester"] == principal.name
        return items

    def job(self, ctx: RequestContext, job_id: str) -> dict[str, Any]:
        """One job, with what an approver needs to decide it and whether this principal may."""
        view = self._jobs.get(ctx, job_id)
        principal = ctx.principal
        assert principal is not None
        with self._store.session(read_only=True) as session:
            self._budgets(session, view, self._clock())
            _model, policy = load_model(session, view["model"])
            version = session.get(ModelVersion, (view["model"], view["version"]))
            view["version_digest"] = root_digest_of(version.signature) if version else ""
            for approval in view["approvals"]:
                approval["kind"] = signed_with(session, _key_id(session, view["id"], approval))
            view["approvers"] = list(policy.approvers)
        view["mine"] = view["requester"] == principal.name
        view["may_decide"] = may_decide(principal, view)
        return view


def _key_id(session: Session, job_id: str, approval: dict[str, Any]) -> str:
    """The key id an approval of ``job_id`` was signed with (the jobs room's view omits it)."""
    key_id = session.scalar(
        select(JobApproval.key_id).where(
            JobApproval.job_id == job_id, JobApproval.approver == approval["approver"]
        )
    )
    return str(key_id or "")
