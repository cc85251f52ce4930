"""Routes of the gates room (attestations on versions, gate checks) and of the risk register."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import Field

from weightvault.custody.gates import Gates
from weightvault.custody.http.bodies import StrictBody
from weightvault.custody.http.deps import Action, Ctx, room_routes
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
    route = room_routes(router, action)
    base = "/v1/models/{model}/versions/{version}"
    risk = "/v1/models/{model}/risks/{risk_id}"

    @route("POST", f"{base}/attestations", "gate.attach", status_code=201)
    def attach(ctx: Ctx, model: str, version: str, body: AttestationIn) -> dict[str, Any]:
        return gates.attach(ctx, model, version, body.attestation)

    @route("GET", f"{base}/attestations", "gate.attestations")
    def list_attestations(ctx: Ctx, model: str, version: str) -> list[dict[str, Any]]:
        return gates.list_attestations(ctx, model, version)

    @route("POST", f"{base}/gate", "gate.check")
    def check(ctx: Ctx, model: str, version: str, body: GateCheckIn) -> dict[str, Any]:
        return gates.check(ctx, model, version, body.purpose)

    @route("POST", f"{base}/gate/override", "gate.override", status_code=201)
    def override(ctx: Ctx, model: str, version: str, body: OverrideIn) -> dict[str, Any]:
        return gates.override(ctx, model, version, body.purpose, body.shares, body.reason)

    @route("POST", "/v1/models/{model}/risks", "risk.add", status_code=201)
    def add_risk(ctx: Ctx, model: str, body: RiskIn) -> dict[str, Any]:
        return risks.add(ctx, model, body.entry)

    @route("PATCH", risk, "risk.update")
    def update_risk(ctx: Ctx, model: str, risk_id: str, body: RiskChangesIn) -> dict[str, Any]:
        return risks.update(ctx, model, risk_id, body.changes)

    @route("POST", f"{risk}/close", "risk.close")
    def close_risk(ctx: Ctx, model: str, risk_id: str, body: RiskCloseIn) -> dict[str, Any]:
        return risks.close(ctx, model, risk_id, body.reason)

    @route("GET", "/v1/models/{model}/risks", "risk.list")
    def list_risks(ctx: Ctx, model: str) -> list[dict[str, Any]]:
        return risks.list(ctx, model)

    return router
