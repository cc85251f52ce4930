"""Routes of the gates room (attestations on versions, gate checks) and of the risk register."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import Field

from weightvault.custody.context import RequestContext
from weightvault.custody.gates import Gates
from weightvault.custody.http.bodies import StrictBody
from weightvault.custody.http.deps import Action
from weightvault.custody.risk import RiskRegister

__all__ = ["gates_router"]


class AttestationIn(StrictBody):
    """An attestation to attach: a Sigstore bundle or a custody job result, base64."""

    attestation: str = Field(max_length=700_000)


class GateCheckIn(StrictBody):
    purpose: Literal["deploy", "release"]


class OverrideIn(StrictBody):
    """Break-glass: k Shamir shares of the service KEK and the reason."""

    purpose: Literal["deploy", "release"]
    shares: list[str] = Field(max_length=255)
    reason: str = Field(max_length=2000)


class RiskIn(StrictBody):
    """A risk entry (:func:`weightvault.custody.risk.parse_entry` checks its fields)."""

    entry: dict[str, Any]


class RiskChangesIn(StrictBody):
    """The fields of a risk entry to replace (:func:`~weightvault.custody.risk.parse_entry`)."""

    changes: dict[str, Any]


class RiskCloseIn(StrictBody):
    """Why a risk entry is closed."""

    reason: str = Field(max_length=2000)


def gates_router(gates: Gates, risks: RiskRegister, action: Action) -> APIRouter:
    router = APIRouter()
    base = "/v1/models/{model}/versions/{version}"

    @router.post(f"{base}/attestations", status_code=201)
    def attach(
        model: str,
        version: str,
        body: AttestationIn,
        ctx: RequestContext = Depends(action("gate.attach")),
    ) -> dict[str, Any]:
        return gates.attach(ctx, model, version, body.attestation)

    @router.get(f"{base}/attestations")
    def list_attestations(
        model: str, version: str, ctx: RequestContext = Depends(action("gate.attestations"))
    ) -> list[dict[str, Any]]:
        return gates.list_attestations(ctx, model, version)

    @router.post(f"{base}/gate")
    def check(
        model: str,
        version: str,
        body: GateCheckIn,
        ctx: RequestContext = Depends(action("gate.check")),
    ) -> dict[str, Any]:
        return gates.check(ctx, model, version, body.purpose)

    @router.post(f"{base}/gate/override", status_code=201)
    def override(
        model: str,
        version: str,
        body: OverrideIn,
        ctx: RequestContext = Depends(action("gate.override")),
    ) -> dict[str, Any]:
        return gates.override(ctx, model, version, body.purpose, body.shares, body.reason)

    @router.post("/v1/models/{model}/risks", status_code=201)
    def add_risk(
        model: str, body: RiskIn, ctx: RequestContext = Depends(action("risk.add"))
    ) -> dict[str, Any]:
        return risks.add(ctx, model, body.entry)

    @router.patch("/v1/models/{model}/risks/{risk_id}")
    def update_risk(
        model: str,
        risk_id: str,
        body: RiskChangesIn,
        ctx: RequestContext = Depends(action("risk.update")),
    ) -> dict[str, Any]:
        return risks.update(ctx, model, risk_id, body.changes)

    @router.post("/v1/models/{model}/risks/{risk_id}/close")
    def close_risk(
        model: str,
        risk_id: str,
        body: RiskCloseIn,
        ctx: RequestContext = Depends(action("risk.close")),
    ) -> dict[str, Any]:
        return risks.close(ctx, model, risk_id, body.reason)

    @router.get("/v1/models/{model}/risks")
    def list_risks(
        model: str, ctx: RequestContext = Depends(action("risk.list"))
    ) -> list[dict[str, Any]]:
        return risks.list(ctx, model)

    return router
