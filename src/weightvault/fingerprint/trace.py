"""Tracing a leaked copy: which recipient's mark does a suspect model carry, with a p-value.

Steps (numbers are referred to in the code):

1. **Names.** Each tensor of the custody original is found in the suspect under one prefix
   rewrite for the whole model (the one that pairs the most names: a prefix added or stripped
   by another container or framework); a missing tensor is skipped (a subset of layers still
   traces).
2. **Alignment.** For every unit group (:mod:`weightvault.fingerprint.structure`) the suspect's
   units are matched to the original's by cosine similarity of their weights (summed over the
   group's tensors; greedy assignment, best pairs first). This undoes the function-preserving
   mark *and* any re-permutation or canonical sorting an attacker applied. Each unit's scale is
   then estimated by least squares against the original (zeros ignored) and divided out.
3. **Residual.** ``g = clip((S - O) / std(O), -c, c)`` over the robust-mark tensors, where ``S``
   is the aligned suspect, ``O`` the original, ``c`` four robust standard deviations (median
   absolute deviation) of the residual, and entries the suspect set to exactly zero (pruned)
   are left out. Clipping keeps a few large changes (fine-tuning, outliers) from drowning the
   mark.
4. **Statistic.** For recipient ``r`` with pattern ``P_r`` (signs): ``z_r = <P_r, g> / ||g||``.
5. **Null and p-value.** H0 for recipient ``r``: the suspect was not made from ``r``'s copy, so
   ``P_r`` (the output of a keyed PRF the suspect never saw) is independent of ``g``: a sequence
   of independent fair signs given ``g``. Then ``<P_r, g>`` is a Rademacher sum and Hoeffding's
   inequality gives, for every size and every ``g``, ``P(z_r >= z) <= exp(-z^2 / 2)``: the
   p-value reported is that bound (conservative; no normal approximation needed).
6. **Correction.** Over ``N`` candidate recipients, Bonferroni: ``p_corrected = min(1, N p)``.
   Every recipient with ``p_corrected < alpha`` is named (two colluders can both be); when none
   is, the answer is "no recipient".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weightvault.errors import InputError, UsageError
from weightvault.fingerprint._alignment import TensorPairs, align_groups, undo
from weightvault.fingerprint._io import ModelReader, StateReader, TensorSource
from weightvault.fingerprint.keys import FingerprintKey, check_recipient, keystream
from weightvault.fingerprint.structure import MarkPlan, plan_marks

__all__ = [
    "DEFAULT_ALPHA",
    "Attribution",
    "Residual",
    "Screen",
    "TraceResult",
    "align_state",
    "attributions",
    "match_names",
    "residual",
    "score_recipients",
    "screen_scores",
    "trace_copy",
    "trace_sources",
    "trace_state",
    "z_scores",
]

#: Significance level for naming a recipient (after correction for the number of recipients).
DEFAULT_ALPHA = 1e-6
#: Residuals are clipped at this many robust standard deviations (step 3).
CLIP_SIGMAS = 4.0
#: :func:`screen_scores` recomputes exactly every score within this much of its threshold.
SCREEN_MARGIN = 0.05
_LOG10_E = math.log10(math.e)


@dataclass(frozen=True)
class Attribution:
    """One recipient's score: ``z``, the Hoeffding p-value and its Bonferroni correction (as
    base-10 logarithms: they go far below what a float holds)."""

    recipient: str
    z: float
    log10_p: float
    log10_p_corrected: float
    attributed: bool

    @property
    def p_corrected(self) -> float:
        return float(10.0**self.log10_p_corrected)

    def to_json(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "z": round(self.z, 3),
            "log10_p": round(self.log10_p, 3),
            "log10_p_corrected": round(self.log10_p_corrected, 3),
            "p_corrected": self.p_corrected,
            "attributed": self.attributed,
        }


@dataclass
class Residual:
    """The suspect's aligned, clipped residual per tensor (step 3) and what went into it."""

    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    tensors_missing: list[str] = field(default_factory=list)
    tensors_mismatched: list[str] = field(default_factory=list)
    groups_aligned: int = 0
    groups_rearranged: int = 0
    elements: int = 0
    pruned: int = 0

    @property
    def norm(self) -> float:
        return math.sqrt(sum(float(np.dot(v, v)) for v in self.vectors.values()))


