"""Red-teaming a set of models with an attack suite, always alongside the reference models.

The references are added by the lab, not by the caller, on the same seeds and the same attacks:
*random init* (the floor: a model that carries no harmful capability; one fresh initialisation
per seed) and the *undefended release* (what the defense started from), plus any the testbed adds
(e.g. the public base model). Candidates may give one model per seed (a defense trained with that
seed) or one model for every seed. A defended model whose training families cover every
fine-tuning family of the suite is refused: evaluation must include held-out families.

Seeds: at least :data:`MIN_SEEDS`, unless the run is ``quick`` (then the report says "not for
claims"). Results never depend on ``jobs`` (worker processes): every run is deterministic for its
seed and thread count (tested).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from weightvault._json import require_fields
from weightvault.errors import FormatError, UsageError
from weightvault.tamper._jsonfiles import JsonDocument
from weightvault.tamper.attacks import FrozenFeatures, run_attack
from weightvault.tamper.base import TamperModel, Testbed, random_init_model
from weightvault.tamper.defenses import DefenseRecord, desired_accuracy
from weightvault.tamper.finetune import parameter_counts
from weightvault.tamper.runs import AttackRun
from weightvault.tamper.spec import AnySpec, AttackSpec, AttackSuite, ProbeSpec

__all__ = [
    "MIN_SEEDS",
    "RANDOM_INIT",
    "UNDEFENDED",
    "ModelInfo",
    "SuiteResult",
    "check_seeds",
    "held_out_families",
    "run_suite",
]

RANDOM_INIT = "random-init"
UNDEFENDED = "undefended"
MIN_SEEDS = 3
MAX_RESULT_BYTES = 256 << 20
RESULTS_VERSION = 2

Candidate = tuple[TamperModel, DefenseRecord | None]


def check_seeds(seeds: tuple[int, ...], *, quick: bool) -> None:
    """At least :data:`MIN_SEEDS` distinct seeds, unless ``quick`` (never for claims)."""
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise UsageError(f"seeds {list(seeds)}: expected distinct non-negative integers")
    if len(seeds) < MIN_SEEDS and not quick:
        raise UsageError(
            f"{len(seeds)} seed(s): worst cases and intervals need at least {MIN_SEEDS}",
            hint="give at least 3 seeds, or make a quick run (its report is not for claims)",
        )
    if not seeds:
        raise UsageError("no seeds given")


@dataclass(frozen=True)
class ModelInfo:
    """One evaluated model: role, desired-task accuracy per seed, defense record per seed."""

    name: str
    role: str  # "reference" or "candidate"
    desired_by_seed: dict[int, float]
    defenses: dict[int, DefenseRecord] = field(default_factory=dict)

    @property
    def desired_acc(self) -> float:
        values = list(self.desired_by_seed.values())
        return sum(values) / len(values)

    @property
    def defense(self) -> DefenseRecord | None:
        """The record of the lowest seed (all seeds share method and families)."""
        return self.defenses[min(self.defenses)] if self.defenses else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "desired_by_seed": {str(k): v for k, v in sorted(self.desired_by_seed.items())},
            "defenses": {str(k): v.to_dict() for k, v in sorted(self.defenses.items())},
        }

    @classmethod
    def from_dict(cls, obj: Any, path: str) -> ModelInfo:
        if not isinstance(obj, dict) or set(obj) != {
            "name",
            "role",
            "desired_by_seed",
            "defenses",
        }:
            raise FormatError(f"{path}: expected name, role, desired_by_seed, defenses")
        if obj["role"] not in ("reference", "candidate"):
            raise FormatError(f"{path}.role: expected reference or candidate")
        try:
            desired = {int(k): float(v) for k, v in obj["desired_by_seed"].items()}
            defenses = {int(k): DefenseRecord.from_dict(v) for k, v in obj["defenses"].items()}
        except (AttributeError, TypeError, ValueError) as exc:
            raise FormatError(f"{path}: malformed desired_by_seed or defenses ({exc})") from exc
        if not desired:
            raise FormatError(f"{path}.desired_by_seed: must not be empty")
        return cls(str(obj["name"]), obj["role"], desired, defenses)


def held_out_families(defense: DefenseRecord | None, suite: AttackSuite) -> list[str]:
    """Families of ``suite`` the defense never trained against (all of them if undefended)."""
    trained = set(defense.training_families) if defense else set()
    return [f for f in suite.families if f not in trained]


@dataclass(frozen=True)
class SuiteResult(JsonDocument):
    """Everything one evaluation measured; the input of :mod:`weightvault.tamper.report`."""

    testbed: str
    suite: AttackSuite
    harmful_chance: float
    models: tuple[ModelInfo, ...]
    runs: tuple[AttackRun, ...]
    threads: int
    #: Test-split size (every run's per-example hits have this length).
    test_size: int = 0
    #: A quick run: fewer seeds or a small grid; its report is stamped "not for claims".
    quick: bool = False
    device: str = "cpu"
    #: The grid split (:meth:`GridSplit.to_dict`) and each attack's label, when the suite came
    #: from a grid.
    split: dict[str, Any] | None = None
    labels: dict[str, str] = field(default_factory=dict)
    #: Which defaults file configured the defenses: path, SHA-256, the values used.
    defaults: dict[str, Any] | None = None
    #: The release's parameters, counted (:func:`weightvault.tamper.finetune.parameter_counts`).
    parameters: dict[str, Any] | None = None
    version: int = RESULTS_VERSION

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.suite.seeds

    def model(self, name: str) -> ModelInfo:
        for info in self.models:
            if info.name == name:
                return info
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "testbed": self.testbed,
            "suite": self.suite.to_dict(),
            "harmful_chance": self.harmful_chance,
            "threads": self.threads,
            "test_size": self.test_size,
            "quick": self.quick,
            "device": self.device,
            "split": self.split,
            "labels": dict(sorted(self.labels.items())),
            "defaults": self.defaults,
            "parameters": self.parameters,
            "models": [m.to_dict() for m in self.models],
            "runs": [r.to_dict() for r in self.runs],
        }

    @classmethod
    def from_json(cls, data: bytes) -> SuiteResult:
        if len(data) > MAX_RESULT_BYTES:
            raise FormatError(f"results: larger than {MAX_RESULT_BYTES} bytes")
        try:
            obj = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"results: not valid JSON ({exc})") from exc
        keys = {
            "version",
            "testbed",
            "suite",
            "harmful_chance",
            "threads",
            "test_size",
            "quick",
            "device",
            "split",
            "labels",
            "defaults",
            "models",
            "runs",
        }
        if not isinstance(obj, dict):
            raise FormatError("results: expected an object")
        if obj.get("version") != RESULTS_VERSION:
            raise FormatError(
                f"results.version: unsupported version {obj.get('version')!r}; expected "
                f"{RESULTS_VERSION} (results of an older lab: run tamper attack again)"
            )
        # Results written before parameters were counted have no "parameters" field.
        require_fields(obj, keys | ({"parameters"} & obj.keys()), "results")
        if not isinstance(obj["models"], list) or not isinstance(obj["runs"], list):
            raise FormatError("results.models / results.runs: expected lists")
        if not isinstance(obj["quick"], bool):
            raise FormatError("results.quick: expected true or false")
        if not isinstance(obj["labels"], dict):
            raise FormatError("results.labels: expected an object")
        for key in ("split", "defaults", "parameters"):
            if obj.get(key) is not None and not isinstance(obj[key], dict):
                raise FormatError(f"results.{key}: expected an object or null")
        models = tuple(
            ModelInfo.from_dict(m, f"results.models[{i}]") for i, m in enumerate(obj["models"])
        )
        runs = tuple(
            AttackRun.from_dict(r, f"results.runs[{i}]") for i, r in enumerate(obj["runs"])
        )
        names = {m.name for m in models}
        for i, run in enumerate(runs):
            if run.model not in names:
                raise FormatError(f"results.runs[{i}].model: {run.model!r} is not a listed model")
        try:
            return cls(
                testbed=str(obj["testbed"]),
                suite=AttackSuite.from_dict(obj["suite"]),
                harmful_chance=float(obj["harmful_chance"]),
                models=models,
                runs=runs,
                threads=int(obj["threads"]),
                test_size=int(obj["test_size"]),
                quick=obj["quick"],
                device=str(obj["device"]),
                split=obj["split"],
                labels={str(k): str(v) for k, v in obj["labels"].items()},
                defaults=obj["defaults"],
                parameters=obj.get("parameters"),
            )
        except (TypeError, ValueError) as exc:
            raise FormatError(f"results: malformed ({exc})") from exc


# -- running -----------------------------------------------------------------------------------

#: What forked workers read (set by the parent just before it forks; copy-on-write).
_WORK: dict[str, Any] = {}


def _run_item(index: int) -> AttackRun:
    models: dict[tuple[str, int], TamperModel] = _WORK["models"]
    name, seed, spec, effective = _WORK["items"][index]
    return run_attack(
        models[(name, seed)],
        name,
        spec,
        _WORK["data"],
        effective,
        points=_WORK["points"],
        threads=_WORK["threads"],
        frozen=_WORK["frozen"][(name, seed)],
    )


def _worker_signals() -> None:
    """Workers leave Ctrl-C to the parent (which stops the pool) and die on SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _per_seed(
    candidate: Candidate | Mapping[int, Candidate], seeds: tuple[int, ...], name: str
) -> dict[int, Candidate]:
    if isinstance(candidate, tuple):
        return dict.fromkeys(seeds, candidate)
    missing = [s for s in seeds if s not in candidate]
    if missing:
        raise UsageError(f"model {name!r} has no version for seed {missing[0]}")
    return {s: candidate[s] for s in seeds}


