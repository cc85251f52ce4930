"""Shared fixtures for the tamper lab: one thread, tiny suites and grids, the digits testbed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from tests.tamper.tiny import TINY_GRID, TINY_SUITE

from weightvault.tamper._determinism import set_default_threads
from weightvault.tamper.defaults import LabDefaults
from weightvault.tamper.digits import DigitsTestbed
from weightvault.tamper.grid import AttackGrid
from weightvault.tamper.spec import AttackSuite


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
    return TINY_SUITE


@pytest.fixture
def tiny_grid() -> AttackGrid:
    """Three budgets, one train-time value per numeric axis, two attacks per budget."""
    return TINY_GRID


@pytest.fixture
def tiny_defaults() -> LabDefaults:
    return LabDefaults(
        testbed="digits",
        grid=TINY_GRID,
        defenses={
            "mlac": {"outer_steps": 3, "inner_steps": 2, "eval_batch": 16},
            "tar": {"outer_steps": 4, "inner_steps": 2, "tr_every": 1},
        },
    )
