"""A model's structured-access policy: which tiers run which job kinds, with how many approvals,
within which output budgets and worker limits.

It sits in the model's custody policy under ``"access"`` (absent: no jobs at all). Budgets count
bytes that *leave* (the signed result as released), whatever the job kind, over the service's
budget window, and the model's own egress budget counts them too, beside pulls:

* ``queries_per_window``: jobs one principal may submit against the model per window;
* ``output_bytes_per_window``: result bytes one principal may receive per window;
* ``inspect_bytes_total``: result bytes of ``inspect`` jobs one principal may ever receive.

Extraction arithmetic (:func:`extraction_days`): at ``output_bytes_per_window`` bytes a window,
emitting a number of bytes equal to the weights takes ``size / budget`` windows; a budget far
below the weights' size per window turns a copy into years of requests that all sit in the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from weightvault.access.spec import KINDS
from weightvault.errors import FormatError

__all__ = ["TIERS", "AccessPolicy", "extraction_days"]

TIERS = ("researcher", "auditor")
_DEFAULT_TIERS = {"researcher": ("query", "evaluate"), "auditor": KINDS}
_DEFAULT_APPROVALS = {"query": 1, "evaluate": 1, "finetune": 2, "inspect": 2}


def _int(doc: dict[str, Any], name: str, default: int, low: int, high: int, where: str) -> int:
    value = doc.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FormatError(f"{where}.{name}: expected an integer from {low} to {high}")
    return value


@dataclass(frozen=True)
class AccessPolicy:
    """Structured access to one model (see the module docstring)."""

    tiers: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(_DEFAULT_TIERS))
    """Role -> job kinds that role may run."""
    approvals: dict[str, int] = field(default_factory=lambda: dict(_DEFAULT_APPROVALS))
    """Kind -> distinct approvals a job of that kind needs (0: it runs on submission)."""
    queries_per_window: int = 1000
    output_bytes_per_window: int = 16 << 20
    inspect_bytes_total: int = 1 << 20
    cpu_s: int = 300
    wall_s: int = 600
    memory_bytes: int = 8 << 30

    def kinds_for(self, roles: frozenset[str]) -> set[str]:
        """Every kind any of ``roles`` may run."""
        return {kind for role in roles & set(self.tiers) for kind in self.tiers[role]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "approvals": dict(sorted(self.approvals.items())),
            "cpu_s": self.cpu_s,
            "inspect_bytes_total": self.inspect_bytes_total,
            "memory_bytes": self.memory_bytes,
            "output_bytes_per_window": self.output_bytes_per_window,
            "queries_per_window": self.queries_per_window,
            "tiers": {role: list(kinds) for role, kinds in sorted(self.tiers.items())},
            "wall_s": self.wall_s,
        }

    @classmethod
    def from_dict(cls, doc: object, where: str = "policy.access") -> AccessPolicy:
        if not isinstance(doc, dict):
            raise FormatError(f"{where}: expected an object")
        known = {
            "approvals", "cpu_s", "inspect_bytes_total", "memory_bytes",
            "output_bytes_per_window", "queries_per_window", "tiers", "wall_s",
        }  # fmt: skip
        extra = set(doc) - known
        if extra:
            raise FormatError(f"{where}: unknown field {sorted(extra)[0]}")
        tiers_doc = doc.get("tiers", {r: list(k) for r, k in _DEFAULT_TIERS.items()})
        if not isinstance(tiers_doc, dict):
            raise FormatError(f"{where}.tiers: expected an object of role: [kinds]")
        tiers: dict[str, tuple[str, ...]] = {}
        for role, kinds in tiers_doc.items():
            if role not in TIERS:
                raise FormatError(f"{where}.tiers: unknown tier {role!r} (use {', '.join(TIERS)})")
            if not isinstance(kinds, list) or any(k not in KINDS for k in kinds):
                raise FormatError(f"{where}.tiers.{role}: expected a list of {', '.join(KINDS)}")
            if len(set(kinds)) != len(kinds):
                raise FormatError(f"{where}.tiers.{role}: a kind is listed twice")
            tiers[role] = tuple(kinds)
        approvals_doc = doc.get("approvals", dict(_DEFAULT_APPROVALS))
        if not isinstance(approvals_doc, dict) or set(approvals_doc) - set(KINDS):
            raise FormatError(f"{where}.approvals: expected an object of kind: count")
        approvals = dict(_DEFAULT_APPROVALS)
        for kind, count in approvals_doc.items():
            approvals[kind] = _int(approvals_doc, kind, 1, 0, 64, f"{where}.approvals")
            del count
        return cls(
            tiers=tiers,
            approvals=approvals,
            queries_per_window=_int(doc, "queries_per_window", 1000, 1, 1 << 40, where),
            output_bytes_per_window=_int(
                doc, "output_bytes_per_window", 16 << 20, 1, 1 << 50, where
            ),
            inspect_bytes_total=_int(doc, "inspect_bytes_total", 1 << 20, 1, 1 << 50, where),
            cpu_s=_int(doc, "cpu_s", 300, 1, 7 * 86400, where),
            wall_s=_int(doc, "wall_s", 600, 1, 7 * 86400, where),
            memory_bytes=_int(doc, "memory_bytes", 8 << 30, 64 << 20, 1 << 44, where),
        )


def extraction_days(weight_bytes: int, output_bytes_per_window: int, window_s: int) -> float:
    """Days it takes to receive as many result bytes as the weights hold, at the budget."""
    windows = weight_bytes / max(output_bytes_per_window, 1)
    return windows * window_s / 86400
