"""The gates room: attestations attached to model versions, and the release gate every
``deploy`` or ``release`` grant request goes through.

Anyone who holds an evaluation, a risk assessment or an audit statement about a version (the
model's owner, an auditor, a researcher with a custody ``evaluate`` job's signed result)
attaches it; it is stored as offered and verified each time the gate decides, so an attestation
that has expired, or whose signer was dropped from the policy, stops counting at once.

The gate (:meth:`Gates.gate_request`) runs when a reader files a ``deploy`` or ``release``
request, and again when the approval that would activate it arrives. Each decision, allowed or
refused, is a ``gate.decision`` entry in the transparency log naming the version's root digest
and the digests of the attestations relied on (refused: one line per missing or failing item).
The only override is break-glass (:meth:`Gates.override`): an admin presents k of the officers'
Shamir shares of the service KEK; the service rebuilds the key, proves it is its own KEK, and
records a one-time waiver for one version and purpose (``gate.override`` in the log, marked
``breakglass``). The next gated request for that version uses it up, and its decision entry
says ``override``.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import secrets
from typing import Any

from sqlalchemy import Boolean, Integer, LargeBinary, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from weightvault import _b64 as b64
from weightvault.custody import _names
from weightvault.custody.approvals import format_time
from weightvault.custody.audit import AuditTrail
from weightvault.custody.context import ROLES, RequestContext, Room, Shared, require_role
from weightvault.custody.errors import NotFoundError, found
from weightvault.custody.gates_policy import (
    GATED_PURPOSES,
    Evidence,
    GateDecision,
    decide,
    parse_evidence,
)
from weightvault.custody.jobs_runner import root_digest_of
from weightvault.custody.models import load_model
from weightvault.custody.store import Base, GrantRequest, ModelVersion, _UtcDateTime
from weightvault.errors import FormatError, PolicyError

__all__ = [
    "DECISION_ACTION",
    "OVERRIDE_ACTION",
    "PURPOSES",
    "GateRecord",
    "GateWaiver",
    "Gates",
    "VersionAttestation",
]

DECISION_ACTION = "gate.decision"
"""The audit log action of every gate decision (the incident timeline shows it)."""
OVERRIDE_ACTION = "gate.override"
"""The audit log action of a break-glass override (a one-time waiver of a version's gate)."""
PURPOSES = ("pull", *GATED_PURPOSES)
_WAIVER_TTL = dt.timedelta(hours=1)
_ATTACH_ROLES = ("admin", "owner", "auditor", "researcher", "approver")


class VersionAttestation(Base):
    """An attestation attached to a model version, stored exactly as offered."""

    __tablename__ = "version_attestations"
    digest: Mapped[str] = mapped_column(String(80), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    suite: Mapped[str] = mapped_column(String(256))
    custody: Mapped[bool] = mapped_column(Boolean)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    added_by: Mapped[str] = mapped_column(String(64))
    added_at: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    log_index: Mapped[int] = mapped_column(Integer)


class GateRecord(Base):
    """The gate decision a gated grant request was filed (and activated) under."""

    __tablename__ = "gate_records"
    request_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))
    decision_json: Mapped[str] = mapped_column(Text)
    log_index: Mapped[int] = mapped_column(Integer)


class GateWaiver(Base):
    """A one-time break-glass waiver of one version's gate for one purpose."""

    __tablename__ = "gate_waivers"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64))
    valid_until: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    used_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    log_index: Mapped[int] = mapped_column(Integer)


def _evidence(row: VersionAttestation) -> Evidence:
    return parse_evidence(row.data)


