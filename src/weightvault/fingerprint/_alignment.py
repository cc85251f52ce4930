"""Step 2 of tracing (:mod:`weightvault.fingerprint.trace`): bring a suspect's units back into
the original's order and scale.

For every unit group the suspect's units are matched to the original's by cosine similarity
(summed over the group's tensors; a bijection by argmax, else greedy with the most confident
units first), which undoes the function-preserving mark and any re-permutation an attacker
applied; each unit's scale is then estimated by least squares and divided out. Groups whose
other axes are still unaligned wait for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from weightvault.fingerprint._io import TensorSource
from weightvault.fingerprint.structure import AxisOp, MarkPlan

__all__ = ["Alignment", "TensorPairs", "align_groups", "undo"]


@dataclass
class Alignment:
    """A permutation per aligned group (suspect unit -> original unit), and how many groups
    were aligned and how many of those the suspect had rearranged."""

    perms: dict[str, np.ndarray] = field(default_factory=dict)
    aligned: int = 0
    rearranged: int = 0


def _units(tensor: torch.Tensor, op: AxisOp) -> torch.Tensor:
    """The group's units of ``tensor`` as rows ``[units, rest]``."""
    part = tensor.narrow(op.axis, op.start, op.stop - op.start)
    return part.movedim(op.axis, 0).reshape(op.stop - op.start, -1)


def _assign(similarity: np.ndarray) -> np.ndarray:
    """Suspect unit ``j`` -> original unit: argmax when that is a bijection, else greedy (the
    most confident suspect units choose first)."""
    best: np.ndarray = similarity.argmax(axis=1)
    if len(np.unique(best)) == len(best):
        return best
    n = similarity.shape[0]
    result = np.full(n, -1)
    taken = np.zeros(similarity.shape[1], dtype=bool)
    order = np.argsort(-similarity.max(axis=1), kind="stable")
    for j in order:
        row = np.where(taken, -np.inf, similarity[j])
        i = int(row.argmax())
        result[j] = i
        taken[i] = True
    return result


def undo(
    tensor: torch.Tensor,
    original: torch.Tensor,
    ops: Sequence[AxisOp],
    perms: dict[str, np.ndarray],
) -> torch.Tensor:
    """Bring a suspect tensor into the original's unit order, then divide out unit scales."""
    for op in ops:
        perm = perms.get(op.group)
        if perm is None:
            continue
        inverse = torch.from_numpy(np.argsort(perm))
        part = tensor.narrow(op.axis, op.start, op.stop - op.start).index_select(op.axis, inverse)
        tensor = tensor.clone()
        tensor.narrow(op.axis, op.start, op.stop - op.start).copy_(part)
    for op in ops:
        if op.group not in perms or tensor.dim() < 2:
            continue
        s_units = _units(tensor, op)
        o_units = _units(original, op)
        kept = s_units != 0
        num = (s_units * o_units * kept).sum(1)
        den = (o_units * o_units * kept).sum(1)
        scale = torch.where((den > 0) & (num > 0), num / den.clamp_min(1e-300), torch.ones(1))
        shape = [1] * tensor.dim()
        shape[op.axis] = op.stop - op.start
        part = tensor.narrow(op.axis, op.start, op.stop - op.start) / scale.reshape(shape)
        tensor = tensor.clone()
        tensor.narrow(op.axis, op.start, op.stop - op.start).copy_(part)
    return tensor


class TensorPairs:
    """Original and suspect tensors by original name, float64, loaded on demand (one group's
    worth at a time: nothing is kept beyond the group or tensor being processed)."""

    def __init__(
        self, original: TensorSource, suspect: TensorSource, names: dict[str, str]
    ) -> None:
        self.original, self.suspect, self.names = original, suspect, names

    def pair(self, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        if name not in self.names:
            return None
        o = self.original.tensor(name).to(torch.float64)
        s = self.suspect.tensor(self.names[name]).to(torch.float64)
        if tuple(o.shape) != tuple(s.shape):
            return None
        return o, s


def align_groups(plan: MarkPlan, tensors: TensorPairs) -> Alignment:
    """Step 2: a permutation per group (suspect unit -> original unit)."""
    result = Alignment()
    perms = result.perms
    pending = dict(plan.groups)
    while pending:
        progressed = False
        for name, group in list(pending.items()):
            similarity = None
            usable = 0
            for member, op in group.members:
                others = [o for o in plan.ops(member, issuing=False) if o.axis != op.axis]
                if any(o.group in pending and o.group != name for o in others):
                    continue  # another axis still unaligned: this member cannot be compared yet
                pair = tensors.pair(member)
                if pair is None:
                    continue
                original, suspect = pair
                if others:
                    suspect = undo(suspect, original, others, perms)
                # cosine similarities in float32: units x units can be large (11008^2 in a 7B
                # model's feed-forward block), and matching needs ranks, not digits
                o_units = torch.nn.functional.normalize(_units(original, op), dim=1).float()
                s_units = torch.nn.functional.normalize(_units(suspect, op), dim=1).float()
                contribution = (s_units @ o_units.T).numpy()
                similarity = contribution if similarity is None else similarity + contribution
                usable += 1
            if similarity is None:
                blocked = any(
                    o.group in pending and o.group != name
                    for member, op in group.members
                    for o in plan.ops(member, issuing=False)
                    if o.axis != op.axis
                )
                if blocked:
                    continue
                del pending[name]  # nothing of this group in the suspect
                progressed = True
                continue
            perm = _assign(similarity)
            perms[name] = perm
            result.aligned += 1
            if not np.array_equal(perm, np.arange(len(perm))):
                result.rearranged += 1
            del pending[name]
            progressed = True
        if not progressed:  # a cycle of blocked groups: align the rest without the blocked parts
            for name in list(pending):
                del pending[name]
    return result
