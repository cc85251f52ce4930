"""What a leaker may do to a copy before it surfaces, as state-dict transforms: the removal
attempts the robustness table measures (``benchmarks/fingerprints.py``) and the tests replay.

Each function takes and returns a state dict (name -> tensor) and leaves its input unchanged.
Fine-tuning and distillation need a task and data, so they live with the benchmark.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from weightvault.fingerprint.marks import GroupTransform, apply_ops
from weightvault.fingerprint.structure import MarkPlan
from weightvault.fingerprint.trace import align_state

__all__ = [
    "average_copies",
    "canonicalize",
    "gaussian_noise",
    "magnitude_prune",
    "quantize",
    "repermute",
    "subset",
]

State = Mapping[str, torch.Tensor]


def _weights(state: State) -> list[str]:
    """The tensors these attacks touch: floating-point matrices (not biases or norms)."""
    return [n for n, t in state.items() if t.is_floating_point() and t.dim() >= 2]


def gaussian_noise(state: State, relative: float = 0.01, seed: int = 0) -> dict[str, torch.Tensor]:
    """Add N(0, (relative * std(W))^2) to every weight matrix ``W``."""
    generator = torch.Generator().manual_seed(seed)
    out = dict(state)
    for name in _weights(state):
        w = state[name].to(torch.float64)
        noise = torch.randn(w.shape, generator=generator, dtype=torch.float64)
        out[name] = (w + relative * float(w.std()) * noise).to(state[name].dtype)
    return out


def quantize(state: State, bits: int, *, per_row: bool = False) -> dict[str, torch.Tensor]:
    """Symmetric round-to-nearest quantization to ``bits`` bits and back (absmax scale per
    tensor, or per output row), as a quantized deployment would compute with."""
    levels = 2 ** (bits - 1) - 1
    out = dict(state)
    for name in _weights(state):
        w = state[name].to(torch.float64)
        rows = w.reshape(w.shape[0], -1)
        if per_row:
            scale = rows.abs().amax(dim=1, keepdim=True) / levels
        else:
            scale = rows.abs().amax().reshape(1, 1) / levels
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.clamp(torch.round(rows / scale), -levels, levels) * scale
        out[name] = q.reshape(w.shape).to(state[name].dtype)
    return out


def magnitude_prune(state: State, fraction: float = 0.5) -> dict[str, torch.Tensor]:
    """Zero the ``fraction`` of smallest-magnitude entries of every weight matrix."""
    out = dict(state)
    for name in _weights(state):
        w = state[name]
        k = int(fraction * w.numel())
        if k == 0:
            continue
        threshold = w.abs().reshape(-1).kthvalue(k).values
        out[name] = torch.where(w.abs() <= threshold, torch.zeros_like(w), w)
    return out


def repermute(state: State, plan: MarkPlan, seed: int = 0) -> dict[str, torch.Tensor]:
    """Permute every unit group at random (function-preserving: a second, unkeyed permutation
    laid over the recipient's): feed-forward units freely; attention, where the head count is
    known, by whole heads (one head order per attention block, for query/key and value/output
    alike) and dimensions within each head."""
    rng = np.random.default_rng(seed)
    head_orders: dict[str, np.ndarray] = {}
    transforms = {}
    for name, group in sorted(plan.groups.items()):
        if group.kind == "ffn":
            transforms[name] = GroupTransform(rng.permutation(group.size), None)
        elif group.heads is not None:
            order = head_orders.setdefault(group.block, rng.permutation(group.heads))
            width = group.size // group.heads
            within = [rng.permutation(width) for _ in range(group.heads)]
            transforms[name] = GroupTransform(_by_heads(order, within, width), None)
    return _apply(state, plan, transforms)


def canonicalize(state: State, plan: MarkPlan) -> dict[str, torch.Tensor]:
    """Sort units into the canonical order a leaker uses to erase permutations: feed-forward
    units by the norm of their incoming weights; attention (head count known) heads by the
    norm of their weights in the block's first group, then dimensions within each head by
    norm. The result does not depend on how the units were arranged before."""
    head_orders: dict[str, np.ndarray] = {}
    transforms = {}
    for name, group in sorted(plan.groups.items()):
        if group.kind != "ffn" and group.heads is None:
            continue
        member, op = group.members[0]
        units = state[member].narrow(op.axis, op.start, op.stop - op.start).movedim(op.axis, 0)
        norms = units.reshape(group.size, -1).to(torch.float64).norm(dim=1).numpy()
        if group.kind == "ffn" or group.heads is None:
            transforms[name] = GroupTransform(np.argsort(norms, kind="stable"), None)
            continue
        width = group.size // group.heads
        per_head = norms.reshape(group.heads, width)
        order = head_orders.setdefault(
            group.block, np.argsort((per_head**2).sum(axis=1), kind="stable")
        )
        within = [np.argsort(per_head[h], kind="stable") for h in order]
        transforms[name] = GroupTransform(_by_heads(order, within, width), None)
    return _apply(state, plan, transforms)


def _by_heads(order: np.ndarray, within: list[np.ndarray], width: int) -> np.ndarray:
    """The unit permutation that puts original head ``order[h]`` in slot ``h``, its dimensions
    in the order ``within[h]`` (unit ``j`` of the result is unit ``perm[j]`` of the input)."""
    return np.concatenate([order[h] * width + within[h] for h in range(len(order))])


def _apply(
    state: State, plan: MarkPlan, transforms: dict[str, GroupTransform]
) -> dict[str, torch.Tensor]:
    out = dict(state)
    for name, tensor in state.items():
        ops = [op for op in plan.ops(name, issuing=False) if op.group in transforms]
        if ops:
            work = apply_ops(tensor.to(torch.float64), ops, transforms)
            out[name] = work.to(tensor.dtype)
    return out


def average_copies(first: State, second: State, plan: MarkPlan) -> dict[str, torch.Tensor]:
    """Collusion: two recipients match their copies' units to each other (undoing both
    permutations, as they can by comparing the copies) and average the weights."""
    aligned = align_state(second, first, plan)
    out = dict(first)
    for name, tensor in first.items():
        if tensor.is_floating_point():
            out[name] = ((tensor.to(torch.float64) + aligned[name].to(torch.float64)) / 2).to(
                tensor.dtype
            )
    return out


def subset(state: State, keep: float = 0.5) -> dict[str, torch.Tensor]:
    """Only the first ``keep`` fraction of the tensors (a leak of some layers or shards)."""
    names = list(state)
    return {name: state[name] for name in names[: max(1, int(keep * len(names)))]}
