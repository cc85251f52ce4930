"""The two marks, as pure functions of (key, recipient, tensor): deterministic, tensor by tensor.

* **Robust mark** (spread spectrum): ``W + strength * std(W) * P`` where ``P`` is a keyed
  pattern of +1/-1 signs, one per element, drawn for this recipient and this tensor's name. It
  survives what keeps weights close to the original (noise, quantization, pruning, a little
  fine-tuning) and is found by correlation (:mod:`weightvault.fingerprint.trace`).
* **Function-preserving mark**: keyed permutations (and, where valid, rescalings) of the unit
  groups of :mod:`weightvault.fingerprint.structure`, applied after the robust mark. The model
  computes the same function; the arrangement of its units names the recipient until someone
  canonicalises it (which tracing undoes anyway by matching units to the original).

Arithmetic runs in float64 and is rounded once to the tensor's dtype, so the same inputs give
the same bytes on every run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from weightvault.fingerprint.keys import FingerprintKey
from weightvault.fingerprint.structure import AxisOp, MarkPlan, UnitGroup

__all__ = [
    "DEFAULT_STRENGTH",
    "GroupTransform",
    "group_transform",
    "mark_tensor",
    "robust_pattern",
]

#: Robust-mark amplitude, as a fraction of each tensor's standard deviation.
DEFAULT_STRENGTH = 0.02
#: Scales of the function-preserving mark are drawn log-uniformly in [1/S, S].
SCALE_RANGE = 1.25


@dataclass(frozen=True)
class GroupTransform:
    """One group's permutation (unit ``j`` of the copy is unit ``perm[j]`` of the original) and
    scales (per unit of the copy; ``None`` when the group is not rescaled)."""

    perm: np.ndarray
    scales: np.ndarray | None


def _uniform(stream: np.ndarray) -> np.ndarray:
    """Keystream bytes -> float64 in [0, 1) (53 bits each)."""
    words = stream.view("<u8")
    return (words >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _permutation(
    key: FingerprintKey, recipient: str, purpose: str, name: str, n: int
) -> np.ndarray:
    """A keyed permutation of ``n`` (stable argsort of 64-bit keyed values; ties are 2^-64)."""
    words = key.stream(recipient, purpose, name, 8 * n).view("<u8")
    return np.argsort(words, kind="stable")


def group_transform(key: FingerprintKey, recipient: str, group: UnitGroup) -> GroupTransform:
    """The keyed transform of one unit group for one recipient."""
    if group.kind == "ffn" or group.heads is None:
        perm = _permutation(key, recipient, "perm", group.name, group.size)
    else:
        heads, width = group.heads, group.size // group.heads
        head_perm = _permutation(key, recipient, "heads", group.block, heads)
        parts = []
        for h in range(heads):
            within = _permutation(key, recipient, f"dims-{h}", group.name, width)
            parts.append(head_perm[h] * width + within)
        perm = np.concatenate(parts)
    scales = None
    if group.scaled:
        u = _uniform(key.stream(recipient, "scale", group.name, 8 * group.size))
        scales = np.exp((2.0 * u - 1.0) * math.log(SCALE_RANGE))
    return GroupTransform(perm, scales)


def robust_pattern(key: FingerprintKey, recipient: str, name: str, numel: int) -> np.ndarray:
    """The recipient's +1/-1 pattern (int8) for tensor ``name``: one keystream bit an element."""
    bits = np.unpackbits(key.stream(recipient, "robust", name, (numel + 7) // 8))[:numel]
    return bits.astype(np.int8) * 2 - 1


def _broadcast(values: np.ndarray, axis: int, ndim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[axis] = len(values)
    return torch.from_numpy(values).reshape(shape)


def apply_ops(
    tensor: torch.Tensor, ops: list[AxisOp], transforms: dict[str, GroupTransform]
) -> torch.Tensor:
    """Permute and scale ``tensor`` (float64) by each op's group transform."""
    for op in ops:
        transform = transforms[op.group]
        part = tensor.narrow(op.axis, op.start, op.stop - op.start)
        part = part.index_select(op.axis, torch.from_numpy(transform.perm))
        if op.scale and transform.scales is not None:
            factor = _broadcast(transform.scales, op.axis, tensor.dim())
            part = part * factor if op.scale > 0 else part / factor
        tensor = tensor.clone()
        tensor.narrow(op.axis, op.start, op.stop - op.start).copy_(part)
    return tensor


def mark_tensor(
    name: str,
    tensor: torch.Tensor,
    plan: MarkPlan,
    transforms: dict[str, GroupTransform],
    key: FingerprintKey,
    recipient: str,
    strength: float,
) -> torch.Tensor:
    """The recipient's copy of one tensor: robust mark first (in the original's coordinates),
    then the function-preserving permutations and scales. Other tensors come back unchanged."""
    ops = plan.ops(name, issuing=True)
    robust = name in plan.robust and strength > 0
    if not ops and not robust:
        return tensor
    work = tensor.detach().to(torch.float64)
    if robust:
        std = float(work.std()) if work.numel() > 1 else 0.0
        if std > 0 and math.isfinite(std):
            pattern = torch.from_numpy(robust_pattern(key, recipient, name, work.numel()))
            # in place, the int8 signs promoted element by element: no float64 copy of the
            # pattern (a streamed tensor's peak memory), the same bytes (alpha * +-1 is exact)
            work = work if work is not tensor else work.clone()
            work.add_(pattern.reshape(work.shape), alpha=strength * std)
    if ops:
        work = apply_ops(work, ops, transforms)
    return work.to(tensor.dtype).contiguous()
