"""The attack grid: strict data, the fixed split rule, and held-out families that really differ."""

from __future__ import annotations

import json
import math

import pytest

from weightvault.errors import FormatError
from weightvault.tamper.grid import (
    AttackGrid,
    default_grid,
    evaluation_suite,
    split_axis,
)
from weightvault.tamper.spec import AttackSpec, ProbeSpec

#: The built-in grids and the attacker pool each runs against.
BUILTIN = [("digits", False, 539), ("digits", True, 539)]


def test_split_rule_holds_out_both_ends_of_every_numeric_axis() -> None:
    assert split_axis((1.0, 2.0, 3.0)) == ((2.0,), (1.0, 3.0))
    assert split_axis((8.0, 16.0, 32.0, 64.0)) == ((16.0, 32.0), (8.0, 64.0))
    train, held = split_axis((1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2))
    assert train == (1e-3, 3e-3) and held == (1e-4, 3e-4, 1e-2, 3e-2)
    with pytest.raises(ValueError, match="at least 3"):
        split_axis((1.0, 2.0))


@pytest.mark.parametrize(("testbed", "quick", "pool"), BUILTIN)
def test_held_out_families_differ_in_optimizer_settings_and_budget(
    testbed: str, quick: bool, pool: int
) -> None:
    """Every held-out attack's learning rate, effective batch size and data budget lie outside
    what any train-time adversary (what a defense may simulate) uses."""
    grid = default_grid(testbed, quick=quick)
    suite, split = evaluation_suite(grid, pool)
    adversaries = split.train_time_adversaries(min(grid.steps))
    assert adversaries
    train_lrs = {split.base_lr(a) for a in adversaries}
    train_budgets = {a.examples for a in adversaries}
    held = [a for a in suite.attacks if split.label(a) == "held-out"]
    assert held, "the evaluation must contain held-out families"
    for attack in held:
        assert isinstance(attack, AttackSpec)
        lr = split.base_lr(attack)
        assert all(not math.isclose(lr, t) for t in train_lrs)
        assert not min(train_lrs) <= lr <= max(train_lrs)
        assert attack.examples not in train_budgets
        assert not min(train_budgets) <= attack.examples <= max(train_budgets)
        effective = min(attack.batch_size, attack.examples)
        train_effective = {min(a.batch_size, attack.examples) for a in adversaries}
        assert not min(train_effective) <= effective <= max(train_effective)
    # and the train-time adversaries are exactly what the label calls train-time
    assert all(split.label(a) == "train-time" for a in adversaries)


@pytest.mark.parametrize(("testbed", "quick", "pool"), BUILTIN)
def test_evaluation_covers_budgets_from_10_to_the_full_pool(
    testbed: str, quick: bool, pool: int
) -> None:
    grid = default_grid(testbed, quick=quick)
    suite, split = evaluation_suite(grid, pool)
    budgets = sorted({a.examples for a in suite.attacks})
    assert budgets[0] == 10 and budgets[-1] == pool
    if not quick:
        assert 60 in budgets  # the budget where MLAC-style blocking was seen to collapse
        lrs = grid.lrs
        assert max(lrs) / min(lrs) >= 100
        fine = [a for a in suite.attacks if isinstance(a, AttackSpec)]
        for axis, values in (
            ("optimizer", grid.optimizers),
            ("mode", grid.modes),
            ("schedule", grid.schedules),
            ("data", grid.datas),
        ):
            assert {getattr(a, axis) for a in fine} == set(values), axis
        assert {"lora", "top", "reinit-top", "head", "full"} <= set(grid.modes)
        assert "cosine-restarts" in grid.schedules
        labels = {split.label(a) for a in suite.attacks}
        assert labels >= {"train-time", "held-out", "held-out-hparams", "held-out-budget"}
    assert any(isinstance(a, ProbeSpec) for a in suite.attacks)
    # Deterministic: the same grid gives the same suite.
    assert evaluation_suite(grid, pool)[0] == suite


def test_grid_json_round_trips_and_is_strict() -> None:
    grid = default_grid("digits")
    again = AttackGrid.from_json(grid.to_json())
    assert again == grid and again.to_json() == grid.to_json()
    assert again.sha256 == grid.sha256
    doc = json.loads(grid.to_json())
    for change, message in [
        ({"lrs": [0.001, 0.002, 0.003]}, "two orders of magnitude"),
        ({"budgets": [10, 20]}, "at least 3"),
        ({"budgets": [10, True, 30]}, r"grid\.budgets\[1\]"),
        ({"optimizers": ["lion"]}, "'lion' is not one of"),
        ({"surprise": 1}, r"grid\.surprise: unknown field"),
        ({"train_time": {"modes": ["qlora"]}}, "subset"),
        ({"seeds": [1, 1]}, "distinct"),
    ]:
        with pytest.raises(FormatError, match=message):
            AttackGrid.from_json(json.dumps(doc | change).encode())
    with pytest.raises(FormatError, match="not valid JSON"):
        AttackGrid.from_json(b"{")
    # A required axis left out is a format error naming it (it once escaped as a TypeError).
    with pytest.raises(FormatError, match=r"grid\.lrs: missing"):
        AttackGrid.from_json(json.dumps({k: v for k, v in doc.items() if k != "lrs"}).encode())
    with pytest.raises(FormatError, match="no built-in attack grid"):
        default_grid("nonesuch")


def test_labels_of_hand_made_attacks(tiny_grid: AttackGrid) -> None:
    split = tiny_grid.split(539)
    # tiny grid: train lr 3e-3, batch 16, budget 20
    base = {"optimizer": "adam", "steps": 10}
    assert split.label(AttackSpec("t", 20, lr=3e-3, batch_size=16, **base)) == "train-time"  # type: ignore[arg-type]
    assert split.label(AttackSpec("h", 40, lr=3e-2, batch_size=64, **base)) == "held-out"  # type: ignore[arg-type]
    assert split.label(AttackSpec("p", 20, lr=3e-2, batch_size=8, **base)) == "held-out-hparams"  # type: ignore[arg-type]
    assert split.label(AttackSpec("b", 40, lr=3e-3, batch_size=16, **base)) == "held-out-budget"  # type: ignore[arg-type]
    # an SGD learning rate is compared after dividing by the grid's SGD scale
    sgd = AttackSpec("s", 20, optimizer="sgd", lr=3e-3 * tiny_grid.sgd_lr_scale, batch_size=16)
    assert split.base_lr(sgd) == pytest.approx(3e-3)
    assert split.label(ProbeSpec("probe", 20)) == "probe"
    assert split.label(AttackSpec("o", 20, lr=4e-3, batch_size=16, **base)) == "other"  # type: ignore[arg-type]
