"""Tiny suites and grids for the tamper tests (seconds on one core)."""

from __future__ import annotations

from weightvault.tamper.grid import AttackGrid
from weightvault.tamper.spec import AttackSpec, AttackSuite, ProbeSpec

TINY_SUITE = AttackSuite(
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


TINY_GRID = AttackGrid(
    name="tiny",
    optimizers=("sgd", "adam", "adamw"),
    lrs=(3e-4, 3e-3, 3e-2),
    batch_sizes=(8, 16, 64),
    steps=(10,),
    budgets=(10, 20, 40),
    modes=("full", "lora", "head"),
    per_budget=2,
    probes=False,
    curve_points=2,
    seeds=(0, 1),
)
