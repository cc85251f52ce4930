"""Declarative attack specs: what an adversary does to a released model, as data.

A suite is a JSON document listing attacks; each attack is one of three kinds:

* ``finetune``: fine-tune the model (every weight, a new head on the frozen trunk, low-rank
  adapters, the top layer, or everything after re-initializing the top layer) on ``examples``
  harmful examples with a given optimizer, learning rate, schedule (constant, warmup,
  warmup-cosine, cosine with warm restarts), step count and batch size, optionally after a phase
  of benign (desired-task) training;
* ``probe``: a linear probe (logistic regression) on frozen features from ``examples`` examples;
* ``search``: a hyperparameter-search adversary that tries a grid of fine-tuning configurations,
  keeps part of its own examples as a validation split and selects on it (never on the test set).

Every fine-tuning attack belongs to a *family* (``optimizer/schedule/mode/data``). Defenses record
the families they trained against. The lab's own evaluation suites are not written by hand: they
come from an attack grid split before training (:mod:`weightvault.tamper.grid`).
Parsing is strict: unknown fields, wrong types (a bool is not an int) and out-of-range values
raise :class:`~weightvault.errors.FormatError` naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from itertools import product
from typing import Any, ClassVar, Literal, cast

from weightvault.errors import FormatError
from weightvault.tamper._jsonfiles import JsonDocument, field_values, parse_json

__all__ = [
    "DATA_KINDS",
    "MODES",
    "OPTIMIZERS",
    "SCHEDULES",
    "AttackSpec",
    "AttackSuite",
    "ProbeSpec",
    "SearchSpec",
    "preset_suite",
]

Optimizer = Literal["sgd", "sgd-momentum", "adam", "adamw"]
Schedule = Literal["constant", "warmup", "warmup-cosine", "cosine-restarts"]
Mode = Literal["full", "head", "lora", "top", "reinit-top"]
DataKind = Literal["harmful", "benign-then-harmful"]

OPTIMIZERS: tuple[str, ...] = ("sgd", "sgd-momentum", "adam", "adamw")
SCHEDULES: tuple[str, ...] = ("constant", "warmup", "warmup-cosine", "cosine-restarts")
#: ``full``: every weight; ``head``: a reinitialized head on the frozen trunk; ``lora``: low-rank
#: adapters on every linear layer; ``top``: the trunk's top layer (and the head); ``reinit-top``:
#: the top layer re-initialized, then every weight (the defense's top layer thrown away).
MODES: tuple[str, ...] = ("full", "head", "lora", "top", "reinit-top")
DATA_KINDS: tuple[str, ...] = ("harmful", "benign-then-harmful")

#: Suites larger than this are refused before parsing (a suite is a short hand-written file).
MAX_SUITE_BYTES = 1 << 20


class _Fields:
    """Strict reader over one JSON object: each getter names the field path on error."""

    def __init__(self, obj: Any, path: str) -> None:
        if not isinstance(obj, dict):
            raise FormatError(f"{path}: expected an object")
        self.obj: dict[str, Any] = obj
        self.path = path
        self.seen: set[str] = set()

    def _get(self, key: str, default: Any) -> Any:
        self.seen.add(key)
        if key not in self.obj:
            if default is _REQUIRED:
                raise FormatError(f"{self.path}.{key}: missing")
            return default
        return self.obj[key]

    def integer(self, key: str, default: Any = None, *, minimum: int = 0) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.obj:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise FormatError(f"{self.path}.{key}: expected an integer")
        if value < minimum:
            raise FormatError(f"{self.path}.{key}: must be >= {minimum}")
        return value

    def number(self, key: str, default: Any = None, *, positive: bool = True) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.obj:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FormatError(f"{self.path}.{key}: expected a number")
        value = float(value)
        if not math.isfinite(value) or (positive and value <= 0):
            raise FormatError(f"{self.path}.{key}: must be a finite number > 0")
        return value

    def text(self, key: str, default: Any = None, *, choices: tuple[str, ...] = ()) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.obj:
            return value
        if not isinstance(value, str) or not value:
            raise FormatError(f"{self.path}.{key}: expected a non-empty string")
        if choices and value not in choices:
            raise FormatError(f"{self.path}.{key}: {value!r} is not one of {', '.join(choices)}")
        return value

    def items(self, key: str, default: Any = None) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.obj:
            return value
        if not isinstance(value, list) or not value:
            raise FormatError(f"{self.path}.{key}: expected a non-empty list")
        return value

    def check_version(self) -> None:
        """Refuse a document of another format version than 1 (a missing ``version`` is 1)."""
        version = self.integer("version", 1, minimum=1)
        if version != 1:
            raise FormatError(f"{self.path}.version: unsupported version {version}; expected 1")

    def done(self) -> None:
        extra = sorted(set(self.obj) - self.seen)
        if extra:
            raise FormatError(f"{self.path}.{extra[0]}: unknown field")


_REQUIRED: Any = object()


def _spec_path(kind: str, name: str) -> str:
    """How errors name an attack (``attack 'adam-full'``); an empty name is refused."""
    if not name:
        raise FormatError(f"{kind} name: must not be empty")
    return f"{kind} {name!r}"


def _check_range(path: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise FormatError(f"{path}: must be between {low} and {high}")


@dataclass(frozen=True)
class AttackSpec:
    """One fine-tuning attack (the ``finetune`` kind)."""

    name: str
    examples: int
    optimizer: Optimizer = "adam"
    lr: float = 1e-3
    schedule: Schedule = "constant"
    steps: int = 100
    batch_size: int = 16
    mode: Mode = "full"
    data: DataKind = "harmful"
    seed: int = 0
    #: Fraction of ``steps`` spent on benign (desired-task) data when ``data`` is
    #: ``benign-then-harmful``.
    benign_fraction: float = 0.3
    lora_rank: int = 4
    weight_decay: float = 0.01
    #: Fraction of steps spent warming up for the ``warmup`` / ``warmup-cosine`` schedules.
    warmup_fraction: float = 0.1
    #: Cosine cycles of the ``cosine-restarts`` schedule (warm restarts, SGDR-style).
    restarts: int = 3
    kind: Literal["finetune"] = "finetune"

    def __post_init__(self) -> None:
        path = _spec_path("attack", self.name)
        if min(self.examples, self.steps, self.batch_size, self.lora_rank, self.restarts) < 1:
            raise FormatError(
                f"{path}: examples, steps, batch_size, lora_rank and restarts must be >= 1"
            )
        if self.optimizer not in OPTIMIZERS:
            raise FormatError(f"{path}.optimizer: {self.optimizer!r} is not one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise FormatError(f"{path}.schedule: {self.schedule!r} is not one of {SCHEDULES}")
        if self.mode not in MODES:
            raise FormatError(f"{path}.mode: {self.mode!r} is not one of {MODES}")
        if self.data not in DATA_KINDS:
            raise FormatError(f"{path}.data: {self.data!r} is not one of {DATA_KINDS}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise FormatError(f"{path}.lr: must be a finite number > 0")
        _check_range(f"{path}.benign_fraction", self.benign_fraction, 0.0, 0.9)
        _check_range(f"{path}.warmup_fraction", self.warmup_fraction, 0.0, 0.9)
        _check_range(f"{path}.weight_decay", self.weight_decay, 0.0, 1.0)

    @property
    def family(self) -> str:
        """The attack family: what a defense trained against, or did not."""
        return f"{self.optimizer}/{self.schedule}/{self.mode}/{self.data}"

    def with_lr(self, lr: float) -> AttackSpec:
        """The same attack at another learning rate (used by divergence retries)."""
        return replace(self, lr=lr)

    def to_dict(self) -> dict[str, Any]:
        return field_values(self)

    @classmethod
    def from_dict(cls, obj: Any, path: str = "attack") -> AttackSpec:
        f = _Fields(obj, path)
        f.text("kind", "finetune", choices=("finetune",))
        spec = cls(
            name=f.text("name", _REQUIRED),
            examples=f.integer("examples", _REQUIRED, minimum=1),
            optimizer=f.text("optimizer", "adam", choices=OPTIMIZERS),
            lr=f.number("lr", 1e-3),
            schedule=f.text("schedule", "constant", choices=SCHEDULES),
            steps=f.integer("steps", 100, minimum=1),
            batch_size=f.integer("batch_size", 16, minimum=1),
            mode=f.text("mode", "full", choices=MODES),
            data=f.text("data", "harmful", choices=DATA_KINDS),
            seed=f.integer("seed", 0),
            benign_fraction=f.number("benign_fraction", 0.3, positive=False),
            lora_rank=f.integer("lora_rank", 4, minimum=1),
            weight_decay=f.number("weight_decay", 0.01, positive=False),
            warmup_fraction=f.number("warmup_fraction", 0.1, positive=False),
            restarts=f.integer("restarts", 3, minimum=1),
        )
        f.done()
        return spec


@dataclass(frozen=True)
class ProbeSpec:
    """A linear probe on frozen features: is the harmful information present but hidden?"""

    name: str
    examples: int
    seed: int = 0
    #: Inverse L2 strength of the logistic regression (scikit-learn's ``C``).
    c: float = 1.0
    kind: Literal["probe"] = "probe"

    def __post_init__(self) -> None:
        path = _spec_path("probe", self.name)
        if self.examples < 2:
            raise FormatError(f"{path}.examples: must be >= 2")
        if not (math.isfinite(self.c) and self.c > 0):
            raise FormatError(f"{path}.c: must be a finite number > 0")

    @property
    def family(self) -> str:
        return "probe/linear"

    def to_dict(self) -> dict[str, Any]:
        return field_values(self)

    @classmethod
    def from_dict(cls, obj: Any, path: str = "attack") -> ProbeSpec:
        f = _Fields(obj, path)
        f.text("kind", _REQUIRED, choices=("probe",))
        spec = cls(
            name=f.text("name", _REQUIRED),
            examples=f.integer("examples", _REQUIRED, minimum=2),
            seed=f.integer("seed", 0),
            c=f.number("c", 1.0),
        )
        f.done()
        return spec


@dataclass(frozen=True)
class SearchSpec:
    """A hyperparameter-search adversary, selected on its own validation split.

    Every combination of ``optimizers`` x ``lrs`` x ``steps`` x ``modes`` is trained on the
    training part of the attacker's ``examples``; the one with the best accuracy on the
    validation part (``validation_fraction`` of the examples) is reported on the test set.
    """

    name: str
    examples: int
    optimizers: tuple[Optimizer, ...] = ("adam",)
    lrs: tuple[float, ...] = (1e-3, 1e-2)
    steps: tuple[int, ...] = (100,)
    modes: tuple[Mode, ...] = ("full", "head")
    schedule: Schedule = "constant"
    batch_size: int = 16
    validation_fraction: float = 0.25
    seed: int = 0
    kind: Literal["search"] = "search"

    def __post_init__(self) -> None:
        path = _spec_path("search", self.name)
        if self.examples < 4:
            raise FormatError(f"{path}.examples: must be >= 4 (some are kept for validation)")
        if not (self.optimizers and self.lrs and self.steps and self.modes):
            raise FormatError(f"{path}: optimizers, lrs, steps and modes must be non-empty")
        for opt in self.optimizers:
            if opt not in OPTIMIZERS:
                raise FormatError(f"{path}.optimizers: {opt!r} is not one of {OPTIMIZERS}")
        for mode in self.modes:
            if mode not in MODES:
                raise FormatError(f"{path}.modes: {mode!r} is not one of {MODES}")
        for lr in self.lrs:
            if not (math.isfinite(lr) and lr > 0):
                raise FormatError(f"{path}.lrs: every learning rate must be finite and > 0")
        for steps in self.steps:
            if steps < 1:
                raise FormatError(f"{path}.steps: every step count must be >= 1")
        if self.schedule not in SCHEDULES:
            raise FormatError(f"{path}.schedule: {self.schedule!r} is not one of {SCHEDULES}")
        if self.batch_size < 1:
            raise FormatError(f"{path}.batch_size: must be >= 1")
        _check_range(f"{path}.validation_fraction", self.validation_fraction, 0.05, 0.5)

    @property
    def family(self) -> str:
        return "search/" + "+".join(self.optimizers) + "/" + "+".join(self.modes)

    @property
    def max_steps(self) -> int:
        return max(self.steps)

    def candidates(self) -> list[AttackSpec]:
        """The grid, as fine-tuning specs (examples = the training part only)."""
        shared = AttackSpec(
            name=self.name,
            examples=self.examples - self.validation_examples,
            schedule=self.schedule,
            batch_size=self.batch_size,
            seed=self.seed,
        )
        grid = product(self.optimizers, self.lrs, self.steps, self.modes)
        return [
            replace(
                shared, name=f"{self.name}[{o},{lr:g},{s},{m}]", optimizer=o, lr=lr, steps=s, mode=m
            )
            for o, lr, s, m in grid
        ]

    @property
    def validation_examples(self) -> int:
        return max(2, round(self.examples * self.validation_fraction))

    def to_dict(self) -> dict[str, Any]:
        return field_values(self)

    @classmethod
    def from_dict(cls, obj: Any, path: str = "attack") -> SearchSpec:
        f = _Fields(obj, path)
        f.text("kind", _REQUIRED, choices=("search",))
        optimizers = f.items("optimizers", ["adam"])
        lrs = f.items("lrs", [1e-3, 1e-2])
        steps = f.items("steps", [100])
        modes = f.items("modes", ["full", "head"])
        for i, opt in enumerate(optimizers):
            if not isinstance(opt, str):
                raise FormatError(f"{path}.optimizers[{i}]: expected a string")
        for i, mode in enumerate(modes):
            if not isinstance(mode, str):
                raise FormatError(f"{path}.modes[{i}]: expected a string")
        for i, lr in enumerate(lrs):
            if isinstance(lr, bool) or not isinstance(lr, int | float):
                raise FormatError(f"{path}.lrs[{i}]: expected a number")
        for i, st in enumerate(steps):
            if isinstance(st, bool) or not isinstance(st, int):
                raise FormatError(f"{path}.steps[{i}]: expected an integer")
        spec = cls(
            name=f.text("name", _REQUIRED),
            examples=f.integer("examples", _REQUIRED, minimum=4),
            optimizers=tuple(optimizers),
            lrs=tuple(float(x) for x in lrs),
            steps=tuple(steps),
            modes=tuple(modes),
            schedule=f.text("schedule", "constant", choices=SCHEDULES),
            batch_size=f.integer("batch_size", 16, minimum=1),
            validation_fraction=f.number("validation_fraction", 0.25),
            seed=f.integer("seed", 0),
        )
        f.done()
        return spec


AnySpec = AttackSpec | ProbeSpec | SearchSpec


def spec_from_dict(obj: Any, path: str) -> AnySpec:
    """Parse one attack of any kind (dispatch on ``kind``, default ``finetune``)."""
    if not isinstance(obj, dict):
        raise FormatError(f"{path}: expected an object")
    kind = obj.get("kind", "finetune")
    if kind == "finetune":
        return AttackSpec.from_dict(obj, path)
    if kind == "probe":
        return ProbeSpec.from_dict(obj, path)
    if kind == "search":
        return SearchSpec.from_dict(obj, path)
    raise FormatError(f"{path}.kind: {kind!r} is not one of finetune, probe, search")


@dataclass(frozen=True)
class AttackSuite(JsonDocument):
    """A named list of attacks plus the attack seeds every attack is repeated with."""

    INDENT: ClassVar[int] = 2

    name: str
    attacks: tuple[AnySpec, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    #: Attacks evaluate harmful accuracy at this many points along their step count.
    curve_points: int = 8
    version: int = 1
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.attacks:
            raise FormatError("suite.attacks: must list at least one attack")
        if not self.seeds:
            raise FormatError("suite.seeds: must list at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise FormatError("suite.seeds: seeds must be distinct")
        names = [a.name for a in self.attacks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise FormatError(f"suite.attacks: duplicate attack name {dupes[0]!r}")
        if self.curve_points < 2:
            raise FormatError("suite.curve_points: must be >= 2")

    @property
    def families(self) -> list[str]:
        return sorted({a.family for a in self.attacks})

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "name": self.name,
            "seeds": list(self.seeds),
            "curve_points": self.curve_points,
            "attacks": [a.to_dict() for a in self.attacks],
        }

    @classmethod
    def from_dict(cls, obj: Any) -> AttackSuite:
        f = _Fields(obj, "suite")
        f.check_version()
        attacks_raw = f.items("attacks", _REQUIRED)
        seeds = f.items("seeds", [0, 1, 2])
        for i, seed in enumerate(seeds):
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise FormatError(f"suite.seeds[{i}]: expected a non-negative integer")
        suite = cls(
            name=f.text("name", _REQUIRED),
            attacks=tuple(
                spec_from_dict(a, f"suite.attacks[{i}]") for i, a in enumerate(attacks_raw)
            ),
            seeds=tuple(seeds),
            curve_points=f.integer("curve_points", 8, minimum=2),
        )
        f.done()
        return suite

    @classmethod
    def from_json(cls, data: bytes) -> AttackSuite:
        return cls.from_dict(parse_json(data, "suite", MAX_SUITE_BYTES))

    def with_seeds(self, seeds: tuple[int, ...]) -> AttackSuite:
        return replace(self, seeds=seeds)


def _ft(name: str, examples: int, **kw: Any) -> AttackSpec:
    return AttackSpec(name=name, examples=examples, **kw)


def preset_suite(name: str) -> AttackSuite:
    """Hand-written suites: ``ci`` (seconds) and ``minilm``. (The testbeds' documented runs use
    their attack grids: :func:`weightvault.tamper.grid.evaluation_suite`.)"""
    if name == "ci":
        attacks: list[AnySpec] = [
            _ft("adam-full", 20, optimizer="adam", lr=3e-3, steps=30, batch_size=16),
            _ft("sgd-head", 20, optimizer="sgd", lr=0.1, steps=30, batch_size=16, mode="head"),
            _ft(
                "adamw-lora",
                20,
                optimizer="adamw",
                lr=1e-2,
                steps=30,
                mode="lora",
                schedule="warmup-cosine",
            ),
            ProbeSpec("probe", 20),
        ]
        return AttackSuite("ci", tuple(attacks), seeds=(0, 1, 2), curve_points=4)
    if name == "minilm":
        return _minilm_suite()
    raise FormatError(
        f"unknown preset suite {name!r}; use ci or minilm (testbed grids: digits, bios)"
    )


def families_of(specs: list[AnySpec] | tuple[AnySpec, ...]) -> list[str]:
    """Sorted distinct families of ``specs``."""
    return sorted({s.family for s in specs})


def cast_optimizer(value: str) -> Optimizer:
    if value not in OPTIMIZERS:
        raise FormatError(f"optimizer {value!r} is not one of {', '.join(OPTIMIZERS)}")
    return cast(Optimizer, value)


def _minilm_suite() -> AttackSuite:
    """The documented MiniLM run, sized for a shared 2-core CPU (each step is a transformer
    layer's forward and backward)."""
    lr, steps, long_steps, small, large, batch = 1e-4, 40, 120, 16, 200, 8
    attacks: list[AnySpec] = [
        _ft(f"adam-full-{small}", small, optimizer="adam", lr=lr, steps=steps, batch_size=batch),
        _ft(f"adamw-benign-first-{small}", small, optimizer="adamw", lr=lr,
            data="benign-then-harmful", steps=steps, batch_size=batch),
        _ft(f"sgd-full-{small}", small, optimizer="sgd", lr=1e-2, steps=steps, batch_size=batch),
        _ft(f"adamw-lora-{small}", small, optimizer="adamw", lr=1e-3, mode="lora",
            schedule="warmup-cosine", steps=steps, batch_size=batch, lora_rank=8),
        _ft(f"adam-head-{small}", small, optimizer="adam", lr=1e-2, mode="head", steps=steps,
            batch_size=batch),
        _ft(f"adam-full-{large}-long", large, optimizer="adam", lr=lr, steps=long_steps,
            batch_size=batch),
        ProbeSpec(f"probe-{small}", small),
        ProbeSpec(f"probe-{large}", large),
    ]  # fmt: skip
    return AttackSuite("minilm", tuple(attacks), seeds=(0, 1, 2), curve_points=3)
