"""Red-teaming a set of models with an attack suite, always alongside the reference models.

The references are added by the lab, not by the caller: *random init* (the floor: a model that
carries no harmful capability) and the *undefended release* (what the defense started from), plus
any the testbed adds (e.g. the public base model). A defended model whose training families cover
every fine-tuning family of the suite is refused: evaluation must include held-out families.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from weightvault.errors import FormatError, UsageError
from weightvault.tamper.attacks import AttackRun, run_attack
from weightvault.tamper.base import TamperModel, Testbed, random_init_model
from weightvault.tamper.defenses import DefenseRecord
from weightvault.tamper.spec import AttackSuite

__all__ = [
    "RANDOM_INIT",
    "UNDEFENDED",
    "ModelInfo",
    "SuiteResult",
    "held_out_families",
    "run_suite",
]

RANDOM_INIT = "random-init"
UNDEFENDED = "undefended"
MAX_RESULT_BYTES = 64 << 20


@dataclass(frozen=True)
class ModelInfo:
    """One evaluated model: its role, desired-task accuracy and (if defended) defense record."""

    name: str
    role: str  # "reference" or "candidate"
    desired_acc: float
    defense: DefenseRecord | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "desired_acc": self.desired_acc,
            "defense": None if self.defense is None else self.defense.to_dict(),
        }

    @classmethod
    def from_dict(cls, obj: Any, path: str) -> ModelInfo:
        if not isinstance(obj, dict) or set(obj) != {"name", "role", "desired_acc", "defense"}:
            raise FormatError(f"{path}: expected name, role, desired_acc, defense")
        if obj["role"] not in ("reference", "candidate"):
            raise FormatError(f"{path}.role: expected reference or candidate")
        defense = None if obj["defense"] is None else DefenseRecord.from_dict(obj["defense"])
        return cls(str(obj["name"]), obj["role"], float(obj["desired_acc"]), defense)


def held_out_families(defense: DefenseRecord | None, suite: AttackSuite) -> list[str]:
    """Families of ``suite`` the defense never trained against (all of them if undefended)."""
    trained = set(defense.training_families) if defense else set()
    return [f for f in suite.families if f not in trained]


@dataclass(frozen=True)
class SuiteResult:
    """Everything one evaluation measured; the input of :mod:`weightvault.tamper.report`."""

    testbed: str
    suite: AttackSuite
    harmful_chance: float
    models: tuple[ModelInfo, ...]
    runs: tuple[AttackRun, ...]
    threads: int
    version: int = 1

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
            "models": [m.to_dict() for m in self.models],
            "runs": [r.to_dict() for r in self.runs],
        }

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> SuiteResult:
        if len(data) > MAX_RESULT_BYTES:
            raise FormatError(f"results: larger than {MAX_RESULT_BYTES} bytes")
        try:
            obj = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"results: not valid JSON ({exc})") from exc
        keys = {"version", "testbed", "suite", "harmful_chance", "threads", "models", "runs"}
        if not isinstance(obj, dict):
            raise FormatError("results: expected an object")
        missing = sorted(keys - set(obj))
        if missing:
            raise FormatError(f"results.{missing[0]}: missing")
        extra = sorted(set(obj) - keys)
        if extra:
            raise FormatError(f"results.{extra[0]}: unknown field")
        if obj["version"] != 1:
            raise FormatError(f"results.version: unsupported version {obj['version']!r}")
        if not isinstance(obj["models"], list) or not isinstance(obj["runs"], list):
            raise FormatError("results.models / results.runs: expected lists")
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
        return cls(
            testbed=str(obj["testbed"]),
            suite=AttackSuite.from_dict(obj["suite"]),
            harmful_chance=float(obj["harmful_chance"]),
            models=models,
            runs=runs,
            threads=int(obj["threads"]),
        )


def _desired_acc(model: TamperModel, testbed: Testbed) -> float:
    test = testbed.data().test
    with torch.no_grad():
        return float((model(test.x).argmax(1) == test.desired).float().mean())


def run_suite(
    testbed: Testbed,
    candidates: dict[str, tuple[TamperModel, DefenseRecord | None]],
    suite: AttackSuite,
    *,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> SuiteResult:
    """Run every attack of ``suite`` for every seed against the candidates and the references."""
    models: dict[str, tuple[TamperModel, DefenseRecord | None, str]] = {
        RANDOM_INIT: (random_init_model(testbed, 0), None, "reference"),
        UNDEFENDED: (testbed.release(0), None, "reference"),
    }
    for name, model in testbed.extra_references().items():
        models[name] = (model, None, "reference")
    for name, (model, defense) in candidates.items():
        if name in models:
            raise UsageError(f"model name {name!r} is taken by a reference model; rename it")
        finetune_held_out = [
            f for f in held_out_families(defense, suite) if not f.startswith("probe/")
        ]
        if not finetune_held_out:
            raise UsageError(
                f"suite {suite.name!r} has no fine-tuning family that {name!r} was not trained "
                "against; add attacks from held-out families (other optimizers, schedules, "
                "low-rank adapters, benign-then-harmful, more data)"
            )
        models[name] = (model, defense, "candidate")
    data = testbed.data()
    infos = []
    runs: list[AttackRun] = []
    for name, (model, defense, role) in models.items():
        model.eval()
        infos.append(ModelInfo(name, role, _desired_acc(model, testbed), defense))
        for spec in suite.attacks:
            for seed in suite.seeds:
                if progress:
                    progress(f"{name}: {spec.name} (seed {seed})")
                # The spec's own seed picks the stream; the suite's seeds spread it.
                effective = spec.seed * 1000 + seed
                runs.append(
                    run_attack(
                        model,
                        name,
                        spec,
                        data,
                        effective,
                        points=suite.curve_points,
                        threads=threads,
                    )
                )
    return SuiteResult(
        testbed=testbed.name,
        suite=suite,
        harmful_chance=data.harmful_chance,
        models=tuple(infos),
        runs=tuple(runs),
        threads=threads,
    )


#: Alias re-exported as ``weightvault.run_tamper_suite``.
run_tamper_suite = run_suite
