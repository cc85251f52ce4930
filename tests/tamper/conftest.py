"""Shared fixtures for the tamper lab: one thread, tiny suites, the digits testbed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from weightvault.tamper._determinism import set_default_threads
from weightvault.tamper.digits import DigitsTestbed
from weightvault.tamper.spec import AttackSpec, AttackSuite, ProbeSpec


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    set_default_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def digits() -> DigitsTestbed:
    return DigitsTestbed(pretrain_steps=150)


@pytest.fixture
def tiny_suite() -> AttackSuite:
    """Seconds-long suite with trained-against and held-out families."""
    return AttackSuite(
        "tiny",
        (
            AttackSpec("adam-full", 20, optimizer="adam", lr=3e-3, steps=15, batch_size=16),
            AttackSpec(
                "sgdm-lora",
                20,
                optimizer="sgd-momentum",
                lr=3e-2,
                steps=15,
                mode="lora",
                schedule="warmup-cosine",
            ),
            ProbeSpec("probe", 20),
        ),
        seeds=(0, 1, 2),
        curve_points=3,
    )
