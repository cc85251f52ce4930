"""JSON request bodies: strict (no extra fields, no type coercion), bounded."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

__all__ = [
    "ApprovalIn",
    "ModelIn",
    "PolicyIn",
    "PrincipalIn",
    "PrincipalPatch",
    "RequestIn",
    "TokenIn",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PrincipalIn(_Body):
    name: str = Field(max_length=64)
    roles: list[str] = Field(max_length=5)
    recipient: str | None = Field(default=None, max_length=200)
    approval_key_pem: str | None = Field(default=None, max_length=4096)


class PrincipalPatch(_Body):
    roles: list[str] | None = Field(default=None, max_length=5)
    recipient: str | None = Field(default=None, max_length=200)
    approval_key_pem: str | None = Field(default=None, max_length=4096)
    disabled: StrictBool | None = None


class TokenIn(_Body):
    label: str = Field(default="", max_length=128)


class ModelIn(_Body):
    name: str = Field(max_length=128)
    policy: dict[str, Any]


class PolicyIn(_Body):
    policy: dict[str, Any]


class RequestIn(_Body):
    model: str = Field(max_length=128)
    version: str = Field(max_length=64)
    justification: str = Field(max_length=2000)
    duration_s: StrictInt = Field(ge=1, le=30 * 24 * 3600)
    byte_budget: StrictInt = Field(ge=1, le=1 << 50)
    purpose: Literal["pull", "deploy", "release"] = "pull"
    """``deploy`` and ``release`` go through the model's release gate (:mod:`..gates`)."""


class ApprovalIn(_Body):
    envelope: str = Field(max_length=24_000)
