"""Leak-attribution robustness table: 1,000 recipients, one leaked copy, each removal attempt.

The model is the tamper lab's ``bios`` testbed (a 4-layer BERT encoder trained from scratch,
hidden 192, 4 heads, 2.5 M parameters, profession head; ``docs/tamper.md``), marked for one
recipient among ``--recipients`` (default 1,000) with the default options (strength 0.02, heads
permuted). For each transformation the benchmark

* traces the leaker's transformed copy against every recipient's key (one residual, 1,000
  correlations) and reports the leaker's rank, z and Bonferroni-corrected p-value, and whether
  anyone else is named;
* traces the same transformation of the *unmarked* original and of ``--outsiders`` copies
  issued to recipients outside the candidate list, against the same 1,000 keys: every
  (copy, key) pair there is innocent, and any name is a false attribution.

Why innocent pairs can be counted per key: under H0 a key's pattern is a keyed PRF output
independent of the suspect, so "1,000 keys against one innocent copy" and "one key against
1,000 innocent copies" are the same experiment; the table gives both kinds of pairs and their
largest z, next to the z a name needs (6.44 for 1,000 recipients at 1e-6).

It then measures what breaks the marks (distillation into a fresh network, heavier
fine-tuning, more colluders, rotations inside attention heads) for the honest-limits section.

Usage::

    .venv/bin/python benchmarks/fingerprints.py               # defaults (a few minutes)
    .venv/bin/python benchmarks/fingerprints.py --recipients 200 --outsiders 2   # quick

The bios encoder is trained on first use (minutes) and cached in ~/.cache/weightvault/tamper.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import tempfile
import time
from collections.abc import Callable
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


def _fine_tune(bed: bios.BiosTestbed, state: State, lr: float = 1e-4, epochs: int = 1) -> State:
    """``epochs`` over the attacker pool (800 bios, batch 32) on another task, gender, with a
    new head: AdamW at the release recipe's learning rate unless told otherwise."""
    model = bed.release(0)
    model.load_state_dict(state)
    head = nn.Linear(bed.feature_dim, 2)
    optimizer = torch.optim.AdamW(
        [{"params": model.trunk.parameters(), "lr": lr}, {"params": head.parameters(), "lr": 3e-3}]
    )
    pool = bed.data().attacker
    generator = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        order = torch.randperm(len(pool), generator=generator)
        for start in range(0, len(pool), 32):
            idx = order[start : start + 32]
            loss = nn.functional.cross_entropy(head(model.trunk(pool.x[idx])), pool.harmful[idx])
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    out = dict(state)
    out.update({f"trunk.{k}": v.detach().clone() for k, v in model.trunk.state_dict().items()})
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--outsiders", type=int, default=8, help="innocent copies per row")
    parser.add_argument("--strength", type=float, default=0.02)
    parser.add_argument(
        "--null-copies",
        type=int,
        default=0,
        help="only run the null sweep: this many outsiders' copies (1% noise) against every key",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    bios.set_cache_dir(Path.home() / ".cache" / "weightvault" / "tamper")
    bed = bios.BiosTestbed()
    original = {k: v.detach().clone() for k, v in bed.release(0).state_dict().items()}
    key = FingerprintKey(hashlib.sha256(b"weightvault fingerprint benchmark").digest())
    candidates = [f"recipient-{i:04d}" for i in range(args.recipients)]
    options = MarkOptions(strength=args.strength, heads=bed.size.heads)
    plan = plan_marks(StateReader(original).infos, heads=bed.size.heads)
    marked = mark_state(original, key, LEAKER, options)
    colluder = mark_state(original, key, COLLUDER, options)
    n = sum(plan.tensors[name].numel for name in plan.robust)
    need = math.sqrt(2 * (math.log(len(candidates)) - math.log(DEFAULT_ALPHA)))
    print(
        f"bios testbed: {sum(t.numel() for t in original.values())} parameters, robust mark on "
        f"{n} weights in {len(plan.robust)} tensors, {len(plan.groups)} unit groups; "
        f"{len(candidates)} recipients; a name needs z > {need:.2f} (corrected p < "
        f"{DEFAULT_ALPHA:g})"
    )
    base_acc = _accuracy(bed, original)
    only_permuted = mark_state(original, key, LEAKER, MarkOptions(strength=0.0, heads=4))
    probe = bed.data().test.x
    model_a, model_b = bed.release(0), bed.release(0)
    model_a.load_state_dict(original)
    model_b.load_state_dict(only_permuted)
    with torch.no_grad():
        drift = float((model_a(probe) - model_b(probe)).abs().max())
    if args.null_copies:
        _null_sweep(key, candidates, original, options, args.null_copies, need)
        return
    print(
        f"task (profession, 300 test bios): original {base_acc:.1f}%, marked "
        f"{_accuracy(bed, marked):.1f}%; function-preserving mark alone: max |logit change| "
        f"{drift:.1e}\n"
    )

    rows: list[tuple[str, Callable[[State], State]]] = [
        ("as issued", lambda s: s),
        ("Gaussian noise, 1% of std", lambda s: attacks.gaussian_noise(s, 0.01, seed=1)),
        ("int8 (per tensor)", lambda s: attacks.quantize(s, 8)),
        ("4-bit (per row)", lambda s: attacks.quantize(s, 4, per_row=True)),
        ("50% magnitude pruning", lambda s: attacks.magnitude_prune(s, 0.5)),
        ("fine-tune 1 epoch, other task", lambda s: _fine_tune(bed, s)),
        ("re-permuted units", lambda s: attacks.repermute(s, plan, seed=7)),
        ("canonicalized (units sorted)", lambda s: attacks.canonicalize(s, plan)),
        ("half the tensors, torch file", lambda s: attacks.subset(s, 0.5)),
    ]
    header = (
        f"| {'transformation':<32} | leaker rank | leaker z | corrected p | named "
        f"| task acc | innocent pairs | false names | max innocent z |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for label, change in rows:
        t0 = time.time()
        suspects = [change(marked), change(original)]
        for i in range(args.outsiders):
            suspects.append(change(mark_state(original, key, f"outsider-{i}", options)))
        if label.startswith("half"):
            suspects = [_via_torch_file(s) for s in suspects]
        z = _score(key, candidates, original, suspects)
        _row(label, candidates, z, _accuracy_or_blank(bed, suspects[0], label), t0, [LEAKER])
    t0 = time.time()
    averaged = attacks.average_copies(marked, colluder, plan)
    suspects = [averaged, attacks.average_copies(original, original, plan)]
    for i in range(args.outsiders):
        outsider_pair = (
            mark_state(original, key, f"outsider-{i}", options),
            mark_state(original, key, f"outsider-b{i}", options),
        )
        suspects.append(attacks.average_copies(*outsider_pair, plan))
    z = _score(key, candidates, original, suspects)
    _row("collusion: 2 copies averaged", candidates, z, _accuracy(bed, averaged), t0,
         [LEAKER, COLLUDER])  # fmt: skip
    print(f"\n(table in {time.time() - started:.0f} s)\n")
    _limits(bed, key, candidates, original, marked, plan, options, need)
    print(f"\ntotal {time.time() - started:.0f} s")


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


def _accuracy_or_blank(bed: bios.BiosTestbed, state: State, label: str) -> str:
    if label.startswith("half"):
        return "-"
    return f"{_accuracy(bed, state):.1f}%"


def _via_torch_file(state: State) -> State:
    """Half the tensors, saved as a torch state dict without the ``trunk.`` prefix, read back
    through the safe loader: another container, other names, a subset of layers."""
    kept = attacks.subset(state, 0.5)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "leak.pt"
        torch.save({k.removeprefix("trunk."): v for k, v in kept.items()}, path)
        reader = ModelReader(path)
        return {name: reader.tensor(name).clone() for name in reader.infos}


def _row(
    label: str,
    candidates: list[str],
    z: np.ndarray,
    accuracy: float | str,
    t0: float,
    guilty: list[str],
) -> None:
    ranking = attributions(candidates, z[0])
    leaker = next(a for a in ranking if a.recipient == guilty[0])
    rank = [a.recipient for a in ranking].index(guilty[0]) + 1
    named = [a.recipient for a in ranking if a.attributed]
    named_text = "+".join("leaker" if r == LEAKER else "colluder" if r == COLLUDER else r
                          for r in named) or "nobody"  # fmt: skip
    innocent = [z[0, i] for i, r in enumerate(candidates) if r not in guilty]
    false = sum(1 for r in named if r not in guilty)
    for row in z[1:]:
        innocent.extend(row.tolist())
        false += sum(1 for a in attributions(candidates, row) if a.attributed)
    acc = accuracy if isinstance(accuracy, str) else f"{accuracy:.1f}%"
    print(
        f"| {label:<32} | {rank:>11} | {leaker.z:>8.1f} | {_p_text(leaker.log10_p_corrected):>11}"
        f" | {named_text:<5} | {acc:>8} | {len(innocent):>14} | {false:>11} | "
        f"{max(innocent):>14.2f} |  ({time.time() - t0:.0f} s)"
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
    main()
