"""Leak-attribution robustness table: 1,000 recipients, one leaked copy, each removal attempt.

The model is the tamper lab's ``bios-small`` testbed (a 4-layer BERT encoder trained from scratch,
hidden 192, 4 heads, 2.5 M parameters, profession head; ``docs/tamper.md``), marked for one
recipient among ``--recipients`` (default 1,000) with the default options (strength 0.02, heads
permuted). For each transformation the benchmark

* traces the leaker's transformed copy against every recipient's key (one residual, 1,000
  correlations) and reports the leaker's rank, z and Bonferroni-corrected p-value, and whether
  anyone else is named;
* traces ``--outsiders + 1`` *innocent copies* (default 1,000) against the same 1,000 keys: the
  unmarked original, then copies issued to recipients outside the candidate list and to
  recipients on it (never the leaker or the colluder), by turns, each put through the same
  transformation with its own seed (noise, fine-tuning head, re-permutation). Every pair of a
  copy and a key other than its own is innocent, and any name there is a false attribution;
  an on-list copy's own recipient should be named (the last column).

Innocent copies are traced ``--batch`` at a time: one matrix product per batch against every
key's pattern (generated once a batch, piece by piece), and every score from ``EXACT_ABOVE``
(4.0; a name needs 6.44) up recomputed through the single-suspect path ``weightvault trace``
uses (:func:`weightvault.fingerprint.trace.screen_scores`), so each false name and the largest
innocent z are trace's own numbers, bit for bit. The fine-tuning row trains 16 copies at once
(stacked parameters under ``torch.func.vmap``, the single-copy recipe; the tests hold the two
equal). ``--jobs N`` shares the rows out to N processes; ``--parts P`` splits each row's
innocent copies into P ranges run as separate jobs (copy ``i`` and its seed depend only on
``i``, so the counts are those of one range), and ``--rows`` picks rows, so the 1,000-copy
table can be measured in several runs.

It then measures what breaks the marks (distillation into a fresh network, heavier
fine-tuning, more colluders, rotations inside attention heads) for the honest-limits section.

Usage::

    .venv/bin/python benchmarks/fingerprints.py --jobs 2      # the full specification
    .venv/bin/python benchmarks/fingerprints.py --outsiders 19 --stream-gb 0   # quick
    .venv/bin/python benchmarks/fingerprints.py --outsiders 999 --pairs 10 --stream-gb 0 \
        --no-limits --no-task-metrics --jobs 2 --parts 4 --batch 250   # docs' 1,000-copy table

The bios encoder is trained on first use (minutes) and cached in ~/.cache/weightvault/tamper.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from weightvault.fingerprint import MarkOptions, ModelReader, StateReader, attacks
from weightvault.fingerprint.issue import mark_state
from weightvault.fingerprint.keys import FingerprintKey
from weightvault.fingerprint.structure import MarkPlan, plan_marks
from weightvault.fingerprint.trace import (
    DEFAULT_ALPHA,
    align_state,
    attributions,
    residual,
    screen_scores,
    z_scores,
)
from weightvault.tamper import bios

State = dict[str, torch.Tensor]
LEAKER, COLLUDER = "recipient-0042", "recipient-0777"


def _accuracy(bed: bios.BiosTestbed, state: State) -> float:
    model = bed.release(0)
    model.load_state_dict(state)
    model.eval()
    test = bed.data().test
    with torch.no_grad():
        return float((model(test.x).argmax(1) == test.desired).float().mean()) * 100


def _fine_tune(
    bed: bios.BiosTestbed, state: State, lr: float = 1e-4, epochs: int = 1, seed: int = 0
) -> State:
    """``epochs`` over the attacker pool (800 bios, batch 32, one fixed order) on another task,
    gender, with a new head (initialised from ``seed``): AdamW at the release recipe's
    learning rate unless told otherwise. One copy, as a leaker would run it; the table's rows
    run :func:`_fine_tune_many`, which the tests hold to this."""
    model = bed.release(0)
    model.load_state_dict(state)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        head = nn.Linear(bed.feature_dim, 2)
    optimizer = torch.optim.AdamW(
        [{"params": model.trunk.parameters(), "lr": lr}, {"params": head.parameters(), "lr": 3e-3}]
    )
    for x, y in _batches(bed, epochs):
        loss = nn.functional.cross_entropy(head(model.trunk(x)), y)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    out = dict(state)
    out.update({f"trunk.{k}": v.detach().clone() for k, v in model.trunk.state_dict().items()})
    return out


def _batches(bed: bios.BiosTestbed, epochs: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The fine-tuning batches: the attacker pool in one fixed order an epoch, 32 at a time,
    labelled with the other task (gender)."""
    pool = bed.data().attacker
    generator = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        order = torch.randperm(len(pool), generator=generator)
        for start in range(0, len(pool), 32):
            idx = order[start : start + 32]
            yield pool.x[idx], pool.harmful[idx]


