"""Defense defaults: tuned on train-time adversaries only, read from a file, never fed back.

The property the lab's claims rest on: no held-out result can change any default. Tuning never
runs a held-out attack (nor touches the attacker pool or the test split), the defaults reach the
evaluation only through a file written before it, and changing what held-out attacks score leaves
that file and every defense the evaluation trains exactly as they were.
"""

from __future__ import annotations

import dataclasses
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from weightvault.errors import FormatError, InputError
from weightvault.tamper import defaults as defaults_module
from weightvault.tamper import evaluate as evaluate_module
from weightvault.tamper.defaults import (
    LabDefaults,
    builtin_defaults_path,
    load_defaults,
    tune,
    tuning_data,
)
from weightvault.tamper.digits import DigitsTestbed
from weightvault.tamper.grid import AttackGrid, default_grid
from weightvault.tamper.lab import run_lab
from weightvault.tamper.runs import AttackRun

TINY_CANDIDATES: dict[str, list[dict[str, Any]]] = {
    "mlac": [
        {"outer_steps": 2, "inner_steps": 2, "eval_batch": 16},
        {"outer_steps": 3, "inner_steps": 2, "eval_batch": 16, "harm_weight": 2.0},
    ],
}


def test_tuning_runs_only_train_time_adversaries_on_defender_data(
    digits: DigitsTestbed, tiny_grid: AttackGrid, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = digits.data()
    split = tiny_grid.split(len(data.attacker))
    seen: list[str] = []
    real = defaults_module.run_attack

    def spy(model: Any, name: str, spec: Any, tune_data: Any, seed: int, **kw: Any) -> AttackRun:
        assert split.label(spec) == "train-time", spec.name
        # Tuning data is cut from the defender split: no attacker-pool or test example.
        for part in (tune_data.defender, tune_data.attacker, tune_data.test):
            rows = {tuple(r.tolist()) for r in part.x}
            assert rows <= {tuple(r.tolist()) for r in data.defender.x}
        seen.append(spec.name)
        return real(model, name, spec, tune_data, seed, **kw)

    monkeypatch.setattr(defaults_module, "run_attack", spy)
    result = tune(digits, tiny_grid, TINY_CANDIDATES, seeds=(0,), attacks=2)
    assert len(seen) == 2 * 2  # two candidates x two train-time adversaries x one seed
    tuning = result.tuning["methods"]["mlac"]
    chosen = tuning["chosen"]
    assert result.defenses["mlac"] == TINY_CANDIDATES["mlac"][chosen]
    scores = [c["score"] for c in tuning["candidates"]]
    eligible = [
        i
        for i, c in enumerate(tuning["candidates"])
        if c["desired_acc"] >= result.tuning["release_desired_acc"] - 0.05
    ]
    if eligible:
        assert scores[chosen] == min(scores[i] for i in eligible)


def test_tuning_data_is_the_defender_split_only(digits: DigitsTestbed) -> None:
    data = digits.data()
    part = tuning_data(data)
    total = len(part.defender) + len(part.attacker) + len(part.test)
    assert total == len(data.defender)
    assert len(part.defender) == (3 * len(data.defender)) // 4


def test_held_out_results_cannot_change_any_default(
    digits: DigitsTestbed,
    tiny_defaults: LabDefaults,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run the lab twice, the second time with every held-out attack reporting 100 %: the
    defaults file (read-only) is unchanged and every defense trains with the same settings to
    the same result."""
    path = tmp_path / "defaults.json"
    path.write_bytes(tiny_defaults.to_json())
    path.chmod(stat.S_IRUSR)
    before = path.read_bytes()

    def lab() -> evaluate_module.SuiteResult:
        return run_lab(
            digits,
            quick=True,
            grid=tiny_defaults.grid,
            defaults_path=path,
            methods=("mlac",),
            seeds=(0, 1),
        )

    honest = lab()
    real = evaluate_module.run_attack

    def inflated(model: Any, name: str, spec: Any, data: Any, seed: int, **kw: Any) -> AttackRun:
        run = real(model, name, spec, data, seed, **kw)
        if spec.name in held_out:
            return dataclasses.replace(run, curve=tuple((s, 1.0) for s, _ in run.curve))
        return run

    held_out = {a for a, label in honest.labels.items() if label == "held-out"}
    assert held_out
    monkeypatch.setattr(evaluate_module, "run_attack", inflated)
    changed = lab()
    # The held-out results did change ...
    assert {r.best_acc for r in changed.runs if r.attack in held_out} == {1.0}
    assert [r.to_dict() for r in changed.runs] != [r.to_dict() for r in honest.runs]
    # ... and nothing upstream of them did.
    assert path.read_bytes() == before
    assert changed.defaults == honest.defaults
    assert changed.defaults is not None
    assert changed.defaults["defenses"]["mlac"] == tiny_defaults.overrides("mlac", quick=True)
    for a, b in zip(changed.models, honest.models, strict=True):
        assert a.to_dict() == b.to_dict()  # same configs, same training histories, same seeds
    assert changed.split == honest.split and changed.labels == honest.labels


def test_defaults_file_is_strict_and_names_its_grid(tiny_defaults: LabDefaults) -> None:
    again = LabDefaults.from_json(tiny_defaults.to_json())
    assert again.to_json() == tiny_defaults.to_json()
    doc = json.loads(tiny_defaults.to_json())
    doc["grid_sha256"] = "0" * 64
    with pytest.raises(FormatError, match="does not match the grid"):
        LabDefaults.from_json(json.dumps(doc).encode())
    doc = json.loads(tiny_defaults.to_json())
    doc["defenses"]["mlac"]["inner_budgets"] = [500]
    with pytest.raises(FormatError, match="adversary settings come from the grid"):
        LabDefaults.from_json(json.dumps(doc).encode())
    doc = json.loads(tiny_defaults.to_json())
    doc["extra"] = 1
    with pytest.raises(FormatError, match="extra: unknown field"):
        LabDefaults.from_json(json.dumps(doc).encode())
    # evaluation refuses a grid other than the one the defaults were tuned under
    with pytest.raises(InputError, match="were tuned under grid"):
        tiny_defaults.check_grid(default_grid("digits"))
    tiny_defaults.check_grid(tiny_defaults.grid)


def test_builtin_defaults_were_tuned_under_the_builtin_grid() -> None:
    defaults, path = load_defaults(None, "digits")
    assert path == builtin_defaults_path("digits")
    defaults.check_grid(default_grid("digits"))
    rule = defaults.tuning["rule"]
    assert "train-time adversaries" in rule and "defender split" in rule
    with pytest.raises(InputError, match="for testbed 'digits', not 'bios'"):
        load_defaults(path, "bios")