@dataclass(frozen=True)
class TraceResult:
    """Who the suspect's marks name; ``attributed`` lists every recipient under ``alpha``."""

    candidates: int
    alpha: float
    ranking: tuple[Attribution, ...]
    attributed: tuple[Attribution, ...]
    elements: int
    tensors_compared: int
    tensors_missing: int
    groups_aligned: int
    groups_rearranged: int

    @property
    def recipient(self) -> str | None:
        """The most likely recipient, or ``None`` ("no recipient")."""
        return self.attributed[0].recipient if self.attributed else None

    def to_json(self) -> dict[str, Any]:
        return {
            "recipient": self.recipient,
            "attributed": [a.to_json() for a in self.attributed],
            "ranking": [a.to_json() for a in self.ranking],
            "candidates": self.candidates,
            "alpha": self.alpha,
            "null": "Hoeffding bound exp(-z^2/2) on a Rademacher sum, Bonferroni over candidates",
            "elements": self.elements,
            "tensors_compared": self.tensors_compared,
            "tensors_missing": self.tensors_missing,
            "groups_aligned": self.groups_aligned,
            "groups_rearranged": self.groups_rearranged,
        }


def match_names(original: Iterable[str], suspect: Iterable[str]) -> dict[str, str]:
    """Step 1: original name -> suspect name, under the one prefix rewrite (``bert.`` dropped,
    ``model.`` added, or none) that pairs the most names; never a guess per tensor."""
    original_names, suspect_names = list(original), set(suspect)
    votes: Counter[tuple[str, str]] = Counter()
    original_set = set(original_names)
    for name in suspect_names:  # the suspect adds a prefix (or none)
        parts = name.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in original_set:
                votes[("", ".".join(parts[:i]) + "." if i else "")] += 1
    for name in original_names:  # the suspect drops a prefix
        parts = name.split(".")
        for i in range(1, len(parts) - 1):
            if ".".join(parts[i:]) in suspect_names:
                votes[(".".join(parts[:i]) + ".", "")] += 1
    if not votes:
        return {}
    (drop, add), _count = min(votes.items(), key=lambda kv: (-kv[1], len(kv[0][0]) + len(kv[0][1])))
    out = {}
    for name in original_names:
        if name.startswith(drop) and add + name[len(drop) :] in suspect_names:
            out[name] = add + name[len(drop) :]
    return out


def residual(original: TensorSource, suspect: TensorSource, plan: MarkPlan) -> Residual:
    """Steps 1-3: the suspect's clipped residual against the original, per robust tensor."""
    result = Residual()
    names = match_names(original.infos, suspect.infos)
    tensors = TensorPairs(original, suspect, names)
    alignment = align_groups(plan, tensors)
    perms = alignment.perms
    result.groups_aligned, result.groups_rearranged = alignment.aligned, alignment.rearranged
    for name in plan.robust:
        if name not in names:
            result.tensors_missing.append(name)
            continue
        pair = tensors.pair(name)
        if pair is None:
            result.tensors_mismatched.append(name)
            continue
        o, s = pair
        s = undo(s, o, plan.ops(name, issuing=False), perms)
        std = float(o.std())
        if not (std > 0 and math.isfinite(std)):
            continue
        d = ((s - o) / std).numpy().reshape(-1)
        valid = np.isfinite(d) & ~((s == 0) & (o != 0)).numpy().reshape(-1)
        result.pruned += int(((s == 0) & (o != 0)).sum())
        d = np.where(valid, d, 0.0)
        spread = float(np.median(np.abs(d[valid]))) * 1.4826 if valid.any() else 0.0
        clip = CLIP_SIGMAS * spread if spread > 0 else float(np.abs(d).max(initial=0.0))
        result.vectors[name] = np.clip(d, -clip, clip).astype(np.float32)
        result.elements += int(valid.sum())
    return result


