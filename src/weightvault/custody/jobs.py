"""The jobs room: structured access. Researchers and auditors run jobs next to the weights;
the weights stay, and only each job's declared outputs leave, once, within budgets, on record.

A job names a model version, a kind (query, evaluate, finetune, inspect) and the kind's
parameters and inputs (:mod:`weightvault.access.spec`). The model's policy (``access``,
:class:`~weightvault.access.policy.AccessPolicy`) says which tier (role) may run which kind and
how many approvals each kind needs. Approvals are the same Ed25519 statements as for grants
(:mod:`.approvals`); the terms they bind name the job id, and the justification they bind
starts with the kind and the digest of the whole job request, so an approval of one job fails
for every other job and for any change to its inputs.

Release (:meth:`Jobs.release`), in order: (1) the caller is the requester and the job
succeeded and was never released; (2) the signed result's size is debited from the principal's
output budget, the inspect total (inspect jobs) and the model's egress budget, or the release
is refused and nothing leaves; (3) the release is appended to the transparency log (request
digest, approvals, model root digest, worker environment, outputs digest) *before* the result
exists; (4) the job is marked released in the same transaction, so a retry gets nothing;
(5) the result is signed as an in-toto statement that names its log entry.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from weightvault._json import load_object
from weightvault.access.policy import AccessPolicy
from weightvault.access.result import (
    digest_of,
    make_result_statement,
    public_key_id,
    sign_result,
)
from weightvault.access.spec import JobRequest, parse_job_request
from weightvault.custody import _names, deciding
from weightvault.custody.approvals import RequestTerms, format_time
from weightvault.custody.budgets import debit_window, record_release, window_used
from weightvault.custody.context import ROLES, RequestContext, Shared, require_role
from weightvault.custody.deciding import Decision, DecisionRoom
from weightvault.custody.errors import ConflictError, NotFoundError, found
from weightvault.custody.jobs_runner import JobRunner, root_digest_of
from weightvault.custody.models import load_model
from weightvault.custody.policy import ModelPolicy
from weightvault.custody.store import Job, JobApproval, ModelVersion, Principal
from weightvault.errors import FormatError, PolicyError, VerificationError

__all__ = ["JOB_STATUSES", "Jobs", "check_job_open", "job_terms"]

JOB_STATUSES = (
    "pending", "approved", "running", "succeeded", "failed", "killed", "denied", "cancelled",
    "released",
)  # fmt: skip
_JOB_ROLES = ("researcher", "auditor")


def job_terms(job: Job) -> RequestTerms:
    """The terms an approval of ``job`` binds (its justification carries the request digest)."""
    justification = f"{job.kind} job {job.request_digest}: {job.justification}"
    return RequestTerms.of_row(job, justification, job.wall_s, job.output_limit)


def check_job_open(name: str, job: Job, now: dt.datetime) -> None:
    """Checks (2)-(3) of :meth:`Jobs.decide`: not ``name``'s own job; pending, not expired."""
    deciding.check_pending(name, job.requester, job.status, "job")
    if job.expires_at <= now:
        raise PolicyError("job request has expired; submit it again")


