"""What one attack run records: its attempts, its accuracy curve and which test examples it got
right, and the strict JSON form a results file keeps them in.

A run's status is ``ok``, ``stalled`` or ``diverged`` (see :mod:`weightvault.tamper.finetune`);
JSON has no NaN or infinity, so a loss that is not finite is written as the string ``"nan"``,
``"inf"`` or ``"-inf"``. Hits are numpy ``packbits`` of one boolean per test example, in base64.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import torch

from weightvault.errors import FormatError
from weightvault.tamper._jsonfiles import field_values, require_object

__all__ = [
    "STATUSES",
    "AttackRun",
    "Attempt",
    "Status",
    "decode_hits",
    "encode_hits",
]

Status = Literal["ok", "stalled", "diverged"]
STATUSES: tuple[str, ...] = ("ok", "stalled", "diverged")


@dataclass(frozen=True)
class Attempt:
    """One try of a fine-tuning attack at one learning rate."""

    lr: float
    status: Status
    loss_first: float
    loss_last: float
    #: Best harmful-task test accuracy along this attempt's curve.
    best_acc: float

    def to_dict(self) -> dict[str, Any]:
        losses = {"loss_first": _num(self.loss_first), "loss_last": _num(self.loss_last)}
        return field_values(self) | losses

    @classmethod
    def from_dict(cls, obj: Any, path: str) -> Attempt:
        require_object(obj, path, {"lr", "status", "loss_first", "loss_last", "best_acc"})
        status = obj["status"]
        if status not in STATUSES:
            raise FormatError(f"{path}.status: expected one of {', '.join(STATUSES)}")
        return cls(
            _unnum(obj["lr"]),
            status,
            _unnum(obj["loss_first"]),
            _unnum(obj["loss_last"]),
            _unnum(obj["best_acc"]),
        )


@dataclass(frozen=True)
class AttackRun:
    """The outcome of one attack (one spec, one seed) against one model."""

    model: str
    attack: str
    kind: str
    family: str
    examples: int
    steps: int
    seed: int
    #: ``ok`` if some attempt trained; ``stalled`` if none diverged but none trained either;
    #: ``diverged`` if every attempt diverged.
    status: Status
    #: ``(step, harmful-task test accuracy)`` pairs of the best attempt, step 0 first.
    curve: tuple[tuple[int, float], ...]
    #: Desired-task test accuracy of the attacked model (is the model still useful after?).
    retain_acc: float | None
    attempts: tuple[Attempt, ...]
    #: For the search adversary: the configuration it selected on its validation split.
    selected: str | None = None
    #: Per curve point: which test examples were right (numpy packbits, base64), for bootstraps.
    hits: tuple[str, ...] = ()

    @property
    def final_acc(self) -> float:
        return self.curve[-1][1]

    @property
    def best_acc(self) -> float:
        """Best accuracy along the curve (the attacker's upper bound, as MLAC reported)."""
        return max(acc for _, acc in self.curve)

    def to_dict(self) -> dict[str, Any]:
        curve = [[step, acc] for step, acc in self.curve]
        return field_values(self) | {
            "curve": curve,
            "attempts": [a.to_dict() for a in self.attempts],
        }

    @classmethod
    def from_dict(cls, obj: Any, path: str) -> AttackRun:
        keys = {f.name for f in fields(cls)}
        require_object(obj, path, keys)
        try:
            curve = tuple((int(s), float(a)) for s, a in obj["curve"])
            attempts = tuple(
                Attempt.from_dict(a, f"{path}.attempts[{i}]") for i, a in enumerate(obj["attempts"])
            )
            if not curve:
                raise FormatError(f"{path}.curve: must not be empty")
            if obj["status"] not in STATUSES:
                raise FormatError(f"{path}.status: expected one of {', '.join(STATUSES)}")
            hits = tuple(obj["hits"])
            if hits and len(hits) != len(curve):
                raise FormatError(f"{path}.hits: one entry per curve point expected")
            if not all(isinstance(h, str) for h in hits):
                raise FormatError(f"{path}.hits: expected base64 strings")
            return cls(
                model=str(obj["model"]),
                attack=str(obj["attack"]),
                kind=str(obj["kind"]),
                family=str(obj["family"]),
                examples=int(obj["examples"]),
                steps=int(obj["steps"]),
                seed=int(obj["seed"]),
                status=obj["status"],
                curve=curve,
                retain_acc=None if obj["retain_acc"] is None else float(obj["retain_acc"]),
                attempts=attempts,
                selected=None if obj["selected"] is None else str(obj["selected"]),
                hits=hits,
            )
        except (TypeError, ValueError) as exc:
            raise FormatError(f"{path}: malformed attack run ({exc})") from exc


def _num(value: float) -> float | str:
    """JSON has no NaN/inf: write them as strings."""
    return value if math.isfinite(value) else repr(value)


def _unnum(value: Any) -> float:
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FormatError(f"expected a number, got {value!r}")
    return float(value)


def encode_hits(correct: torch.Tensor) -> str:
    """Pack a boolean vector (one entry per test example) as base64 text."""
    bits = np.packbits(correct.detach().to("cpu").numpy().astype(np.uint8))
    return base64.b64encode(bits.tobytes()).decode("ascii")


def decode_hits(text: str, size: int) -> np.ndarray:
    """The boolean vector :func:`encode_hits` packed (``size`` test examples)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError) as exc:
        raise FormatError("hits: not base64") from exc
    if len(raw) != (size + 7) // 8:
        raise FormatError(f"hits: {len(raw)} bytes do not hold {size} test examples")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:size].astype(bool)