def run_suite(
    testbed: Testbed,
    candidates: Mapping[str, Candidate | Mapping[int, Candidate]],
    suite: AttackSuite,
    *,
    threads: int = 1,
    jobs: int = 1,
    device: str = "cpu",
    quick: bool = False,
    split: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    defaults: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SuiteResult:
    """Run every attack of ``suite`` for every seed against the candidates and the references.

    ``candidates`` maps a name to one ``(model, record)`` for every seed, or to a mapping
    ``seed -> (model, record)`` (a defense trained once per seed). ``jobs`` > 1 runs attacks in
    that many forked worker processes (Linux; same results as ``jobs=1``).
    """
    seeds = suite.seeds
    check_seeds(seeds, quick=quick)
    if jobs < 1:
        raise UsageError("jobs must be >= 1")
    per_seed: dict[str, dict[int, tuple[TamperModel, DefenseRecord | None]]] = {
        RANDOM_INIT: {s: (random_init_model(testbed, s), None) for s in seeds},
        UNDEFENDED: dict.fromkeys(seeds, (testbed.release(0), None)),
    }
    roles = {RANDOM_INIT: "reference", UNDEFENDED: "reference"}
    for name, model in testbed.extra_references().items():
        per_seed[name] = dict.fromkeys(seeds, (model, None))
        roles[name] = "reference"
    for name, candidate in candidates.items():
        if name in per_seed:
            raise UsageError(f"model name {name!r} is taken by a reference model; rename it")
        versions = _per_seed(candidate, seeds, name)
        for _, defense in versions.values():
            finetune_held_out = [
                f for f in held_out_families(defense, suite) if not f.startswith("probe/")
            ]
            if not finetune_held_out:
                raise UsageError(
                    f"suite {suite.name!r} has no fine-tuning family that {name!r} was not "
                    "trained against; add attacks from held-out families (other optimizers, "
                    "schedules, low-rank adapters, benign-then-harmful, more data)"
                )
        per_seed[name] = versions
        roles[name] = "candidate"
    data = testbed.data()
    on_device = data.to(device)
    infos: list[ModelInfo] = []
    models: dict[tuple[str, int], TamperModel] = {}
    frozen: dict[tuple[str, int], FrozenFeatures] = {}
    computed: dict[int, FrozenFeatures] = {}
    items: list[tuple[str, int, AnySpec, int]] = []
    for name, versions in per_seed.items():
        desired: dict[int, float] = {}
        records: dict[int, DefenseRecord] = {}
        for seed, (model, record) in versions.items():
            model.eval()
            desired[seed] = desired_accuracy(model, data)
            if record is not None:
                records[seed] = record
            models[(name, seed)] = model.to(device)
            # One model shared by several seeds (the release) has its features computed once.
            if id(model) not in computed:
                computed[id(model)] = FrozenFeatures.of(model, on_device, threads)
            frozen[(name, seed)] = computed[id(model)]
        infos.append(ModelInfo(name, roles[name], desired, records))
        for spec in suite.attacks:
            for seed in seeds:
                # The spec's own seed picks the stream; the suite's seeds spread it.
                items.append((name, seed, spec, spec.seed * 1000 + seed))
    _WORK.update(
        models=models,
        frozen=frozen,
        items=items,
        data=on_device,
        points=suite.curve_points,
        threads=threads,
    )
    try:
        runs = _execute(len(items), jobs, device, progress)
    finally:
        _WORK.clear()
    return SuiteResult(
        testbed=testbed.name,
        suite=suite,
        harmful_chance=data.harmful_chance,
        models=tuple(infos),
        runs=tuple(runs),
        threads=threads,
        test_size=len(data.test),
        quick=quick,
        device=device,
        split=split,
        labels=dict(labels or {}),
        defaults=defaults,
        parameters=parameter_counts(
            testbed.release(0),
            [s for s in suite.attacks if isinstance(s, AttackSpec)],
            data.num_harmful,
            probes=any(isinstance(s, ProbeSpec) for s in suite.attacks),
        ),
    )


def _execute(
    count: int, jobs: int, device: str, progress: Callable[[str], None] | None
) -> list[AttackRun]:
    def say(i: int, run: AttackRun) -> None:
        if progress:
            progress(
                f"[{i + 1}/{count}] {run.model}: {run.attack} (seed {run.seed}) "
                f"{run.best_acc:.1%}{'' if run.status == 'ok' else ' ' + run.status}"
            )

    if jobs == 1 or count < 2 or device != "cpu" or not hasattr(os, "fork"):
        runs = []
        for i in range(count):
            runs.append(_run_item(i))
            say(i, runs[-1])
        return runs
    # Forked workers inherit the models and data (copy-on-write); each run is deterministic
    # for its seed and thread count, so the results do not depend on ``jobs``.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    context = multiprocessing.get_context("fork")
    out: list[AttackRun | None] = [None] * count
    try:
        with context.Pool(jobs, initializer=_worker_signals) as pool:
            for i, run in enumerate(pool.imap(_run_item, range(count))):
                out[i] = run
                say(i, run)
    finally:
        torch.set_num_threads(previous)
    return [r for r in out if r is not None]


#: Alias re-exported as ``weightvault.run_tamper_suite``.
run_tamper_suite = run_suite
