"""The attack grid as data, and the fixed rule that splits it before any training.

A grid declares the attacker's axes: optimizer, learning rate (over at least two orders of
magnitude), batch size, steps, data budget (from 10 examples to the full attacker pool), mode
(full / LoRA / top layer / re-initialized top layer / a re-initialized head on the frozen trunk),
schedule (constant, warmup, warmup-cosine, cosine with warm restarts) and data (harmful, or benign
first). :meth:`AttackGrid.split` cuts it, by a rule fixed here and before any model is trained,
into

* **train-time adversaries**: what a defense may simulate while it trains. For the numeric axes
  (learning rate, batch size, data budget) these are the *middle* values: sorting an axis of n
  values, the ``n // 3`` smallest and the ``n // 3`` largest are held out, the rest is train-time.
  The categorical axes take the values the grid lists under ``train_time``;
* **held-out families**: attacks whose learning rate, effective batch size and data budget all
  lie *outside* the ranges the defenses trained with (any optimizer, mode, schedule or data).

:func:`evaluation_suite` turns a grid into the attacks the lab runs, by a second fixed rule: for
every budget, ``per_budget`` attacks: first a *reference attacker* with train-time settings (a
train-time adversary at a train-time budget, a held-out budget otherwise), then attacks with
held-out optimizer settings (held-out families at held-out budgets), plus a linear probe.
Nothing in this module looks at a result: the split and the suite depend on the grid alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from itertools import product
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

from weightvault.errors import FormatError
from weightvault.tamper._jsonfiles import JsonDocument, field_values, parse_json
from weightvault.tamper.spec import (
    _REQUIRED,
    DATA_KINDS,
    MODES,
    OPTIMIZERS,
    SCHEDULES,
    AnySpec,
    AttackSpec,
    AttackSuite,
    ProbeSpec,
    _Fields,
)

__all__ = [
    "FULL",
    "AttackGrid",
    "GridSplit",
    "Label",
    "default_grid",
    "evaluation_suite",
]

#: The budget keyword for "every example of the attacker pool".
FULL = "full"
MAX_GRID_BYTES = 1 << 16
Label = Literal["train-time", "held-out", "held-out-hparams", "held-out-budget", "probe", "other"]
_SGD_FAMILY = ("sgd", "sgd-momentum")
_SHORT = {"harmful": "h", "benign-then-harmful": "bh"}
#: The categorical axes, each with a train-time subset (``train_<axis>``).
_CATEGORICAL = ("optimizers", "modes", "schedules", "datas")


def _sorted_unique(values: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(sorted(set(values)))


def split_axis(values: tuple[float, ...]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The fixed rule for a numeric axis: ``(train-time values, held-out values)``.

    Sorted, the ``n // 3`` smallest and ``n // 3`` largest values are held out (so held-out values
    lie on both sides of, and outside, the train-time range); the middle is train-time.
    """
    ordered = _sorted_unique(values)
    k = len(ordered) // 3
    if k < 1:
        raise ValueError("an axis needs at least 3 distinct values to be split")
    return ordered[k : len(ordered) - k], ordered[:k] + ordered[len(ordered) - k :]