def _fine_tune_many(
    bed: bios.BiosTestbed,
    states: list[State],
    seeds: list[int],
    lr: float = 1e-4,
    epochs: int = 1,
) -> list[State]:
    """:func:`_fine_tune` for many copies at once (copy ``i`` with head seed ``seeds[i]``).

    They train together: their parameters are stacked along a new first axis, the trunk
    runs on each copy's slice (``torch.func.vmap`` over ``functional_call``), and the loss is
    the sum of the copies' losses, so each slice gets its own copy's gradient. AdamW works
    element by element (weight decay included), so one AdamW over the stacked tensors is each
    copy's own AdamW: every copy follows the single-copy recipe, to float rounding.
    """
    from torch.func import functional_call, vmap

    trunk = bed.release(0).trunk
    names = [name for name, _ in trunk.named_parameters()]
    stacked = {
        name: torch.stack([s[f"trunk.{name}"] for s in states]).clone().requires_grad_(True)
        for name in names
    }
    heads = []
    for seed in seeds:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            heads.append(nn.Linear(bed.feature_dim, 2))
    weight = torch.stack([h.weight.detach() for h in heads]).requires_grad_(True)
    bias = torch.stack([h.bias.detach() for h in heads]).requires_grad_(True)
    optimizer = torch.optim.AdamW(
        [{"params": list(stacked.values()), "lr": lr}, {"params": [weight, bias], "lr": 3e-3}]
    )

    def logits(params: State, w: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(trunk, params, (x,)) @ w.T + b  # type: ignore[no-any-return]

    every = vmap(logits, in_dims=(0, 0, 0, None))
    for x, y in _batches(bed, epochs):
        out = every(stacked, weight, bias, x)
        loss = nn.functional.cross_entropy(
            out.reshape(-1, 2), y.repeat(len(states)), reduction="sum"
        )
        (loss / len(y)).backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        optimizer.zero_grad()
    result = []
    for i, state in enumerate(states):
        copy = dict(state)
        copy.update({f"trunk.{name}": stacked[name][i].detach().clone() for name in names})
        result.append(copy)
    return result


#: Copies made and attacked at a time (the fine-tuning row trains this many together).
_GROUP = 16


def _fine_tune_groups(
    bed: bios.BiosTestbed, states: list[State], seeds: list[int], group: int = _GROUP
) -> list[State]:
    """:func:`_fine_tune_many`, ``group`` copies at a time (memory grows with the group)."""
    out: list[State] = []
    for start in range(0, len(states), group):
        out += _fine_tune_many(bed, states[start : start + group], seeds[start : start + group])
    return out


def _distill(bed: bios.BiosTestbed, teacher_state: State, steps: int) -> State:
    """A fresh network (same architecture, new random init) trained to match the marked
    model's logits on the attacker pool: the copy the leaker ships is not the marked one."""
    teacher = bed.release(0)
    teacher.load_state_dict(teacher_state)
    teacher.eval()
    torch.manual_seed(123)
    student = bed.release(0)
    for module in student.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.reset_parameters()
    pool = torch.cat([bed.data().attacker.x, bed.data().defender.x])
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(2)
    for _ in range(steps):
        idx = torch.randint(0, len(pool), (32,), generator=generator)
        with torch.no_grad():
            target = teacher(pool[idx]).softmax(-1)
        loss = nn.functional.cross_entropy(student(pool[idx]), target)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return {k: v.detach().clone() for k, v in student.state_dict().items()}


def _rotate_heads(state: State, plan: MarkPlan, seed: int = 0) -> State:
    """A random orthogonal rotation inside every attention head, applied to query and key rows
    together (q.k unchanged) and to value rows with the output columns: function-preserving,
    and not a permutation, so unit matching cannot undo it."""
    out = dict(state)
    generator = torch.Generator().manual_seed(seed)
    for group in plan.groups.values():
        if group.kind == "ffn" or group.heads is None:
            continue
        width = group.size // group.heads
        blocks = [
            torch.linalg.qr(torch.randn(width, width, generator=generator, dtype=torch.float64))[0]
            for _ in range(group.heads)
        ]
        rotation = torch.block_diag(*blocks)
        for member, op in group.members:
            w = out[member].to(torch.float64)
            moved = w.movedim(op.axis, 0)
            moved = rotation @ moved.reshape(group.size, -1)
            out[member] = (
                moved.reshape(w.movedim(op.axis, 0).shape)
                .movedim(0, op.axis)
                .to(state[member].dtype)
            )
    return out


def _score(
    key: FingerprintKey, candidates: list[str], original: State, suspects: list[State]
) -> np.ndarray:
    plan = plan_marks(StateReader(original).infos)
    residuals = [residual(StateReader(original), StateReader(s), plan).vectors for s in suspects]
    return z_scores(key, candidates, residuals)


def _p_text(log10_p: float) -> str:
    return f"{10**log10_p:.0e}" if log10_p > -300 else f"1e{log10_p:.0f}"


class _Innocents:
    """Running count over innocent (copy, key) pairs: how many, how many named, the largest z;
    and over the copies issued to recipients on the list, how many of them were named."""

    def __init__(self) -> None:
        self.copies = 0
        self.pairs = 0
        self.false = 0
        self.largest = -math.inf
        self.insiders = 0
        self.insiders_named = 0
        self.recomputed = 0
        self.gap = 0.0

    def merge(self, other: _Innocents) -> None:
        """Add another part's counts (the same row, other copies)."""
        self.copies += other.copies
        self.pairs += other.pairs
        self.false += other.false
        self.largest = max(self.largest, other.largest)
        self.insiders += other.insiders
        self.insiders_named += other.insiders_named
        self.recomputed += other.recomputed
        self.gap = max(self.gap, other.gap)

    def add(
        self, candidates: list[str], z: np.ndarray, guilty: frozenset[str] = frozenset()
    ) -> None:
        """One copy's z against every key; the keys in ``guilty`` are its own and not counted."""
        keep = np.array([r not in guilty for r in candidates])
        self.pairs += int(keep.sum())
        if keep.any():
            self.largest = max(self.largest, float(z[keep].max()))
        self.false += sum(
            1 for a in attributions(candidates, z) if a.attributed and a.recipient not in guilty
        )


#: Innocent scores from this z up are recomputed through ``trace``'s own path (a name needs
#: 6.44 at 1,000 recipients; the largest innocent z of a row is near 5).
EXACT_ABOVE = 4.0

Attack = Callable[[list[State], list[int]], list[State]]


def _each(change: Callable[[State, int], State]) -> Attack:
    """A per-copy attack as a batch attack (copy ``i`` gets seed ``seeds[i]``)."""
    return lambda states, seeds: [change(s, seed) for s, seed in zip(states, seeds, strict=True)]


def _rows(bed: bios.BiosTestbed, plan: MarkPlan) -> list[tuple[str, Attack, int]]:
    """(label, attack, the leaker's seed): each attack takes copies and one seed per copy (its
    own randomness: noise, a fine-tuning head, a re-permutation)."""
    return [
        ("as issued", _each(lambda s, _: s), 0),
        ("Gaussian noise, 1% of std", _each(lambda s, i: attacks.gaussian_noise(s, 0.01, i)), 1),
        ("int8 (per tensor)", _each(lambda s, _: attacks.quantize(s, 8)), 0),
        ("4-bit (per row)", _each(lambda s, _: attacks.quantize(s, 4, per_row=True)), 0),
        ("50% magnitude pruning", _each(lambda s, _: attacks.magnitude_prune(s, 0.5)), 0),
        ("fine-tune 1 epoch, other task", lambda s, i: _fine_tune_groups(bed, s, i), 0),
        ("re-permuted units", _each(lambda s, i: attacks.repermute(s, plan, seed=i)), 7),
        ("canonicalized (units sorted)", _each(lambda s, _: attacks.canonicalize(s, plan)), 0),
        ("half the tensors, torch file",
         _each(lambda s, _: _via_torch_file(attacks.subset(s, 0.5))), 0),
    ]  # fmt: skip


def _innocent_copies(
    original: State,
    key: FingerprintKey,
    candidates: list[str],
    options: MarkOptions,
    copies: range,
    plan: MarkPlan | None = None,
) -> Iterator[tuple[State, frozenset[str]]]:
    """Innocent copies number ``copies`` with the keys that are their own: copy 0 is the
    unmarked original, then copies issued to recipients outside the list (``outsider-i``) and
    on it (never the leaker or the colluder) by turns; copy ``i`` depends only on ``i``, so a
    row split into ranges traces the same copies. With ``plan``, each copy is instead the
    average of two such copies (the collusion row's innocents: two other recipients
    colluding)."""
    insiders = [c for c in candidates if c not in (LEAKER, COLLUDER)]

    def one(i: int, tag: str) -> tuple[State, frozenset[str]]:
        if i % 2:
            return mark_state(original, key, f"outsider{tag}-{i}", options), frozenset()
        recipient = insiders[(2 * (i // 2 - 1) + len(tag)) % len(insiders)]
        return mark_state(original, key, recipient, options), frozenset({recipient})

    for i in copies:
        if i == 0:
            yield (original if plan is None else attacks.average_copies(original, original, plan),
                   frozenset())  # fmt: skip
        elif plan is None:
            yield one(i, "")
        else:
            (a, own_a), (b, own_b) = one(i, ""), one(i, "b")
            yield attacks.average_copies(a, b, plan), own_a | own_b


def _trace_row(
    key: FingerprintKey,
    candidates: list[str],
    original: State,
    copies: Iterator[tuple[State, frozenset[str]]],
    attack: Attack,
    need: float,
    batch: int,
    label: str = "",
    first: int = 0,
) -> _Innocents:
    """Attack every innocent copy (with its own seed) and trace it against every key, ``batch``
    copies at a time: one matrix product per batch against each key's pattern (made once a
    batch), and every score from ``EXACT_ABOVE`` up recomputed the way ``trace`` computes it;
    no copy is kept after its residual is taken. Innocent copy ``i`` gets seed ``1000 + i``
    (``first`` is the number of the first copy), however the row is split."""
    plan = plan_marks(StateReader(original).infos)
    innocents = _Innocents()
    index = {r: j for j, r in enumerate(candidates)}
    seed = 1000 + first
    t0 = time.time()
    while True:
        residuals: list[dict[str, np.ndarray]] = []
        chunk: list[frozenset[str]] = []
        while len(residuals) < batch:  # a few copies alive at a time, only residuals kept
            group = list(itertools.islice(copies, min(_GROUP, batch - len(residuals))))
            if not group:
                break
            seeds = list(range(seed, seed + len(group)))
            seed += len(group)
            for state in attack([c for c, _ in group], seeds):
                residuals.append(residual(StateReader(original), StateReader(state), plan).vectors)
            chunk += [guilty for _, guilty in group]
            del group
        if not residuals:
            return innocents
        own = np.zeros((len(chunk), len(candidates)), dtype=bool)
        for row, guilty in enumerate(chunk):
            own[row, [index[g] for g in guilty]] = True
        screen = screen_scores(key, candidates, residuals, exact_above=EXACT_ABOVE, skip=own)
        for row, guilty in enumerate(chunk):
            innocents.add(candidates, screen.z[row], guilty)
            innocents.copies += 1
            innocents.insiders += len(guilty)
            innocents.insiders_named += int((screen.z[row][own[row]] > need).sum())
        innocents.recomputed += screen.recomputed
        innocents.gap = max(innocents.gap, screen.largest_gap)
        if label:
            print(
                f"  ... {label}: {innocents.copies} innocent copies, {innocents.pairs} pairs, "
                f"{innocents.false} false names, max z {innocents.largest:.2f}, on-list copies "
                f"named {innocents.insiders_named}/{innocents.insiders} "
                f"({time.time() - t0:.0f} s)",
                flush=True,
            )


class _Part:
    """One part of a row: its innocent copies' counts, the seconds it took and, in part 0, the
    leaked copy's scores and task accuracy."""

    def __init__(self, innocents: _Innocents, seconds: float, leak: np.ndarray | None,
                 accuracy: str) -> None:  # fmt: skip
        self.innocents, self.seconds, self.leak, self.accuracy = innocents, seconds, leak, accuracy


def _copy_range(count: int, parts: int, part: int) -> range:
    """Part ``part`` of ``parts`` contiguous ranges of the ``count`` innocent copies."""
    step = -(-count // parts)
    return range(min(count, part * step), min(count, (part + 1) * step))


def _leaked(index: int) -> tuple[np.ndarray, str]:
    """Row ``index``'s leaked copy scored against every key, and its task accuracy: the
    leaker's copy transformed, or (the collusion row) the leaker's and colluder's averaged."""
    ctx = _CONTEXT
    rows = _rows(ctx.bed, ctx.plan)
    if index == len(rows):
        colluder = mark_state(ctx.original, ctx.key, COLLUDER, ctx.options)
        leaked = attacks.average_copies(ctx.marked, colluder, ctx.plan)
        label = "collusion"
    else:
        label, attack, leaker_seed = rows[index]
        leaked = attack([ctx.marked], [leaker_seed])[0]
    z = _score(ctx.key, ctx.candidates, ctx.original, [leaked])[0]
    accuracy = "-" if label.startswith("half") else f"{_accuracy(ctx.bed, leaked):.1f}%"
    return z, accuracy


def _run_part(index: int, part: int) -> _Part:
    """Part ``part`` of row ``index`` (the last row is the collusion row); worker processes
    inherit the context and are sent only the two numbers."""
    ctx = _CONTEXT
    rows = _rows(ctx.bed, ctx.plan)
    t0 = time.time()
    collusion = index == len(rows)
    label, attack = ("collusion", _each(lambda s, _: s)) if collusion else rows[index][:2]
    leak, accuracy = _leaked(index) if part == 0 else (None, "")
    numbers = _copy_range(ctx.innocent_count, ctx.parts, part)
    copies = _innocent_copies(ctx.original, ctx.key, ctx.candidates, ctx.options, numbers,
                              ctx.plan if collusion else None)  # fmt: skip
    shown = label if ctx.parts == 1 else f"{label} [part {part + 1}/{ctx.parts}]"
    innocents = _trace_row(
        ctx.key, ctx.candidates, ctx.original, copies, attack, ctx.need, ctx.batch,
        shown if ctx.progress else "", first=numbers.start,
    )  # fmt: skip
    return _Part(innocents, time.time() - t0, leak, accuracy)


def _row_line(index: int, parts: list[_Part]) -> str:
    """Row ``index``'s table line from all its parts."""
    ctx = _CONTEXT
    rows = _rows(ctx.bed, ctx.plan)
    collusion = index == len(rows)
    guilty = [LEAKER, COLLUDER] if collusion else [LEAKER]
    innocents = _Innocents()
    for piece in parts:
        innocents.merge(piece.innocents)
    first = parts[0]
    assert first.leak is not None
    innocents.add(ctx.candidates, first.leak, frozenset(guilty))
    label = "collusion: 2 copies averaged" if collusion else rows[index][0]
    return _row(label, ctx.candidates, first.leak, first.accuracy, innocents,
                sum(piece.seconds for piece in parts), guilty)  # fmt: skip


class _Context:
    """What every row needs; set before the rows run (inherited by forked workers)."""

    def __init__(self, bed: bios.BiosTestbed, key: FingerprintKey, candidates: list[str],
                 original: State, options: MarkOptions, plan: MarkPlan, need: float,
                 batch: int, innocent_count: int) -> None:  # fmt: skip
        self.bed, self.key, self.candidates, self.original = bed, key, candidates, original
        self.options, self.plan, self.need, self.batch = options, plan, need, batch
        self.innocent_count = innocent_count
        self.progress = False
        self.parts = 1
        self.marked = mark_state(original, key, LEAKER, options)


_CONTEXT: _Context


def _table(jobs: int, selected: list[int]) -> list[str]:
    """The selected rows' lines, in order (``jobs`` worker processes share out the rows'
    parts; a line is printed as soon as all parts of its row are done)."""
    rows = _rows(_CONTEXT.bed, _CONTEXT.plan)
    parts = _CONTEXT.parts
    # the longest row (fine-tuning) first, so that it is not the one left running alone
    tasks = sorted(((i, p) for i in selected for p in range(parts)),
                   key=lambda t: t[0] >= len(rows) or "fine-tune" not in rows[t[0]][0])  # fmt: skip
    done: dict[int, dict[int, _Part]] = {i: {} for i in selected}
    lines: dict[int, str] = {}

    def finished(index: int, part: int, result: _Part) -> None:
        done[index][part] = result
        if len(done[index]) == parts:
            lines[index] = _row_line(index, [done[index][p] for p in range(parts)])
            print(lines[index], flush=True)

    if jobs <= 1:
        for index, part in tasks:
            finished(index, part, _run_part(index, part))
    else:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(jobs, initializer=_one_thread) as pool:
            for index, part, result in pool.imap_unordered(_indexed, tasks):
                finished(index, part, result)
    return [lines[i] for i in selected]


def _indexed(task: tuple[int, int]) -> tuple[int, int, _Part]:
    return task[0], task[1], _run_part(*task)


def _one_thread() -> None:
    torch.set_num_threads(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="The full specification is the defaults: --recipients 1000 --outsiders 999 "
        "--pairs 20 --stream-gb 4 (1,000 innocent copies a row).",
    )
    parser.add_argument("--recipients", type=int, default=1000, help="candidate recipients")
    parser.add_argument(
        "--outsiders",
        type=int,
        default=999,
        help="copies issued to other recipients (outside the list and on it, by turns), per "
        "row; with the unmarked original: the innocent copies of a row",
    )
    parser.add_argument(
        "--pairs", type=int, default=20, help="colluding pairs of recipients for the rate"
    )
    parser.add_argument("--strength", type=float, default=0.02)
    parser.add_argument(
        "--stream-gb",
        type=float,
        default=4.0,
        help="size of the safetensors file whose marking's peak RSS is measured (0: skip)",
    )
    parser.add_argument("--no-limits", action="store_true", help="skip the honest-limits runs")
    parser.add_argument(
        "--no-task-metrics", action="store_true", help="skip the task-metric lines (digits)"
    )
    parser.add_argument(
        "--null-copies",
        type=int,
        default=0,
        help="only run the null sweep: this many outsiders' copies (1%% noise) against every key",
    )
    parser.add_argument(
        "--batch", type=int, default=200, help="innocent copies traced per matrix product"
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes for the rows")
    parser.add_argument(
        "--parts",
        type=int,
        default=1,
        help="split each row's innocent copies into this many ranges, run as separate jobs "
        "(the same copies and seeds as one range; counts are summed)",
    )
    parser.add_argument(
        "--rows",
        default="",
        help="comma-separated row numbers to run (1 = as issued ... 10 = collusion; default "
        "all): a long table can be measured in several runs",
    )
    parser.add_argument(
        "--progress", action="store_true", help="a line per batch of innocent copies"
    )
    parser.add_argument(
        "--size", default="bios-small", help="bios testbed size (tests use a tiny one)"
    )
    args = parser.parse_args(argv)
    if args.parts < 1 or args.jobs < 1:
        parser.error("--parts and --jobs must be at least 1")
    torch.set_num_threads(1)
    started = time.time()
    print("command: .venv/bin/python benchmarks/fingerprints.py " + " ".join(sys.argv[1:]))
    bed = bios.BiosTestbed(args.size)
    original = {k: v.detach().clone() for k, v in bed.release(0).state_dict().items()}
    key = FingerprintKey(hashlib.sha256(b"weightvault fingerprint benchmark").digest())
    candidates = [f"recipient-{i:04d}" for i in range(args.recipients)]
    options = MarkOptions(strength=args.strength, heads=bed.size.heads)
    plan = plan_marks(StateReader(original).infos, heads=bed.size.heads)
    n = sum(plan.tensors[name].numel for name in plan.robust)
    need = math.sqrt(2 * (math.log(len(candidates)) - math.log(DEFAULT_ALPHA)))
    print(
        f"bios testbed: {sum(t.numel() for t in original.values())} parameters, robust mark on "
        f"{n} weights in {len(plan.robust)} tensors, {len(plan.groups)} unit groups; "
        f"{len(candidates)} recipients; a name needs z > {need:.2f} (corrected p < "
        f"{DEFAULT_ALPHA:g})"
    )
    if args.null_copies:
        _null_sweep(key, candidates, original, options, args.null_copies, need)
        return
    global _CONTEXT
    _CONTEXT = _Context(bed, key, candidates, original, options, plan, need, args.batch,
                        args.outsiders + 1)  # fmt: skip
    _CONTEXT.progress = args.progress
    _CONTEXT.parts = args.parts
    count = len(_rows(bed, plan)) + 1
    try:
        selected = sorted({int(n) - 1 for n in args.rows.split(",") if n.strip()}) or list(
            range(count)
        )
    except ValueError:
        parser.error(f"--rows {args.rows!r}: give row numbers 1 to {count}, comma-separated")
    if not all(0 <= i < count for i in selected):
        parser.error(f"--rows {args.rows!r}: rows are numbered 1 to {count}")
    if not args.no_task_metrics:
        _task_metrics(bed, key, original, _CONTEXT.marked, not args.size.endswith("tiny"))
    if args.stream_gb > 0:
        _streaming(args.stream_gb)
    print(
        f"\neach row: the leaker's copy and {args.outsiders + 1} innocent copies (the unmarked "
        f"original, then copies issued to recipients outside the list and on it by turns, "
        f"each transformed the same way with its own seed), each traced against all "
        f"{len(candidates)} keys\n"
    )
    header = (
        f"| {'transformation':<32} | leaker rank | leaker z | corrected p | named "
        f"| task acc | innocent copies | innocent pairs | false names | max innocent z "
        f"| on-list copies named |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|", flush=True)
    lines = _table(args.jobs, selected)
    if args.jobs > 1:
        print("\n".join(lines))
    print(f"\n(table in {time.time() - started:.0f} s)")
    _collusion_rate(key, candidates, original, plan, options, args.pairs)
    if not args.no_limits:
        print()
        _limits(bed, key, candidates, original, _CONTEXT.marked, plan, options, need)
    print(f"\ntotal {time.time() - started:.0f} s")


def _task_metrics(
    bed: bios.BiosTestbed, key: FingerprintKey, original: State, marked: State, digits: bool
) -> None:
    """Task accuracy of a marked copy next to the original's, on the bios testbed (as the
    table uses it) and on the tamper lab's digits testbed (a small GELU MLP, where the robust
    mark is a larger share of each weight's room), and how far the function-preserving mark
    alone moves the outputs."""
    only_permuted = mark_state(
        original, key, LEAKER, MarkOptions(strength=0.0, heads=bed.size.heads)
    )
    probe = bed.data().test.x
    model_a, model_b = bed.release(0), bed.release(0)
    model_a.load_state_dict(original)
    model_b.load_state_dict(only_permuted)
    with torch.no_grad():
        drift = float((model_a(probe) - model_b(probe)).abs().max())
    print(
        f"task metrics: bios (profession, 300 test bios): original {_accuracy(bed, original):.1f}%"
        f", marked {_accuracy(bed, marked):.1f}%; function-preserving mark alone: max |logit "
        f"change| {drift:.1e}"
    )
    if not digits:
        return
    from weightvault.tamper.digits import DigitsTestbed

    digits = DigitsTestbed()
    test = digits.data().test
    base = {k: v.detach().clone() for k, v in digits.release(0).state_dict().items()}
    scores = []
    for state in (base, *(mark_state(base, key, f"recipient-{i:04d}") for i in range(20))):
        model = digits.release(0)
        model.load_state_dict(state)
        model.eval()
        with torch.no_grad():
            scores.append(float((model(test.x).argmax(1) == test.desired).float().mean()) * 100)
    moves = [abs(s - scores[0]) for s in scores[1:]]
    print(
        f"task metrics: digits (digit >= 5, {len(test.x)} test images): original {scores[0]:.2f}%"
        f", 20 marked copies {min(scores[1:]):.2f}-{max(scores[1:]):.2f}% (largest move "
        f"{max(moves):.2f} points)"
    )


def _streaming(gigabytes: float) -> None:
    """Peak RSS of issuing a copy (``issue_copy``, what ``fingerprint issue`` runs) of a
    safetensors file of ``gigabytes`` (64 MiB tensors), next to the same on a file of one such
    tensor: the difference is what the file's size costs in memory (a model held whole would
    add the file's size, twice if held twice)."""
    import json
    import os
    import subprocess

    from safetensors.numpy import save_file

    from weightvault.fingerprint import create_fingerprint_key

    side = 4096  # a 4096 x 4096 float32 tensor: 64 MiB
    count = max(1, round(gigabytes * (1 << 30) / (side * side * 4)))
    with tempfile.TemporaryDirectory(dir=os.environ.get("WV_BENCH_TMP")) as folder:
        root = Path(folder)
        key = root / "fp.key"
        create_fingerprint_key(key)
        rng = np.random.default_rng(0)
        small, big = root / "small.safetensors", root / "big.safetensors"
        save_file({"layers.0.weight": rng.standard_normal((side, side), dtype=np.float32)},
                  str(small))  # fmt: skip
        _write_big(big, count, side, rng)
        peaks = []
        for model in (small, big):
            t0 = time.time()
            # the library call the command makes (issue_copy), in a process of its own: its
            # peak RSS is the command's without the command line's start-up
            process = subprocess.Popen(
                [sys.executable, "-c", _ISSUE, str(model), str(key), str(root / "out.safetensors")],
                stdout=subprocess.PIPE,
            )
            assert process.stdout is not None
            output = process.stdout.read()
            _pid, status, usage = os.wait4(process.pid, 0)
            if status != 0:
                raise SystemExit(f"issuing a copy of {model} failed")
            json.loads(output)
            peaks.append((usage.ru_maxrss / 1024, time.time() - t0))
            (root / "out.safetensors").unlink()
        size = big.stat().st_size / (1 << 30)
        print(
            f"streaming: issuing a copy of a {size:.2f} GiB safetensors file ({count} tensors "
            f"of 64 MiB): peak RSS {peaks[1][0]:.0f} MiB in {peaks[1][1]:.0f} s; on a 64 MiB "
            f"file: {peaks[0][0]:.0f} MiB; the file's size adds {peaks[1][0] - peaks[0][0]:.0f} "
            f"MiB"
        )


_ISSUE = """
import json, sys
from pathlib import Path
from weightvault.fingerprint import issue_copy, load_fingerprint_key
model, key, out = map(Path, sys.argv[1:])
print(json.dumps(issue_copy(model, out, load_fingerprint_key(key), "alice").to_json()))
"""


def _write_big(path: Path, count: int, side: int, rng: np.random.Generator) -> None:
    """A safetensors file of ``count`` float32 ``side x side`` tensors written one at a time
    (the benchmark itself must not hold the file in memory either)."""
    import json
    import struct

    size = side * side * 4
    header = {
        f"layers.{i}.weight": {"dtype": "F32", "shape": [side, side],
                               "data_offsets": [i * size, (i + 1) * size]}
        for i in range(count)
    }  # fmt: skip
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    block = rng.standard_normal((side, side), dtype=np.float32)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text)
        for i in range(count):
            handle.write((block * (1 + i / count)).tobytes())


def _collusion_rate(
    key: FingerprintKey,
    candidates: list[str],
    original: State,
    plan: MarkPlan,
    options: MarkOptions,
    pairs: int,
) -> None:
    """``pairs`` disjoint pairs of recipients on the list each average their (unit-matched)
    copies; each average is traced against every key: how often both, or at least one, are
    named, and whether anyone outside the pair is."""
    if pairs <= 0:
        return
    t0 = time.time()
    both = one = 0
    innocents = _Innocents()
    pairs = min(pairs, len(candidates) // 2)
    offset = min(100, len(candidates) - 2 * pairs)  # clear of the leaker and the colluder
    members = [(candidates[2 * i + offset], candidates[2 * i + offset + 1]) for i in range(pairs)]
    residuals = []
    for a, b in members:
        average = attacks.average_copies(
            mark_state(original, key, a, options), mark_state(original, key, b, options), plan
        )
        residuals.append(residual(StateReader(original), StateReader(average), plan).vectors)
    for (a, b), z in zip(members, z_scores(key, candidates, residuals), strict=True):
        named = {x.recipient for x in attributions(candidates, z) if x.attributed}
        both += {a, b} <= named
        one += bool({a, b} & named)
        innocents.add(candidates, z, frozenset({a, b}))
    print(
        f"collusion rate: {pairs} pairs of recipients averaging their copies: both named "
        f"{both}/{pairs}, at least one {one}/{pairs}; others named {innocents.false} in "
        f"{innocents.pairs} innocent pairs (max z {innocents.largest:.2f})  "
        f"({time.time() - t0:.0f} s)"
    )


def _null_sweep(
    key: FingerprintKey,
    candidates: list[str],
    original: State,
    options: MarkOptions,
    copies: int,
    need: float,
    batch: int = 100,
) -> None:
    """``copies`` copies issued to recipients outside the candidate list (1% noise added, as a
    leaker would), each traced against every candidate's key: every pair is innocent."""
    t0 = time.time()
    false = 0
    largest = -math.inf
    pairs = 0
    for start in range(0, copies, batch):
        suspects = [
            attacks.gaussian_noise(mark_state(original, key, f"outsider-{i}", options), 0.01, i)
            for i in range(start, min(copies, start + batch))
        ]
        z = _score(key, candidates, original, suspects)
        pairs += z.size
        largest = max(largest, float(z.max()))
        false += sum(1 for row in z for a in attributions(candidates, row) if a.attributed)
    print(
        f"null sweep: {copies} outsiders' copies (1% noise) x {len(candidates)} keys = {pairs} "
        f"innocent pairs; false names {false}; largest z {largest:.2f} (a name needs "
        f"{need:.2f}); {time.time() - t0:.0f} s"
    )


def _via_torch_file(state: State) -> State:
    """Saved as a torch state dict without the ``trunk.`` prefix and read back through the
    safe loader: another container and other names."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "leak.pt"
        torch.save({k.removeprefix("trunk."): v for k, v in state.items()}, path)
        reader = ModelReader(path)
        return {name: reader.tensor(name).clone() for name in reader.infos}


def _row(
    label: str,
    candidates: list[str],
    z: np.ndarray,
    accuracy: str,
    innocents: _Innocents,
    seconds: float,
    guilty: list[str],
) -> str:
    ranking = attributions(candidates, z)
    leaker = next(a for a in ranking if a.recipient == guilty[0])
    rank = [a.recipient for a in ranking].index(guilty[0]) + 1
    named = [a.recipient for a in ranking if a.attributed]
    named_text = "+".join("leaker" if r == LEAKER else "colluder" if r == COLLUDER else r
                          for r in named) or "nobody"  # fmt: skip
    on_list = f"{innocents.insiders_named}/{innocents.insiders}"
    return (
        f"| {label:<32} | {rank:>11} | {leaker.z:>8.1f} | {_p_text(leaker.log10_p_corrected):>11}"
        f" | {named_text:<5} | {accuracy:>8} | {innocents.copies:>15} | {innocents.pairs:>14} | "
        f"{innocents.false:>11} | {innocents.largest:>14.2f} | {on_list:>20} |  "
        f"({seconds:.0f} s; {innocents.recomputed} scores recomputed exactly, "
        f"screen error {innocents.gap:.0e})"
    )


def _limits(
    bed: bios.BiosTestbed,
    key: FingerprintKey,
    candidates: list[str],
    original: State,
    marked: State,
    plan: MarkPlan,
    options: MarkOptions,
    need: float,
) -> None:
    print(f"what breaks the marks (leaker's z; a name needs z > {need:.2f}):")
    cases: list[tuple[str, Callable[[], State]]] = [
        ("distillation into a fresh network, 150 steps", lambda: _distill(bed, marked, 150)),
        ("fine-tune 5 epochs at 10x the learning rate", lambda: _fine_tune(bed, marked, 1e-3, 5)),
        ("Gaussian noise, 30% of std", lambda: attacks.gaussian_noise(marked, 0.3, seed=2)),
        ("4-bit per tensor (no per-row scales)", lambda: attacks.quantize(marked, 4)),
        ("90% magnitude pruning", lambda: attacks.magnitude_prune(marked, 0.9)),
        ("rotations inside attention heads", lambda: _rotate_heads(marked, plan)),
    ]
    for label, make in cases:
        t0 = time.time()
        suspect = make()
        z = _score(key, candidates, original, [suspect])[0]
        ranking = attributions(candidates, z)
        leaker = next(a for a in ranking if a.recipient == LEAKER)
        named = [a.recipient for a in ranking if a.attributed]
        verdict = "named" if named == [LEAKER] else ("nobody" if not named else "+".join(named))
        print(
            f"  {label:<48} z = {leaker.z:7.1f}  {verdict:<7} task acc "
            f"{_accuracy(bed, suspect):5.1f}%  ({time.time() - t0:.0f} s)"
        )
    for copies in (4, 16, 32):
        t0 = time.time()
        members = [mark_state(original, key, candidates[i], options) for i in range(copies)]
        aligned = [members[0]] + [align_state(m, members[0], plan) for m in members[1:]]
        mean = {
            k: (sum(a[k].double() for a in aligned) / copies).to(v.dtype)
            if v.is_floating_point() else v
            for k, v in members[0].items()
        }  # fmt: skip
        z = _score(key, candidates, original, [mean])[0]
        ranking = attributions(candidates, z)
        named = {a.recipient for a in ranking if a.attributed}
        found = len(named & set(candidates[:copies]))
        false = len(named - set(candidates[:copies]))
        print(
            f"  collusion: {copies:>2} copies averaged{'':<22} named {found}/{copies} colluders, "
            f"{false} others; min colluder z {min(z[:copies]):.1f}  ({time.time() - t0:.0f} s)"
        )


if __name__ == "__main__":
    bios.set_cache_dir(Path.home() / ".cache" / "weightvault" / "tamper")
    main()
