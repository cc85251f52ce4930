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


class _Innocents:
    """Running count over innocent (copy, key) pairs: how many, how many named, the largest z."""

    def __init__(self) -> None:
        self.copies = 0
        self.pairs = 0
        self.false = 0
        self.largest = -math.inf

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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="The full specification is the defaults: --recipients 1000 --outsiders 999 "
        "--pairs 20 --stream-gb 4 (1,000 innocent copies a row; hours on 2 cores).",
    )
    parser.add_argument("--recipients", type=int, default=1000, help="candidate recipients")
    parser.add_argument(
        "--outsiders",
        type=int,
        default=999,
        help="copies issued to recipients outside the list, per row (with the unmarked "
        "original: the innocent copies of a row)",
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
        "--null-copies",
        type=int,
        default=0,
        help="only run the null sweep: this many outsiders' copies (1%% noise) against every key",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.time()
    print("command: .venv/bin/python benchmarks/fingerprints.py " + " ".join(sys.argv[1:]))
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
    if args.null_copies:
        _null_sweep(key, candidates, original, options, args.null_copies, need)
        return
    _task_metrics(bed, key, original, marked)
    if args.stream_gb > 0:
        _streaming(args.stream_gb)
    print(
        f"\neach row: the leaker's copy and {args.outsiders + 1} innocent copies (the unmarked "
        f"original and {args.outsiders} outsiders' copies, transformed the same way), each "
        f"traced against all {len(candidates)} keys\n"
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
        ("half the tensors, torch file", lambda s: _via_torch_file(attacks.subset(s, 0.5))),
    ]
    header = (
        f"| {'transformation':<32} | leaker rank | leaker z | corrected p | named "
        f"| task acc | innocent copies | innocent pairs | false names | max innocent z |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for label, change in rows:
        t0 = time.time()
        leaked = change(marked)
        z_leak = _score(key, candidates, original, [leaked])[0]
        innocents = _Innocents()
        innocents.add(candidates, z_leak, frozenset({LEAKER}))
        innocent_copies = (
            change(original)
            if i < 0
            else change(mark_state(original, key, f"outsider-{i}", options))
            for i in range(-1, args.outsiders)
        )
        _score_innocents(key, candidates, original, innocent_copies, innocents)
        accuracy = "-" if label.startswith("half") else f"{_accuracy(bed, leaked):.1f}%"
        _row(label, candidates, z_leak, accuracy, innocents, t0, [LEAKER])
    t0 = time.time()
    averaged = attacks.average_copies(marked, colluder, plan)
    z_pair = _score(key, candidates, original, [averaged])[0]
    innocents = _Innocents()
    innocents.add(candidates, z_pair, frozenset({LEAKER, COLLUDER}))
    pairs_copies = (
        attacks.average_copies(original, original, plan)
        if i < 0
        else attacks.average_copies(
            mark_state(original, key, f"outsider-{i}", options),
            mark_state(original, key, f"outsider-b{i}", options),
            plan,
        )
        for i in range(-1, args.outsiders)
    )
    _score_innocents(key, candidates, original, pairs_copies, innocents)
    _row("collusion: 2 copies averaged", candidates, z_pair, f"{_accuracy(bed, averaged):.1f}%",
         innocents, t0, [LEAKER, COLLUDER])  # fmt: skip
    print(f"\n(table in {time.time() - started:.0f} s)")
    _collusion_rate(key, candidates, original, plan, options, args.pairs)
    if not args.no_limits:
        print()
        _limits(bed, key, candidates, original, marked, plan, options, need)
    print(f"\ntotal {time.time() - started:.0f} s")


def _score_innocents(
    key: FingerprintKey,
    candidates: list[str],
    original: State,
    copies: Iterator[State],
    innocents: _Innocents,
    batch: int = 100,
) -> None:
    """Trace every copy against every key, ``batch`` residuals at a time (each recipient's
    pattern is generated once per batch); no copy is kept after its residual is taken."""
    plan = plan_marks(StateReader(original).infos)
    pending: list[dict[str, np.ndarray]] = []

    def flush() -> None:
        if pending:
            for row in z_scores(key, candidates, pending):
                innocents.add(candidates, row)
                innocents.copies += 1
            pending.clear()

    for copy in copies:
        pending.append(residual(StateReader(original), StateReader(copy), plan).vectors)
        if len(pending) == batch:
            flush()
    flush()


def _task_metrics(
    bed: bios.BiosTestbed, key: FingerprintKey, original: State, marked: State
) -> None:
    """Task accuracy of a marked copy next to the original's, on the bios testbed (as the
    table uses it) and on the tamper lab's digits testbed (a small GELU MLP, where the robust
    mark is a larger share of each weight's room), and how far the function-preserving mark
    alone moves the outputs."""
    only_permuted = mark_state(original, key, LEAKER, MarkOptions(strength=0.0, heads=4))
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
    t0: float,
    guilty: list[str],
) -> None:
    ranking = attributions(candidates, z)
    leaker = next(a for a in ranking if a.recipient == guilty[0])
    rank = [a.recipient for a in ranking].index(guilty[0]) + 1
    named = [a.recipient for a in ranking if a.attributed]
    named_text = "+".join("leaker" if r == LEAKER else "colluder" if r == COLLUDER else r
                          for r in named) or "nobody"  # fmt: skip
    print(
        f"| {label:<32} | {rank:>11} | {leaker.z:>8.1f} | {_p_text(leaker.log10_p_corrected):>11}"
        f" | {named_text:<5} | {accuracy:>8} | {innocents.copies:>15} | {innocents.pairs:>14} | "
        f"{innocents.false:>11} | {innocents.largest:>14.2f} |  ({time.time() - t0:.0f} s)"
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
