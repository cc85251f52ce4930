"""A model's custody policy: who may sign uploads, M-of-N approval, grant limits, egress budget.

Stored as strict JSON with the model. Parsing refuses unknown fields, wrong types (a bool is not
an int), an M larger than N, and policies that would allow standing access (M < 1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from weightvault._json import load_object
from weightvault.access.policy import AccessPolicy
from weightvault.custody import _names
from weightvault.custody.gates_policy import ReleasePolicy
from weightvault.errors import FormatError

__all__ = ["MAX_POLICY_BYTES", "ModelPolicy", "SignerRule"]

MAX_POLICY_BYTES = 256 * 1024
_MAX_SIGNERS = 32
_MAX_APPROVERS = 64
_MAX_PEM = 8192


@dataclass(frozen=True)
class SignerRule:
    """One signer the model's uploads may be signed by: a public key (PEM)."""

    public_key_pem: str
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "public_key_pem": self.public_key_pem}

    @classmethod
    def from_dict(cls, doc: object, where: str) -> SignerRule:
        if not isinstance(doc, dict):
            raise FormatError(f"{where}: expected an object")
        extra = set(doc) - {"name", "public_key_pem"}
        if extra:
            raise FormatError(f"{where}: unknown field {sorted(extra)[0]}")
        pem = doc.get("public_key_pem")
        if not isinstance(pem, str) or not pem.startswith("-----BEGIN PUBLIC KEY-----"):
            raise FormatError(f"{where}.public_key_pem: expected a PEM public key")
        if len(pem) > _MAX_PEM:
            raise FormatError(f"{where}.public_key_pem: longer than {_MAX_PEM} characters")
        name = doc.get("name", "")
        if not isinstance(name, str) or len(name) > 128:
            raise FormatError(f"{where}.name: expected a string of at most 128 characters")
        return cls(public_key_pem=pem, name=name)


@dataclass(frozen=True)
class ModelPolicy:
    """Custody rules for one model."""

    approvers: tuple[str, ...]
    """The N principals whose approvals count (each must hold the approver role)."""
    approvals_required: int = 2
    """M: distinct approvers needed, none of them the requester."""
    signers: tuple[SignerRule, ...] = field(default_factory=tuple)
    """Uploads must carry an OMS signature from one of these keys."""
    max_grant_duration_s: int = 24 * 3600
    max_grant_bytes: int = 1 << 40
    approval_validity_s: int = 24 * 3600
    """Longest an approval statement may stay valid (its ``expires_at - issued_at``)."""
    request_ttl_s: int = 7 * 24 * 3600
    """A pending request expires after this long."""
    egress_bytes_per_window: int = 1 << 40
    """Model-wide egress budget over the service's window."""
    access: AccessPolicy | None = None
    """Structured access (jobs next to the weights); None: no jobs."""
    release: ReleasePolicy | None = None
    """Release gate: attestations a version needs before ``deploy`` or ``release`` grants
    (docs/release-gates.md); None: no gate."""
    fingerprint: bool = False
    """Pulls deliver each grant its own fingerprinted copy of the safetensors files
    (``weightvault.fingerprint``); the fingerprint id is in the audit log."""

    def __post_init__(self) -> None:
        if self.approvals_required < 1:
            raise FormatError("policy.approvals_required: must be at least 1 (no standing access)")
        if self.approvals_required > len(self.approvers):
            raise FormatError(
                "policy.approvals_required: larger than the number of approvers",
                hint="name at least M approvers",
            )
        if len(set(self.approvers)) != len(self.approvers):
            raise FormatError("policy.approvers: listed twice")

    def to_json(self) -> str:
        doc = {
            "approval_validity_s": self.approval_validity_s,
            "approvals_required": self.approvals_required,
            "approvers": list(self.approvers),
            "egress_bytes_per_window": self.egress_bytes_per_window,
            "max_grant_bytes": self.max_grant_bytes,
            "max_grant_duration_s": self.max_grant_duration_s,
            "request_ttl_s": self.request_ttl_s,
            "signers": [s.to_dict() for s in self.signers],
        }
        if self.access is not None:
            doc["access"] = self.access.to_dict()
        if self.release is not None:
            doc["release"] = self.release.to_dict()
        if self.fingerprint:
            doc["fingerprint"] = True
        return json.dumps(doc, sort_keys=True)

    def to_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.to_json())
        return result

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelPolicy:
        return cls.from_dict(load_object(text, "policy", max_bytes=MAX_POLICY_BYTES))

    @classmethod
    def from_dict(cls, doc: object) -> ModelPolicy:
        if not isinstance(doc, dict):
            raise FormatError("policy: expected a JSON object")
        known = {
            "access",
            "approval_validity_s",
            "approvals_required",
            "approvers",
            "egress_bytes_per_window",
            "fingerprint",
            "max_grant_bytes",
            "max_grant_duration_s",
            "release",
            "request_ttl_s",
            "signers",
        }
        extra = set(doc) - known
        if extra:
            raise FormatError(f"policy: unknown field {sorted(extra)[0]}")
        approvers = doc.get("approvers")
        if not isinstance(approvers, list) or len(approvers) > _MAX_APPROVERS:
            raise FormatError(f"policy.approvers: expected a list of at most {_MAX_APPROVERS}")
        names = tuple(
            _names.check_principal_name(a, f"policy.approvers[{i}]")
            for i, a in enumerate(approvers)
        )
        signers_doc = doc.get("signers", [])
        if not isinstance(signers_doc, list) or len(signers_doc) > _MAX_SIGNERS:
            raise FormatError(f"policy.signers: expected a list of at most {_MAX_SIGNERS}")
        signers = tuple(
            SignerRule.from_dict(s, f"policy.signers[{i}]") for i, s in enumerate(signers_doc)
        )
        defaults = cls  # class attributes hold the dataclass defaults

        def integer(name: str, default: int, check: Any) -> int:
            value = doc.get(name, default)
            result: int = check(value, f"policy.{name}")
            return result

        def count(value: object, where: str) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise FormatError(f"{where}: expected an integer")
            if not 1 <= value <= _MAX_APPROVERS:
                raise FormatError(f"{where}: must be between 1 and {_MAX_APPROVERS}")
            return value

        fingerprint = doc.get("fingerprint", False)
        if not isinstance(fingerprint, bool):
            raise FormatError("policy.fingerprint: expected true or false")
        access = AccessPolicy.from_dict(doc["access"]) if "access" in doc else None
        if access is not None and max(access.approvals.values()) > len(names):
            raise FormatError("policy.access.approvals: more than the number of approvers")
        return cls(
            access=access,
            release=ReleasePolicy.from_dict(doc["release"]) if "release" in doc else None,
            fingerprint=fingerprint,
            approvers=names,
            approvals_required=integer("approvals_required", 2, count),
            signers=signers,
            max_grant_duration_s=integer(
                "max_grant_duration_s", defaults.max_grant_duration_s, _names.check_duration
            ),
            max_grant_bytes=integer(
                "max_grant_bytes", defaults.max_grant_bytes, _names.check_byte_count
            ),
            approval_validity_s=integer(
                "approval_validity_s", defaults.approval_validity_s, _names.check_duration
            ),
            request_ttl_s=integer("request_ttl_s", defaults.request_ttl_s, _names.check_duration),
            egress_bytes_per_window=integer(
                "egress_bytes_per_window",
                defaults.egress_bytes_per_window,
                _names.check_byte_count,
            ),
        )
