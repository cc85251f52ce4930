"""The models room: the registry of models (owner and custody policy) and their versions.

An owner registers a model with its policy (who signs uploads, who approves, M, limits); the
inventory lists every version with its files, digests, signer, who holds access now, and how
long it would take to exfiltrate at the model's egress budget. Versions are added by the push
pipeline (:mod:`.push`).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from weightvault.custody import _names
from weightvault.custody.approvals import format_time
from weightvault.custody.context import RequestContext, Room, require_role
from weightvault.custody.errors import ConflictError, found
from weightvault.custody.policy import ModelPolicy
from weightvault.custody.store import GrantRequest, Model, ModelVersion, Principal, VersionFile
from weightvault.errors import PolicyError

__all__ = ["Models", "check_approvers", "load_model"]


def load_model(session: Session, name: str, *, lock: bool = False) -> tuple[Model, ModelPolicy]:
    """A registered model and its policy (``lock``: the row is held ``FOR UPDATE``)."""
    model = found(
        session.get(Model, _names.check_model_name(name), with_for_update=lock), f"model {name!r}"
    )
    return model, ModelPolicy.from_json(model.policy_json)


def check_approvers(session: Session, policy: ModelPolicy) -> None:
    """Every approver a policy names is a principal with the approver role and a key."""
    for approver in policy.approvers:
        principal = session.get(Principal, approver)
        if principal is None or "approver" not in principal.role_set:
            raise PolicyError(
                f"policy.approvers: {approver!r} is not a principal with the approver role"
            )
        if principal.approval_key_id is None:
            raise PolicyError(f"policy.approvers: {approver!r} has no approval key")


def _structured_access(policy: ModelPolicy, size: int, window_s: int) -> dict[str, Any]:
    """Extraction arithmetic of the model's job output budget (none without jobs)."""
    if policy.access is None:
        return {}
    from weightvault.access.policy import extraction_days

    budget = policy.access.output_bytes_per_window
    return {
        "job_output_bytes_per_window": budget,
        "days_to_emit_size_through_jobs": extraction_days(size, budget, window_s),
    }


class Models(Room):
    """Model registration, policies, and the inventory."""

    def create_model(self, ctx: RequestContext, name: str, policy_doc: object) -> dict[str, Any]:
        principal = require_role(ctx, "owner", "admin")
        _names.check_model_name(name, "name")
        policy = ModelPolicy.from_dict(policy_doc)
        with self._store.session() as session:
            if session.get(Model, name) is not None:
                raise ConflictError(f"model {name!r} exists already")
            check_approvers(session, policy)
            session.add(
                Model(
                    name=name,
                    owner=principal.name,
                    policy_json=policy.to_json(),
                    created_at=self._clock(),
                )
            )
            self._audit(ctx, "allowed", {"model": name, "policy": policy.to_dict()})
        return {"name": name, "owner": principal.name, "policy": policy.to_dict()}

    def set_policy(self, ctx: RequestContext, name: str, policy_doc: object) -> dict[str, Any]:
        principal = require_role(ctx, "owner", "admin")
        _names.check_model_name(name, "model")
        policy = ModelPolicy.from_dict(policy_doc)
        with self._store.session() as session:
            model = found(session.get(Model, name), f"model {name!r}")
            if model.owner != principal.name and "admin" not in principal.role_set:
                raise PolicyError(f"only the owner of {name!r} or an admin may change its policy")
            check_approvers(session, policy)
            old = model.policy_json
            model.policy_json = policy.to_json()
            self._audit(
                ctx,
                "allowed",
                {"model": name, "old": json.loads(old), "new": policy.to_dict()},
            )
        return {"name": name, "policy": policy.to_dict()}

    def inventory(self, ctx: RequestContext) -> list[dict[str, Any]]:
        """Every model and version: owner, size, digests, signer, who has access, and the time it
        would take to exfiltrate it at the configured budgets.

        Admins and auditors see every model; an owner sees only the models it owns (who holds
        access to someone else's weights is need-to-know).
        """
        principal = require_role(ctx, "admin", "auditor", "owner")
        sees_all = bool(principal.role_set & {"admin", "auditor"})
        now = self._clock()
        out = []
        with self._store.session() as session:
            query = select(Model).order_by(Model.name)
            if not sees_all:
                query = query.where(Model.owner == principal.name)
            for model in session.scalars(query):
                policy = ModelPolicy.from_json(model.policy_json)
                out.append(
                    {
                        "model": model.name,
                        "owner": model.owner,
                        "approvals_required": policy.approvals_required,
                        "approvers": list(policy.approvers),
                        "egress_bytes_per_window": policy.egress_bytes_per_window,
                        "window_s": self._config.window_s,
                        "versions": self._versions(session, model.name, policy, now),
                    }
                )
            self._audit(ctx, "allowed", {"models": len(out)})
        return out

    def _versions(
        self, session: Session, model: str, policy: ModelPolicy, now: dt.datetime
    ) -> list[dict[str, Any]]:
        """The inventory's view of a model's versions, oldest first."""
        # The model budget caps every principal together: size / (budget / window).
        rate = policy.egress_bytes_per_window / self._config.window_s
        versions = []
        for version in session.scalars(
            select(ModelVersion)
            .where(ModelVersion.model == model)
            .order_by(ModelVersion.registered_at)
        ):
            files = session.scalars(
                select(VersionFile)
                .where(VersionFile.model == model, VersionFile.version == version.version)
                .order_by(VersionFile.index)
            ).all()
            grants = session.scalars(
                select(GrantRequest).where(
                    GrantRequest.model == model,
                    GrantRequest.version == version.version,
                    GrantRequest.status == "active",
                )
            ).all()
            access = sorted(
                {
                    g.requester
                    for g in grants
                    if g.grant_expires_at is not None and g.grant_expires_at > now
                }
            )
            versions.append(
                {
                    "version": version.version,
                    "size": version.size,
                    "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files],
                    "signer": version.signer,
                    "registered_by": version.registered_by,
                    "registered_at": format_time(version.registered_at),
                    "access": access,
                    "time_to_exfiltrate_s": version.size / rate,
                    **_structured_access(policy, version.size, self._config.window_s),
                }
            )
        return versions