class Gates(Room):
    """Attestations on versions, gate checks, and the gate of deploy/release requests."""

    def __init__(self, shared: Shared, trail: AuditTrail) -> None:
        super().__init__(shared)
        self._trail = trail
        self.kek: Any = None
        """The service KEK (:class:`~weightvault.custody.kek.ServiceKek`): break-glass shares
        must rebuild this very key. Set by the service."""

    # -- attestations --------------------------------------------------------------------------

    def attach(
        self, ctx: RequestContext, model_name: str, version: str, data_b64: str
    ) -> dict[str, Any]:
        """Attach an attestation (its format is checked now; its signature when the gate runs)."""
        principal = require_role(ctx, *_ATTACH_ROLES)
        _names.check_model_name(model_name)
        _names.check_version_name(version)
        ctx.detail.update(model=model_name, version=version)
        data = b64.decode(data_b64, "attestation", max_size=512 * 1024, canonical=False)
        evidence = parse_evidence(data)
        now = self._clock()
        with self._store.session() as session:
            load_model(session, model_name)
            if session.get(ModelVersion, (model_name, version)) is None:
                raise NotFoundError(f"{model_name}@{version} not found")
            if session.get(VersionAttestation, (evidence.digest, model_name, version)):
                raise PolicyError(f"attestation {evidence.digest} is attached already")
            index, _entry = self._audit(ctx, "allowed", {"attestation": evidence.summary()})
            session.add(
                VersionAttestation(
                    digest=evidence.digest,
                    model=model_name,
                    version=version,
                    kind=evidence.kind,
                    suite=evidence.suite,
                    custody=evidence.custody,
                    data=data,
                    added_by=principal.name,
                    added_at=now,
                    log_index=index,
                )
            )
        return {
            **evidence.summary(),
            "model": model_name,
            "version": version,
            "added_by": principal.name,
            "log_index": index,
        }

    def list_attestations(
        self, ctx: RequestContext, model_name: str, version: str
    ) -> list[dict[str, Any]]:
        require_role(ctx, *ROLES)
        _names.check_model_name(model_name)
        _names.check_version_name(version)
        with self._store.session(read_only=True) as session:
            load_model(session, model_name)
            rows = session.scalars(
                select(VersionAttestation)
                .where(VersionAttestation.model == model_name)
                .where(VersionAttestation.version == version)
                .order_by(VersionAttestation.added_at)
            )
            out = [
                {
                    **_evidence(r).summary(),
                    "added_by": r.added_by,
                    "added_at": format_time(r.added_at),
                    "log_index": r.log_index,
                    "attestation": base64.b64encode(r.data).decode("ascii"),
                }
                for r in rows
            ]
        self._audit(ctx, "allowed", {"model": model_name, "version": version, "count": len(out)})
        return out

    # -- decisions -----------------------------------------------------------------------------

    def _decide(self, session: Session, model_name: str, version: str) -> GateDecision:
        _model, policy = load_model(session, model_name)
        row = found(session.get(ModelVersion, (model_name, version)), f"{model_name}@{version}")
        if policy.release is None:
            raise PolicyError(
                f"the policy of {model_name!r} has no release section; deploy and release "
                "grants need one"
            )
        offered = [
            _evidence(r)
            for r in session.scalars(
                select(VersionAttestation).where(VersionAttestation.model == model_name)
            )
        ]
        needs_log = any(
            r.after_enhancement or any(s.is_custody for s in r.signers)
            for r in policy.release.requirements
        )
        export = self._trail.export() if needs_log else None
        return decide(
            policy.release,
            root_digest_of(row.signature),
            offered,
            now=self._clock(),
            log_export=export,
            log_key_text=self._trail.verifier_key.to_text() if needs_log else None,
        )

    def _record(
        self,
        ctx: RequestContext,
        decision: GateDecision,
        model_name: str,
        version: str,
        purpose: str,
        stage: str,
        request_id: str | None,
    ) -> int:
        """Write the ``gate.decision`` entry (the action is restored afterwards)."""
        action = ctx.action
        ctx.action = DECISION_ACTION
        try:
            index, _entry = self._audit(
                ctx,
                "allowed" if decision.allowed or "override" in ctx.detail else "refused",
                {
                    "model": model_name,
                    "version": version,
                    "purpose": purpose,
                    "stage": stage,
                    "request_id": request_id,
                    "root_digest": decision.root_digest,
                    "allowed": decision.allowed,
                    "relied_on": decision.relied_on,
                    "refusals": decision.refusal_lines(),
                    "findings": [f.to_json() for f in decision.findings],
                },
            )
        finally:
            ctx.action = action
        return index

    def check(
        self, ctx: RequestContext, model_name: str, version: str, purpose: str
    ) -> dict[str, Any]:
        """Decide the gate now without filing a request (logged like any decision)."""
        require_role(ctx, *ROLES)
        _names.check_model_name(model_name)
        _names.check_version_name(version)
        if purpose not in GATED_PURPOSES:
            raise FormatError(f"purpose: expected {' or '.join(GATED_PURPOSES)}")
        with self._store.session(read_only=True) as session:
            decision = self._decide(session, model_name, version)
        index = self._record(ctx, decision, model_name, version, purpose, "check", None)
        return {
            **decision.to_json(),
            "model": model_name,
            "version": version,
            "purpose": purpose,
            "log_index": index,
        }

    def gate_request(
        self, session: Session, ctx: RequestContext, grant: GrantRequest, purpose: str, stage: str
    ) -> None:
        """The gate of a ``deploy``/``release`` request (``stage``: ``request`` when it is filed,
        ``activation`` when the last approval arrives); raise :class:`PolicyError` naming every
        missing or failing attestation (one item each, separated by `` | ``: error messages
        are one line). A ``pull`` passes untouched."""
        if stage == "activation":
            record = session.get(GateRecord, grant.id)
            if record is None:
                return
            purpose = record.purpose
        if purpose not in PURPOSES:
            raise FormatError(f"purpose: expected one of {', '.join(PURPOSES)}")
        if purpose == "pull":
            return
        decision = self._decide(session, grant.model, grant.version)
        waiver = None if decision.allowed else self._waiver(session, grant, purpose)
        if waiver is not None:
            waiver.used_by = grant.id
            ctx.detail.update(override=waiver.id, override_log_index=waiver.log_index)
        index = self._record(ctx, decision, grant.model, grant.version, purpose, stage, grant.id)
        if waiver is not None:
            ctx.detail.pop("override")
            ctx.detail.pop("override_log_index")
        if not decision.allowed and waiver is None:
            raise PolicyError(
                f"release gate: {purpose} of {grant.model}@{grant.version} refused "
                f"(log entry {index}): " + " | ".join(decision.refusal_lines())
            )
        record = session.get(GateRecord, grant.id)
        document = decision.to_json()
        if waiver is not None:
            document["override"] = {
                "waiver": waiver.id,
                "log_index": waiver.log_index,
                "by": waiver.created_by,
                "reason": waiver.reason,
            }
        if record is None:
            session.add(
                GateRecord(
                    request_id=grant.id,
                    purpose=purpose,
                    decision_json=_dumps(document),
                    log_index=index,
                )
            )
        else:
            record.decision_json = _dumps(document)
            record.log_index = index
        session.flush()

    def override(
        self,
        ctx: RequestContext,
        model_name: str,
        version: str,
        purpose: str,
        shares: list[str],
        reason: str,
    ) -> dict[str, Any]:
        """Break-glass: waive the gate of one version for one purpose, once, within the hour.

        Checks, in order: admin; the shares combine (their commitment holds) into a keyring
        key that unwraps what this service's KEK wrapped, i.e. it is the service KEK; then the
        waiver and a ``gate.override`` entry (``breakglass``: true, with the refusals it
        overrides). Officers should split the KEK anew afterwards: the shares were used.
        """
        from weightvault.crypt.recipients.keyring import parse_keyring_text
        from weightvault.custody.breakglass import Share, recover
        from weightvault.errors import VerificationError

        principal = require_role(ctx, "admin")
        _names.check_model_name(model_name)
        _names.check_version_name(version)
        _names.check_justification(reason, "reason")
        ctx.detail.update(model=model_name, version=version, purpose=purpose, breakglass=True)
        if purpose not in GATED_PURPOSES:
            raise FormatError(f"purpose: expected {' or '.join(GATED_PURPOSES)}")
        if not 1 <= len(shares) <= 255:
            raise FormatError("shares: expected 1 to 255 break-glass shares")
        secret = recover([Share.from_text(s) for s in shares])
        try:
            rebuilt = parse_keyring_text(secret.decode("ascii") + "\n", "break-glass shares")
        except (UnicodeDecodeError, FormatError) as exc:
            raise VerificationError("the shares do not rebuild a keyring key") from exc
        probe = os.urandom(32)
        if rebuilt is None or self.kek is None or self.kek.unwrap(rebuilt.wrap(probe)) != probe:
            raise VerificationError("the shares rebuild a key that is not this service's KEK")
        now = self._clock()
        with self._store.session() as session:
            decision = self._decide(session, model_name, version)
            action = ctx.action
            ctx.action = OVERRIDE_ACTION
            index, _entry = self._audit(
                ctx,
                "allowed",
                {
                    "breakglass": True,
                    "reason": reason,
                    "shares": len(shares),
                    "root_digest": decision.root_digest,
                    "gate_allowed": decision.allowed,
                    "overrides": decision.refusal_lines(),
                },
            )
            ctx.action = action
            waiver = GateWaiver(
                id=secrets.token_hex(16),
                model=model_name,
                version=version,
                purpose=purpose,
                reason=reason,
                created_by=principal.name,
                valid_until=now + _WAIVER_TTL,
                log_index=index,
            )
            session.add(waiver)
        return {
            "waiver": waiver.id,
            "model": model_name,
            "version": version,
            "purpose": purpose,
            "valid_until": format_time(waiver.valid_until),
            "overrides": decision.refusal_lines(),
            "log_index": index,
        }

    def _waiver(self, session: Session, grant: GrantRequest, purpose: str) -> GateWaiver | None:
        """The unused, unexpired waiver for this request's version and purpose (or the one this
        request took already, at its activation)."""
        rows = session.scalars(
            select(GateWaiver).where(
                GateWaiver.model == grant.model,
                GateWaiver.version == grant.version,
                GateWaiver.purpose == purpose,
            )
        )
        now = self._clock()
        for row in rows:
            if row.used_by == grant.id or (row.used_by is None and row.valid_until > now):
                return row
        return None

    @staticmethod
    def request_view(session: Session, request_id: str) -> dict[str, Any]:
        """What approvers see beside a request: its purpose and the gate's findings (the
        assessment summary, the evaluation results, the digests relied on)."""
        import json

        record = session.get(GateRecord, request_id)
        if record is None:
            return {"purpose": "pull"}
        return {
            "purpose": record.purpose,
            "gate": {**json.loads(record.decision_json), "log_index": record.log_index},
        }


def _dumps(document: dict[str, Any]) -> str:
    import json

    return json.dumps(document, sort_keys=True)