def _norms(residuals: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    """``||g_s||`` of each suspect's residual (float64 sums of the float32 vectors)."""
    return np.array(
        [
            math.sqrt(sum(float(np.dot(v, v.astype(np.float64))) for v in r.values()))
            for r in residuals
        ]
    )


def z_scores(
    key: FingerprintKey,
    recipients: Sequence[str],
    residuals: Sequence[dict[str, np.ndarray]],
) -> np.ndarray:
    """Step 4 for several suspects at once: ``z[s, r] = <P_r, g_s> / ||g_s||`` (0 when a
    suspect's residual is all zero).

    Up to two suspects go through nibble tables (:func:`_ones_sums`): this is what ``trace``
    reports. More go through matrix products (:func:`_product_z`), equal to float rounding;
    :func:`screen_scores` makes every score that matters bit-identical to the first way.
    """
    if len(residuals) > _TABLE_SUSPECTS:
        return _product_z(key, recipients, residuals)
    z = np.zeros((len(residuals), len(recipients)))
    for name, g, totals in _stacked(residuals):
        ones = np.stack([_ones_sums(key, recipients, name, row) for row in g])
        # sum of P * g = 2 * (sum of g where the bit is 1) - sum of g
        z += 2.0 * ones - totals[:, None]
    return _normalized(z, residuals)


def _stacked(
    residuals: Sequence[dict[str, np.ndarray]],
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Per tensor name, in sorted order: every suspect's residual as a float32 row (zeros
    where a suspect lacks the tensor) and each row's float64 sum."""
    for name in sorted({name for vectors in residuals for name in vectors}):
        n = next(len(r[name]) for r in residuals if name in r)
        g = np.stack([r.get(name, np.zeros(n, np.float32)) for r in residuals]).astype(np.float32)
        yield name, g, g.sum(axis=1, dtype=np.float64)


def _normalized(z: np.ndarray, residuals: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    """``z / ||g_s||`` row by row (0 for an all-zero residual)."""
    norms = _norms(residuals)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms[:, None] > 0, z / norms[:, None], 0.0)


def _product_z(
    key: FingerprintKey,
    recipients: Sequence[str],
    residuals: Sequence[dict[str, np.ndarray]],
) -> np.ndarray:
    """Step 4 as matrix products: the suspects' residuals (float32, one row each) times every
    recipient's unpacked pattern bits, ``_PIECE`` elements at a time (each recipient's
    keystream is generated from that piece's offset: patterns are made once for all suspects
    and never held whole), the pieces summed in float64."""
    z = np.zeros((len(residuals), len(recipients)))
    for name, g, totals in _stacked(residuals):
        n = g.shape[1]
        seeds = [key.seed(r, "robust", name) for r in recipients]
        rows = torch.from_numpy(g)
        ones = torch.zeros((len(residuals), len(recipients)), dtype=torch.float64)
        for begin in range(0, n, _PIECE):
            size = min(_PIECE, n - begin)
            packed = np.stack([keystream(s, (size + 7) // 8, offset=begin // 8) for s in seeds])
            bits = torch.from_numpy(np.unpackbits(packed, axis=1, count=size)).to(torch.float32)
            ones += (rows[:, begin : begin + size] @ bits.T).to(torch.float64)
        z += 2.0 * ones.numpy() - totals[:, None]
    return _normalized(z, residuals)


@dataclass(frozen=True)
class Screen:
    """Many suspects' scores against many recipients (:func:`screen_scores`).

    ``z[s, r]`` where ``exact[s, r]`` is what ``trace`` reports for suspect ``s``, to the bit;
    elsewhere the matrix product's value. ``largest_gap`` is the largest difference seen
    between the two ways on the entries computed both ways (the screening error, measured).
    """

    z: np.ndarray
    exact: np.ndarray
    largest_gap: float
    recomputed: int


def screen_scores(
    key: FingerprintKey,
    recipients: Sequence[str],
    residuals: Sequence[dict[str, np.ndarray]],
    *,
    exact_above: float,
    margin: float = SCREEN_MARGIN,
    skip: np.ndarray | None = None,
) -> Screen:
    """Score many suspects against many recipients fast, and exactly where it matters.

    Every suspect is scored by matrix products; each (suspect, recipient) whose score comes
    within ``margin`` of ``exact_above`` or above is scored again through the single-suspect
    path ``trace`` uses, whose numbers replace it. A recipient's score does not depend on the
    other recipients scored with it, so these entries equal ``trace``'s bit for bit; the
    product's rounding error (about 1e-6 in z; ``largest_gap`` measures it) is far below any
    useful ``margin``, so no score at or above ``exact_above`` is left approximate (except
    the entries ``skip`` marks: a boolean ``[suspects, recipients]`` mask of scores the caller
    does not need exactly, such as a copy against its own recipient's key).
    """
    z = _product_z(key, recipients, residuals)
    exact = np.zeros(z.shape, dtype=bool)
    gap = 0.0
    for s, row in enumerate(z):
        wanted = row >= exact_above - margin
        picked = np.flatnonzero(wanted if skip is None else wanted & ~skip[s])
        if picked.size:
            values = z_scores(key, [recipients[j] for j in picked.tolist()], [residuals[s]])[0]
            gap = max(gap, float(np.abs(values - row[picked]).max()))
            z[s, picked] = values
            exact[s, picked] = True
    return Screen(z, exact, gap, int(exact.sum()))


#: Up to this many suspects, patterns are scored through nibble tables (fast for one suspect);
#: more suspects share unpacked patterns in a matrix product instead.
_TABLE_SUSPECTS = 2
#: Elements of a pattern unpacked at a time for the matrix product (a multiple of 128: each
#: piece starts on a whole AES block of every recipient's keystream).
_PIECE = 1 << 16
#: Elements per window of a nibble table (bounds its memory to 16 floats per 4 elements).
_WINDOW = 1 << 22
#: _NIBBLE_BITS[v, k]: bit k (first element first) of the 4-bit value v.
_NIBBLE_BITS = ((np.arange(16)[:, None] >> (3 - np.arange(4))) & 1).astype(np.float64)


def _ones_sums(
    key: FingerprintKey, recipients: Sequence[str], name: str, g: np.ndarray
) -> np.ndarray:
    """For each recipient, the sum of ``g`` over the elements whose pattern bit is 1.

    A table gives, for every group of 4 elements and each of the 16 values their 4 bits can
    take, the sum of the elements whose bit is set; a recipient's sum is then one lookup per 4
    elements (its keystream's nibbles), instead of unpacking and multiplying every bit.
    """
    n = len(g)
    out = np.zeros(len(recipients))
    seeds = [key.seed(r, "robust", name) for r in recipients]
    for begin in range(0, n, _WINDOW):
        part = g[begin : begin + _WINDOW].astype(np.float64)
        part = np.concatenate([part, np.zeros((-len(part)) % 8)])
        table = (part.reshape(-1, 4) @ _NIBBLE_BITS.T).ravel()
        base = np.arange(len(part) // 4, dtype=np.int64) * 16
        for i, seed in enumerate(seeds):
            stream = keystream(seed, len(part) // 8, offset=begin // 8)
            nibbles = np.empty(2 * len(stream), dtype=np.int64)
            nibbles[0::2] = stream >> 4
            nibbles[1::2] = stream & 15
            out[i] += float(table[base + nibbles].sum())
    return out


def attributions(
    recipients: Sequence[str], z: np.ndarray, *, alpha: float = DEFAULT_ALPHA
) -> list[Attribution]:
    """Steps 5-6: p-values from z scores (one suspect), Bonferroni over ``len(recipients)``,
    best first."""
    scores = []
    for recipient, value in zip(recipients, z.tolist(), strict=True):
        log10_p = -(value * value) / 2.0 * _LOG10_E if value > 0 else 0.0
        corrected = min(0.0, log10_p + math.log10(len(recipients)))
        scores.append(
            Attribution(recipient, value, log10_p, corrected, corrected < math.log10(alpha))
        )
    scores.sort(key=lambda a: (-a.z, a.recipient))
    return scores


def score_recipients(
    key: FingerprintKey,
    recipients: Sequence[str],
    vectors: dict[str, np.ndarray],
    *,
    alpha: float = DEFAULT_ALPHA,
) -> list[Attribution]:
    """Steps 4-6 for one suspect's residual, best first."""
    return attributions(recipients, z_scores(key, recipients, [vectors])[0], alpha=alpha)


def trace_copy(
    suspect: Path,
    model: Path,
    key: FingerprintKey,
    recipients: Sequence[str],
    *,
    alpha: float = DEFAULT_ALPHA,
    top: int = 5,
) -> TraceResult:
    """Trace ``suspect`` (a file or folder, any supported format) against ``recipients``' marks
    on the custody original ``model``."""
    return trace_sources(
        ModelReader(Path(suspect)), ModelReader(Path(model)), key, recipients,
        alpha=alpha, top=top, where=f"{suspect}",
    )  # fmt: skip


def trace_state(
    suspect: Mapping[str, torch.Tensor],
    original: Mapping[str, torch.Tensor],
    key: FingerprintKey,
    recipients: Sequence[str],
    *,
    alpha: float = DEFAULT_ALPHA,
    top: int = 5,
) -> TraceResult:
    """:func:`trace_copy` for state dicts already in memory."""
    return trace_sources(
        StateReader(suspect), StateReader(original), key, recipients, alpha=alpha, top=top
    )


def trace_sources(
    suspect: TensorSource,
    original: TensorSource,
    key: FingerprintKey,
    recipients: Sequence[str],
    *,
    alpha: float = DEFAULT_ALPHA,
    top: int = 5,
    where: str = "suspect",
) -> TraceResult:
    """Steps 1-6 over any two tensor sources."""
    if not recipients:
        raise UsageError("no candidate recipients to trace against")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be between 0 and 1")
    recipients = [check_recipient(r) for r in recipients]
    if len(set(recipients)) != len(recipients):
        raise UsageError("a candidate recipient is listed twice")
    plan = plan_marks(original.infos)
    found = residual(original, suspect, plan)
    if not found.vectors:
        raise InputError(f"{where}: shares no marked tensor with the original (name and shape)")
    ranking = score_recipients(key, recipients, found.vectors, alpha=alpha)
    return TraceResult(
        candidates=len(recipients),
        alpha=alpha,
        ranking=tuple(ranking[:top]),
        attributed=tuple(a for a in ranking if a.attributed),
        elements=found.elements,
        tensors_compared=len(found.vectors),
        tensors_missing=len(found.tensors_missing) + len(found.tensors_mismatched),
        groups_aligned=found.groups_aligned,
        groups_rearranged=found.groups_rearranged,
    )


def align_state(
    state: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], plan: MarkPlan
) -> dict[str, torch.Tensor]:
    """``state`` with its units matched to ``reference``'s order and scales (step 2), e.g. to
    compare or average two copies; tensors outside every group come back as they are."""
    names = {name: name for name in reference if name in state}
    tensors = TensorPairs(StateReader(reference), StateReader(state), names)
    perms = align_groups(plan, tensors).perms
    out = {}
    for name, tensor in state.items():
        ops = plan.ops(name, issuing=False)
        if ops and name in reference and reference[name].shape == tensor.shape:
            undone = undo(tensor.to(torch.float64), reference[name].to(torch.float64), ops, perms)
            out[name] = undone.to(tensor.dtype)
        else:
            out[name] = tensor
    return out
