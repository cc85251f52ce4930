"""Defenses: MLAC and TAR train, record their families, and never see held-out families."""

from __future__ import annotations

import pytest
import torch

from weightvault.errors import FormatError, UsageError
from weightvault.tamper.defenses import (
    DefenseRecord,
    MLACConfig,
    TARConfig,
    calibrated_loss,
    defend,
    defense_config,
    train_defense,
)
from weightvault.tamper.digits import DigitsTestbed
from weightvault.tamper.evaluate import held_out_families, run_suite
from weightvault.tamper.grid import AttackGrid
from weightvault.tamper.spec import AttackSpec, AttackSuite

TINY_MLAC = MLACConfig(outer_steps=3, inner_steps=2, inner_batch_sizes=(8,), eval_batch=16)
TINY_TAR = TARConfig(outer_steps=6, inner_steps=4, tr_every=2, batch_size=16)


def test_calibrated_loss_removes_the_label_flipping_win() -> None:
    labels = torch.tensor([0, 1] * 32)
    confident_wrong = torch.nn.functional.one_hot(1 - labels, 2).float() * 8.0
    plain = torch.nn.functional.cross_entropy(confident_wrong, labels)
    calibrated = calibrated_loss(confident_wrong, labels)
    assert plain > 7.0  # an uncalibrated adversary loss is "huge": the model would "win"
    assert calibrated < 0.05  # the best re-mapping just flips the labels back
    uninformative = torch.zeros(64, 2)
    assert calibrated_loss(uninformative, labels) == pytest.approx(0.6931, abs=1e-3)


def test_calibrated_loss_passes_gradient_to_the_logits() -> None:
    logits = torch.randn(32, 2, requires_grad=True)
    labels = torch.randint(0, 2, (32,), generator=torch.Generator().manual_seed(0))
    calibrated_loss(logits, labels).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_mlac_trains_second_order_and_records_families(digits: DigitsTestbed) -> None:
    release = digits.release(0)
    model, record = train_defense(release, digits.data(), TINY_MLAC)
    assert record.method == "mlac"
    assert record.training_families == ("adam/constant/full/harmful",)
    changed = any(
        not torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), release.state_dict().values(), strict=True)
    )
    assert changed
    assert set(record.history) >= {"desired", "harmful_calibrated", "inner_lr"}
    again, _ = train_defense(release, digits.data(), TINY_MLAC)
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_tar_samples_only_declared_families(digits: DigitsTestbed) -> None:
    _, record = train_defense(digits.release(0), digits.data(), TINY_TAR)
    assert record.method == "tar"
    assert set(record.sampled_families) <= set(record.training_families)
    assert record.sampled_families  # it did sample adversaries
    assert DefenseRecord.from_dict(record.to_dict()) == record


def test_held_out_families_are_never_seen_in_defense_training(
    digits: DigitsTestbed, tiny_suite: AttackSuite
) -> None:
    suite = tiny_suite
    _, mlac = train_defense(digits.release(0), digits.data(), TINY_MLAC)
    _, tar = train_defense(digits.release(0), digits.data(), TINY_TAR)
    for record in (mlac, tar):
        held = held_out_families(record, suite)
        assert held  # the suite keeps families the defense never trained against
        assert not set(held) & set(record.sampled_families)
        assert not set(held) & set(record.training_families)
        assert "sgd-momentum/warmup-cosine/lora/harmful" in held


def test_suite_without_held_out_finetune_family_is_refused(digits: DigitsTestbed) -> None:
    model, record = train_defense(digits.release(0), digits.data(), TINY_MLAC)
    only_trained = AttackSuite(
        "trained-only", (AttackSpec("adam", 20, optimizer="adam", steps=5),), seeds=(0, 1, 2)
    )
    with pytest.raises(UsageError, match="held-out families"):
        run_suite(digits, {"mlac": (model, record)}, only_trained)


def test_simulated_adversaries_come_from_the_train_time_split(
    digits: DigitsTestbed, tiny_grid: AttackGrid
) -> None:
    split = tiny_grid.split(len(digits.data().attacker))
    mlac = defense_config("mlac", {"outer_steps": 2}, split=split, defender_size=808)
    assert isinstance(mlac, MLACConfig)
    assert mlac.inner_batch_sizes == split.train_batches
    assert mlac.inner_budgets == split.train_budgets
    assert mlac.lr_clamp == split.lr_range  # MLAC's meta-learned lr cannot leave the range
    tar = defense_config("tar", {}, split=split, defender_size=808)
    assert isinstance(tar, TARConfig)
    assert tar.lrs == split.train_lrs and tar.batch_sizes == split.train_batches
    assert set(tar.optimizers) <= set(tiny_grid.train_optimizers)
    with pytest.raises(FormatError, match="adversary settings come from the grid"):
        defense_config("tar", {"lrs": [0.5]}, split=split, defender_size=808)
    with pytest.raises(FormatError, match="unknown defense setting"):
        defense_config("mlac", {"warp": 9}, split=split, defender_size=808)


def test_defend_uses_the_overrides_and_split(digits: DigitsTestbed, tiny_grid: AttackGrid) -> None:
    split = tiny_grid.split(len(digits.data().attacker))
    _, record, desired = defend(
        digits, "tar", overrides={"outer_steps": 2, "inner_steps": 2}, split=split, seed=1
    )
    assert record is not None and record.config["outer_steps"] == 2
    assert record.config["lrs"] == list(split.train_lrs)
    assert record.config["seed"] == 1
    assert 0.0 <= desired <= 1.0