@dataclass(frozen=True)
class AttackGrid(JsonDocument):
    """A declared attack grid (see the module docstring); JSON round-trips byte for byte."""

    INDENT: ClassVar[int] = 2

    name: str
    optimizers: tuple[str, ...]
    #: Base learning rates (Adam / AdamW); the SGD family uses them times ``sgd_lr_scale``.
    lrs: tuple[float, ...]
    batch_sizes: tuple[int, ...]
    steps: tuple[int, ...]
    #: Attacker example counts; the keyword ``"full"`` is the whole attacker pool.
    budgets: tuple[int | str, ...]
    modes: tuple[str, ...] = MODES
    schedules: tuple[str, ...] = SCHEDULES
    datas: tuple[str, ...] = DATA_KINDS
    sgd_lr_scale: float = 10.0
    #: Categorical values a defense may train against.
    train_optimizers: tuple[str, ...] = ("adam", "adamw")
    train_modes: tuple[str, ...] = ("full",)
    train_schedules: tuple[str, ...] = ("constant", "warmup")
    train_datas: tuple[str, ...] = DATA_KINDS
    per_budget: int = 3
    probes: bool = True
    curve_points: int = 4
    lora_rank: int = 4
    seeds: tuple[int, ...] = (0, 1, 2)
    version: int = 1
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise FormatError("grid.name: must not be empty")
        for axis, allowed in (
            ("optimizers", OPTIMIZERS),
            ("modes", MODES),
            ("schedules", SCHEDULES),
            ("datas", DATA_KINDS),
        ):
            values: tuple[str, ...] = getattr(self, axis)
            if not values:
                raise FormatError(f"grid.{axis}: must not be empty")
            for value in values:
                if value not in allowed:
                    raise FormatError(f"grid.{axis}: {value!r} is not one of {', '.join(allowed)}")
            train: tuple[str, ...] = getattr(self, "train_" + axis)
            if not train or not set(train) <= set(values):
                raise FormatError(f"grid.train_time.{axis}: must be a non-empty subset of {axis}")
        for axis in ("lrs", "batch_sizes", "budgets"):
            if len(set(getattr(self, axis))) < 3:
                raise FormatError(f"grid.{axis}: needs at least 3 distinct values to be split")
        if any(not (math.isfinite(lr) and lr > 0) for lr in self.lrs):
            raise FormatError("grid.lrs: every learning rate must be finite and > 0")
        if max(self.lrs) / min(self.lrs) < 100 - 1e-9:
            raise FormatError("grid.lrs: must span at least two orders of magnitude")
        if min(self.batch_sizes) < 1 or not self.steps or min(self.steps) < 1:
            raise FormatError("grid.batch_sizes / grid.steps: values must be >= 1")
        for budget in self.budgets:
            if budget != FULL and (isinstance(budget, bool) or not isinstance(budget, int)):
                raise FormatError(f"grid.budgets: {budget!r} is not an integer or 'full'")
            if isinstance(budget, int) and budget < 2:
                raise FormatError("grid.budgets: example counts must be >= 2")
        if not (math.isfinite(self.sgd_lr_scale) and self.sgd_lr_scale > 0):
            raise FormatError("grid.sgd_lr_scale: must be a finite number > 0")
        if self.per_budget < 1 or self.curve_points < 2 or self.lora_rank < 1:
            raise FormatError("grid: per_budget, lora_rank >= 1 and curve_points >= 2")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise FormatError("grid.seeds: distinct non-negative integers, at least one")

    # -- serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        doc = field_values(self)
        del doc["extra"]
        doc["train_time"] = {axis: doc.pop(f"train_{axis}") for axis in _CATEGORICAL}
        return doc

    @classmethod
    def from_dict(cls, obj: Any) -> AttackGrid:
        f = _Fields(obj, "grid")
        f.check_version()
        train = _Fields(f._get("train_time", {}), "grid.train_time")

        def strings(reader: _Fields, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
            values = reader.items(key, list(default))
            for i, value in enumerate(values):
                if not isinstance(value, str):
                    raise FormatError(f"{reader.path}.{key}[{i}]: expected a string")
            return tuple(values)

        def numbers(key: str, integer: bool) -> tuple[Any, ...]:
            values = f.items(key, _REQUIRED)
            for i, value in enumerate(values):
                ok = isinstance(value, int) if integer else isinstance(value, int | float)
                if key == "budgets" and value == FULL:
                    continue
                if isinstance(value, bool) or not ok:
                    kind = "an integer" if integer else "a number"
                    raise FormatError(f"grid.{key}[{i}]: expected {kind}")
            return tuple(values if integer else (float(v) for v in values))

        optimizers = strings(f, "optimizers", OPTIMIZERS)
        modes = strings(f, "modes", MODES)
        schedules = strings(f, "schedules", SCHEDULES)
        datas = strings(f, "datas", DATA_KINDS)
        seeds = f.items("seeds", [0, 1, 2])
        for i, seed in enumerate(seeds):
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise FormatError(f"grid.seeds[{i}]: expected an integer")
        probes = f._get("probes", True)
        if not isinstance(probes, bool):
            raise FormatError("grid.probes: expected true or false")
        grid = cls(
            name=f.text("name", _REQUIRED),
            optimizers=optimizers,
            lrs=numbers("lrs", integer=False),
            batch_sizes=numbers("batch_sizes", integer=True),
            steps=numbers("steps", integer=True),
            budgets=numbers("budgets", integer=True),
            modes=modes,
            schedules=schedules,
            datas=datas,
            sgd_lr_scale=f.number("sgd_lr_scale", 10.0),
            train_optimizers=strings(train, "optimizers", ("adam", "adamw")),
            train_modes=strings(train, "modes", ("full",)),
            train_schedules=strings(train, "schedules", ("constant", "warmup")),
            train_datas=strings(train, "datas", DATA_KINDS),
            per_budget=f.integer("per_budget", 3, minimum=1),
            probes=probes,
            curve_points=f.integer("curve_points", 4, minimum=2),
            lora_rank=f.integer("lora_rank", 4, minimum=1),
            seeds=tuple(seeds),
        )
        train.done()
        f.done()
        return grid

    @classmethod
    def from_json(cls, data: bytes) -> AttackGrid:
        return cls.from_dict(parse_json(data, "grid", MAX_GRID_BYTES))

    # -- the split -----------------------------------------------------------------------------

    def resolved_budgets(self, pool_size: int) -> tuple[int, ...]:
        """Budgets as example counts (``full`` = the attacker pool), sorted, distinct."""
        out: set[int] = set()
        for budget in self.budgets:
            count = pool_size if budget == FULL else int(budget)
            if count > pool_size:
                raise FormatError(
                    f"grid.budgets: {count} examples but the attacker pool has {pool_size}"
                )
            out.add(count)
        if len(out) < 3:
            raise FormatError("grid.budgets: needs at least 3 distinct example counts")
        return tuple(sorted(out))

    def split(self, pool_size: int) -> GridSplit:
        """Apply the fixed rule (module docstring) for an attacker pool of ``pool_size``."""
        train_lrs, held_lrs = split_axis(self.lrs)
        train_batches, held_batches = split_axis(tuple(float(b) for b in self.batch_sizes))
        train_budgets, held_budgets = split_axis(
            tuple(float(b) for b in self.resolved_budgets(pool_size))
        )
        return GridSplit(
            grid=self,
            pool_size=pool_size,
            train_lrs=train_lrs,
            held_lrs=held_lrs,
            train_batches=tuple(int(b) for b in train_batches),
            held_batches=tuple(int(b) for b in held_batches),
            train_budgets=tuple(int(b) for b in train_budgets),
            held_budgets=tuple(int(b) for b in held_budgets),
        )

    def with_seeds(self, seeds: tuple[int, ...]) -> AttackGrid:
        return replace(self, seeds=seeds)


def lr_scale(grid: AttackGrid, optimizer: str) -> float:
    """Learning rates of the SGD family are the base rates times ``sgd_lr_scale``."""
    return grid.sgd_lr_scale if optimizer in _SGD_FAMILY else 1.0


@dataclass(frozen=True)
class GridSplit:
    """The train-time / held-out split of a grid for one attacker pool size."""

    grid: AttackGrid
    pool_size: int
    train_lrs: tuple[float, ...]
    held_lrs: tuple[float, ...]
    train_batches: tuple[int, ...]
    held_batches: tuple[int, ...]
    train_budgets: tuple[int, ...]
    held_budgets: tuple[int, ...]

    @property
    def lr_range(self) -> tuple[float, float]:
        return min(self.train_lrs), max(self.train_lrs)

    @property
    def budget_range(self) -> tuple[int, int]:
        return min(self.train_budgets), max(self.train_budgets)

    def effective_batches(self, budget: int) -> set[int]:
        """Batch sizes a train-time adversary with ``budget`` examples actually uses."""
        return {min(b, budget) for b in self.train_batches}

    def base_lr(self, spec: AttackSpec) -> float:
        return spec.lr / lr_scale(self.grid, spec.optimizer)

    def label(self, spec: AnySpec) -> Label:
        """``train-time`` (a defense may have simulated it), ``held-out`` (learning rate,
        effective batch size and budget all outside the train-time ranges), ``held-out-hparams``
        (optimizer settings outside, budget inside), ``held-out-budget`` (train-time settings,
        budget outside), ``probe``, or ``other``."""
        if isinstance(spec, ProbeSpec):
            return "probe"
        if not isinstance(spec, AttackSpec):
            return "other"
        low, high = self.lr_range
        lr = self.base_lr(spec)
        lr_inside = low * (1 - 1e-9) <= lr <= high * (1 + 1e-9)
        lr_train = any(math.isclose(lr, t, rel_tol=1e-9) for t in self.train_lrs)
        batch = min(spec.batch_size, spec.examples)
        batch_train = batch in self.effective_batches(spec.examples)
        batch_inside = (
            min(self.effective_batches(spec.examples))
            <= batch
            <= max(self.effective_batches(spec.examples))
        )
        b_low, b_high = self.budget_range
        budget_inside = b_low <= spec.examples <= b_high
        grid = self.grid
        categorical = (
            spec.optimizer in grid.train_optimizers
            and spec.mode in grid.train_modes
            and spec.schedule in grid.train_schedules
            and spec.data in grid.train_datas
        )
        if (
            categorical
            and lr_train
            and batch_train
            and spec.examples in self.train_budgets
            and spec.lora_rank == grid.lora_rank
        ):
            return "train-time"
        if not lr_inside and not batch_inside:
            return "held-out-hparams" if budget_inside else "held-out"
        if categorical and lr_train and batch_train and not budget_inside:
            return "held-out-budget"
        return "other"

    def to_dict(self) -> dict[str, Any]:
        """What the report states about the split."""
        grid = self.grid
        return {
            "rule": (
                "numeric axes sorted; the n // 3 smallest and n // 3 largest values are held out, "
                "the middle is train-time; held-out attacks have learning rate, effective batch "
                "size and data budget outside the train-time ranges"
            ),
            "grid": grid.name,
            "grid_sha256": grid.sha256,
            "pool_size": self.pool_size,
            "train_time": {
                "lrs": list(self.train_lrs),
                "batch_sizes": list(self.train_batches),
                "budgets": list(self.train_budgets),
                "optimizers": list(grid.train_optimizers),
                "modes": list(grid.train_modes),
                "schedules": list(grid.train_schedules),
                "datas": list(grid.train_datas),
            },
            "held_out": {
                "lrs": list(self.held_lrs),
                "batch_sizes": list(self.held_batches),
                "budgets": list(self.held_budgets),
                "optimizers": list(grid.optimizers),
                "modes": list(grid.modes),
                "schedules": list(grid.schedules),
                "datas": list(grid.datas),
            },
            "sgd_lr_scale": grid.sgd_lr_scale,
        }

    def train_time_adversaries(self, steps: int) -> list[AttackSpec]:
        """Every train-time adversary with ``steps`` steps (what defenses and tuning may use)."""
        grid = self.grid
        out: list[AttackSpec] = []
        for opt, mode, sched, data, lr, batch, budget in product(
            grid.train_optimizers,
            grid.train_modes,
            grid.train_schedules,
            grid.train_datas,
            self.train_lrs,
            self.train_batches,
            self.train_budgets,
        ):
            out.append(_grid_attack(grid, opt, mode, sched, data, lr, batch, budget, steps))
        return out


def _grid_attack(
    grid: AttackGrid,
    opt: str,
    mode: str,
    sched: str,
    data: str,
    lr: float,
    batch: int,
    budget: int,
    steps: int,
) -> AttackSpec:
    """One attack of the grid, named after its settings (``lr``: the base learning rate)."""
    scaled = lr * lr_scale(grid, opt)
    return AttackSpec(
        name=f"{opt}-{mode}-{sched}-{_SHORT[data]}-lr{scaled:g}-b{batch}-n{budget}-s{steps}",
        examples=budget,
        optimizer=cast(Any, opt),
        lr=scaled,
        schedule=cast(Any, sched),
        steps=steps,
        batch_size=batch,
        mode=cast(Any, mode),
        data=cast(Any, data),
        lora_rank=grid.lora_rank,
    )


def _held_combo(grid: AttackGrid, i: int) -> tuple[str, str, str, str]:
    """The i-th held-out attack's optimizer, mode, schedule and data: each axis cycles through
    its values (every mode within the first ``len(modes)`` attacks, and so on), the pairings
    rotating as the index grows."""

    def pick(values: tuple[str, ...], offset: int) -> str:
        n = len(values)
        return values[(i + offset + i // n) % n]

    return (
        pick(grid.optimizers, 2),
        grid.modes[i % len(grid.modes)],
        pick(grid.schedules, 1),
        pick(grid.datas, 0),
    )


def evaluation_suite(grid: AttackGrid, pool_size: int) -> tuple[AttackSuite, GridSplit]:
    """The attacks the lab runs for ``grid`` (the fixed rule of the module docstring)."""
    split = grid.split(pool_size)
    train_combos = list(
        product(grid.train_optimizers, grid.train_modes, grid.train_schedules, grid.train_datas)
    )
    attacks: list[AnySpec] = []
    held_index = 0
    train_index = 0
    for budget in grid.resolved_budgets(pool_size):
        for slot in range(grid.per_budget):
            if slot == 0:
                # The reference attacker: train-time settings (a train-time adversary at a
                # train-time budget; at a held-out budget it differs in the budget only).
                opt, mode, sched, data = train_combos[train_index % len(train_combos)]
                lr = split.train_lrs[train_index % len(split.train_lrs)]
                batch = split.train_batches[train_index % len(split.train_batches)]
                steps = grid.steps[train_index % len(grid.steps)]
                train_index += 1
            else:
                opt, mode, sched, data = _held_combo(grid, held_index)
                lr = split.held_lrs[held_index % len(split.held_lrs)]
                batch = _held_batch(split, budget, held_index)
                steps = grid.steps[held_index % len(grid.steps)]
                held_index += 1
            attacks.append(_grid_attack(grid, opt, mode, sched, data, lr, batch, budget, steps))
        if grid.probes:
            attacks.append(ProbeSpec(f"probe-n{budget}", budget))
    suite = AttackSuite(grid.name, tuple(attacks), seeds=grid.seeds, curve_points=grid.curve_points)
    return suite, split


def _held_batch(split: GridSplit, budget: int, index: int) -> int:
    """A held-out batch size whose effective size (capped by the budget) lies outside the
    effective train-time sizes; the smallest held-out size when none does (tiny budgets)."""
    train = split.effective_batches(budget)
    usable = [b for b in split.held_batches if not min(train) <= min(b, budget) <= max(train)]
    if usable:
        return usable[index % len(usable)]
    return min(split.held_batches)


#: The built-in grids are data files beside this module (``data/grid-<testbed>[-quick].json``).
DATA_DIR = Path(__file__).resolve().parent / "data"


def default_grid(testbed: str, *, quick: bool = False) -> AttackGrid:
    """The declared grid of a built-in testbed (``quick``: a small one, not for claims)."""
    path = DATA_DIR / f"grid-{testbed}{'-quick' if quick else ''}.json"
    if not path.is_file():
        raise FormatError(
            f"no built-in attack grid for testbed {testbed!r}",
            hint="give a grid file (weightvault tamper grid digits prints one to start from)",
        )
    return AttackGrid.from_json(path.read_bytes())
