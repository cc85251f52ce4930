"""JSON request bodies: strict (no extra fields, no type coercion), bounded; and the bounded
``status`` query filter of the list routes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

__all__ = [
    "ApprovalIn",
    "ModelIn",
    "PolicyIn",
    "PrincipalIn",
    "PrincipalPatch",
    "RequestIn",
    "StatusFilter",
    "StrictBody",
    "TokenIn",
]


StatusFilter = Annotated[str | None, Query(max_length=16)]
"""The optional ``status`` a list route filters by (``= None`` in the handler), kept short."""


class StrictBody(BaseModel):
    """Every JSON body: an unknown field or a value of the wrong type is refused, not coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


class PrincipalIn(StrictBody):
    name: str = Field(max_length=64)
    roles: list[str] = Field(max_length=5)
    recipient: str | None = Field(default=None, max_length=200)
    approval_key_pem: str | None = Field(default=None, max_length=4096)


class PrincipalPatch(StrictBody):
    roles: list[str] | None = Field(default=None, max_length=5)
    recipient: str | None = Field(default=None, max_length=200)
    approval_key_pem: str | None = Field(default=None, max_length=4096)
    disabled: StrictBool | None = None


class TokenIn(StrictBody):
    label: str = Field(default="", max_length=128)


class ModelIn(StrictBody):
    name: str = Field(max_length=128)
    policy: dict[str, Any]


class PolicyIn(StrictBody):
    policy: dict[str, Any]


class RequestIn(StrictBody):
    model: str = Field(max_length=128)
    version: str = Field(max_length=64)
    justification: str = Field(max_length=2000)
    duration_s: StrictInt = Field(ge=1, le=30 * 24 * 3600)
    byte_budget: StrictInt = Field(ge=1, le=1 << 50)
    purpose: Literal["pull", "deploy", "release"] = "pull"
    """``deploy`` and ``release`` go through the model's release gate (:mod:`..gates`)."""


class ApprovalIn(StrictBody):
    envelope: str = Field(max_length=24_000)