class Jobs(DecisionRoom[Job, JobApproval]):
    """Submission, approval, status, cancellation and the one-time release of job results."""

    what = "job"

    def __init__(self, shared: Shared, runner: JobRunner, sign: Any, public_key: bytes) -> None:
        super().__init__(shared)
        self.runner = runner
        self._sign = sign
        self._key_id = public_key_id(public_key)

    # -- views ---------------------------------------------------------------------------------

    def _view(self, job: Job, approvals: list[JobApproval], *, full: bool) -> dict[str, Any]:
        request = json.loads(job.request_json)
        view: dict[str, Any] = {
            "id": job.id,
            "model": job.model,
            "version": job.version,
            "requester": job.requester,
            "kind": job.kind,
            "justification": job.justification,
            "parameters": request["parameters"],
            "request_digest": job.request_digest,
            "status": job.status,
            "reason": job.reason,
            "approvals_required": job.approvals_required,
            "approvals": [
                {"approver": a.approver, "decision": a.decision, "log_index": a.log_index}
                for a in approvals
            ],
            "wall_s": job.wall_s,
            "output_limit": job.output_limit,
            "created_at": format_time(job.created_at),
            "finished_at": format_time(job.finished_at) if job.finished_at else None,
            "output_bytes": len(job.outputs) if job.outputs is not None else None,
            "derived_version": job.derived_version,
            "terms_digest": job_terms(job).digest(),
        }
        if full:
            view["request"] = request
        return view

    @staticmethod
    def _sees(principal: Principal, job: Job, owner: str, policy: ModelPolicy) -> bool:
        return bool(
            job.requester == principal.name
            or "admin" in principal.role_set
            or principal.name == owner
            or principal.name in policy.approvers
        )

    def _approvals(self, session: Session, item_id: str) -> list[JobApproval]:
        return list(session.scalars(select(JobApproval).where(JobApproval.job_id == item_id)))

    # -- submit --------------------------------------------------------------------------------

    def submit(
        self, ctx: RequestContext, document: dict[str, Any], justification: str
    ) -> dict[str, Any]:
        """File a job. Checks: tier may run the kind; the version exists; the principal's
        queries in the window are under the policy's count; then it waits for its approvals
        (or, with none required, starts at once)."""
        principal = require_role(ctx, *_JOB_ROLES)
        _names.check_justification(justification)
        request = parse_job_request(document)
        _names.check_model_name(request.model, "model")
        _names.check_version_name(request.version, "version")
        now = self._clock()
        since = now - dt.timedelta(seconds=self._config.window_s)
        with self._store.session() as session:
            _model, policy = load_model(session, request.model, lock=True)
            access = policy.access
            if access is None:
                raise PolicyError(f"the policy of {request.model!r} allows no jobs")
            if request.kind not in access.kinds_for(principal.role_set):
                raise PolicyError(
                    f"{principal.name!r} may not run {request.kind} jobs on {request.model!r} "
                    f"(tier {', '.join(sorted(principal.role_set & set(_JOB_ROLES)))})"
                )
            if session.get(ModelVersion, (request.model, request.version)) is None:
                raise NotFoundError(f"{request.model}@{request.version} not found")
            submitted = session.scalar(
                select(func.count())
                .select_from(Job)
                .where(
                    Job.requester == principal.name,
                    Job.model == request.model,
                    Job.created_at > since,
                )
            )
            if int(submitted or 0) >= access.queries_per_window:
                raise PolicyError(
                    f"query budget exhausted: {submitted} of {access.queries_per_window} jobs "
                    "in the window"
                )
            required = access.approvals[request.kind]
            job = Job(
                id=secrets.token_hex(16),
                model=request.model,
                version=request.version,
                requester=principal.name,
                kind=request.kind,
                justification=justification,
                request_json=request.to_json(),
                request_digest=request.digest(),
                status="pending" if required else "approved",
                approvals_required=required,
                wall_s=access.wall_s,
                output_limit=access.output_bytes_per_window,
                created_at=now,
                expires_at=now + dt.timedelta(seconds=policy.request_ttl_s),
            )
            session.add(job)
            session.flush()
            view = self._view(job, [], full=False)
            self._audit(
                ctx,
                "allowed",
                {
                    "job": view,
                    "inputs_digest": request.inputs_digest(),
                    "terms_digest": view["terms_digest"],
                },
            )
        if job.status == "approved":
            self.runner.start(job.id)
        return view

    # -- decisions (the steps: :meth:`.deciding.DecisionRoom.decide`) ----------------------------

    def _locked(self, session: Session, item_id: str) -> Job | None:
        return session.get(Job, item_id, with_for_update=True)

    def _check_open(self, name: str, job: Job, now: dt.datetime) -> None:
        check_job_open(name, job, now)

    def _terms(self, job: Job) -> RequestTerms:
        return job_terms(job)

    def _apply(
        self,
        session: Session,
        ctx: RequestContext,
        job: Job,
        decision: Decision,
        approvals: list[JobApproval],
    ) -> dict[str, Any]:
        """The job's last approval approves it (:meth:`_committed` starts it)."""
        access = decision.policy.access
        valid = [a for a in approvals if a.decision == "approve" and a.expires_at > decision.now]
        if access is not None:  # a policy tightened meanwhile applies (never loosened)
            job.approvals_required = max(job.approvals_required, access.approvals[job.kind])
        record: dict[str, Any] = {
            "job_id": job.id,
            "model": job.model,
            "version": job.version,
            "requester": job.requester,
            "request_digest": job.request_digest,
            **decision.record(),
        }
        if decision.statement.decision == "deny":
            job.status = "denied"
        elif len(valid) + 1 >= job.approvals_required:
            job.status = "approved"
        record["status"] = job.status
        approval = decision.file(session, ctx, self._audit, record, JobApproval, job_id=job.id)
        return self._view(job, [*approvals, approval], full=False)

    def _committed(self, view: dict[str, Any]) -> None:
        if view["status"] == "approved":  # approved by this decision: it was pending before
            self.runner.start(view["id"])

    # -- reads and cancel ----------------------------------------------------------------------

    def get(self, ctx: RequestContext, job_id: str) -> dict[str, Any]:
        principal = require_role(ctx, *ROLES)
        _names.check_request_id(job_id, "job_id")
        with self._store.session(read_only=True) as session:
            job = found(session.get(Job, job_id), "job")
            model, policy = load_model(session, job.model)
            if not self._sees(principal, job, model.owner, policy):
                raise NotFoundError("job not found")
            view = self._view(job, self._approvals(session, job_id), full=True)
        self._audit(ctx, "allowed", {"job_id": job_id})
        return view

    def list(self, ctx: RequestContext, status: str | None) -> list[dict[str, Any]]:
        principal = require_role(ctx, *ROLES)
        if status is not None and status not in JOB_STATUSES:
            raise FormatError(f"status: expected one of {', '.join(JOB_STATUSES)}")
        out = []
        with self._store.session(read_only=True) as session:
            query = select(Job).order_by(Job.created_at)
            if status:
                query = query.where(Job.status == status)
            for job in session.scalars(query.limit(1000)):
                model, policy = load_model(session, job.model)
                if self._sees(principal, job, model.owner, policy):
                    out.append(self._view(job, self._approvals(session, job.id), full=False))
        self._audit(ctx, "allowed", {"count": len(out)})
        return out

    def cancel(self, ctx: RequestContext, job_id: str) -> dict[str, Any]:
        """Cancel a job that has not been released (a running worker is killed; nothing it
        made is kept). The requester, the model's owner or an admin."""
        principal = require_role(ctx, *ROLES)
        _names.check_request_id(job_id, "job_id")
        with self._store.session() as session:
            job = found(session.get(Job, job_id, with_for_update=True), "job")
            model, _policy = load_model(session, job.model)
            if not (
                job.requester == principal.name
                or model.owner == principal.name
                or "admin" in principal.role_set
            ):
                raise PolicyError("only the requester, the model's owner or an admin may cancel")
            if job.status in ("released", "cancelled", "denied"):
                raise ConflictError(f"job is {job.status} already")
            was = job.status
            job.status = "cancelled"
            job.outputs = None
            job.finished_at = job.finished_at or self._clock()
            self._audit(ctx, "allowed", {"job_id": job_id, "was": was})
            view = self._view(job, self._approvals(session, job_id), full=False)
        if was == "running":
            self.runner.stop(job_id)
        return view

    # -- release -------------------------------------------------------------------------------

    def _sized(self, release: dict[str, Any], outputs: dict[str, Any]) -> int:
        """The most bytes the signed result can take: signed with placeholders as wide as the
        real log index and entry digest can be, so the debit is never below what leaves."""
        wide = {**release, "log": {**release["log"], "index": 10**18, "entry_sha256": "f" * 64}}
        statement = make_result_statement(wide, outputs)
        return len(sign_result(statement, self._sign, self._key_id))

    def release(self, ctx: RequestContext, job_id: str) -> bytes:
        """The job's signed result, once (see the module docstring for the steps)."""
        principal = require_role(ctx, *_JOB_ROLES)
        _names.check_request_id(job_id, "job_id")
        now = self._clock()
        since = now - dt.timedelta(seconds=self._config.window_s)
        with self._store.session() as session:
            # (1)
            job = session.get(Job, job_id, with_for_update=True)
            if job is None or job.requester != principal.name:
                raise NotFoundError("job not found")
            if job.status == "released":
                raise ConflictError("the result of this job was released already; it leaves once")
            if job.status != "succeeded" or job.outputs is None:
                raise ConflictError(f"job is {job.status}; there is no result to release")
            _model, policy = load_model(session, job.model, lock=True)
            session.get(Principal, job.requester, with_for_update=True)
            access = policy.access or AccessPolicy()
            version = session.get(ModelVersion, (job.model, job.version))
            if version is None:
                raise NotFoundError("the job's model version is gone")
            outputs = load_object(job.outputs, "job outputs")
            request = JobRequest.from_json(job.request_json)
            approvals = self._approvals(session, job_id)
            environment = json.loads(job.environment or "{}")
            release: dict[str, Any] = {
                "job_id": job.id,
                "kind": job.kind,
                "model": job.model,
                "version": job.version,
                "requester": job.requester,
                "request_digest": job.request_digest,
                "model_root_digest": root_digest_of(version.signature),
                "outputs_digest": digest_of(outputs),
                "environment_digest": digest_of(environment),
                "parameters": request.parameters,
                "inputs_digest": request.inputs_digest(),
                "approvals": [
                    {
                        "approver": a.approver,
                        "key_id": a.key_id,
                        "log_index": a.log_index,
                        "envelope_sha256": hashlib.sha256(a.envelope).hexdigest(),
                    }
                    for a in approvals
                    if a.decision == "approve"
                ],
                "log": {"origin": self._config.log_origin, "index": 0, "entry_sha256": ""},
            }
            if release["outputs_digest"] != job.outputs_digest:
                raise VerificationError("the stored outputs do not match their recorded digest")
            # (2)
            nbytes = self._sized(release, outputs)
            self._check_budgets(session, job, access, policy, nbytes, since)
            # (3)
            detail = {k: v for k, v in release.items() if k != "log"}
            detail.update(environment=environment, released_bytes=nbytes)
            index, entry = self._audit(ctx, "allowed", detail)
            # (4)
            record_release(session, job.requester, job.model, job.id, nbytes, now)
            job.status = "released"
            job.released_at = now
            job.released_bytes = nbytes
            job.release_log_index = index
            job.outputs = None
        # (5)
        release["log"] = {
            "origin": self._config.log_origin,
            "index": index,
            "entry_sha256": hashlib.sha256(entry).hexdigest(),
        }
        return sign_result(make_result_statement(release, outputs), self._sign, self._key_id)

    def _check_budgets(
        self,
        session: Session,
        job: Job,
        access: AccessPolicy,
        policy: ModelPolicy,
        nbytes: int,
        since: dt.datetime,
    ) -> None:
        def released(*where: Any) -> int:
            total = session.scalar(
                select(func.coalesce(func.sum(Job.released_bytes), 0)).where(
                    Job.requester == job.requester, Job.model == job.model, *where
                )
            )
            return int(total or 0)

        # The output and inspect budgets are the requester's own, read under the requester's
        # row lock (taken by release); the model window is shared with pulls on every replica,
        # so it is spent by one conditional UPDATE (budgets.debit_window), last: a refusal
        # before it spends nothing, and any refusal rolls the whole release back.
        limits = [("output", released(Job.released_at > since), access.output_bytes_per_window)]
        if job.kind == "inspect":
            limits.append(("inspect", released(Job.kind == "inspect"), access.inspect_bytes_total))
        for name, used, budget in limits:
            if used + nbytes > budget:
                raise _over_budget(name, used, budget, nbytes)
        model_budget = policy.egress_bytes_per_window
        if debit_window(session, "model", job.model, nbytes, model_budget, since) is None:
            used = window_used(session, "model", job.model, since)
            raise _over_budget("model egress", used, model_budget, nbytes)


def _over_budget(name: str, used: int, budget: int, nbytes: int) -> PolicyError:
    return PolicyError(
        f"release refused: the {name} byte budget would be exceeded ({used} of "
        f"{budget} bytes used, {nbytes} more needed); nothing was released"
    )
