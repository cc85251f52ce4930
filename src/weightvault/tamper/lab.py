"""The whole lab in one call: grid -> split -> defenses (from a defaults file) -> attacks.

:func:`run_lab` is what ``weightvault tamper report`` runs when it is given no results file:

1. the testbed's declared attack grid (or the one given) is split by the fixed rule of
   :mod:`weightvault.tamper.grid`, before anything is trained;
2. the defenses' hyperparameters are *read* from a defaults file written earlier by
   :func:`weightvault.tamper.defaults.tune` (the file must name this very grid); their simulated
   adversaries come from the split's train-time side;
3. each defense is trained once per seed; random init is drawn once per seed; the undefended
   release is the same for every seed;
4. every attack of the grid's evaluation suite runs for every seed against every model.

Nothing flows back: no result of step 4 can change steps 1-3 (tested).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from weightvault.errors import UsageError
from weightvault.tamper.base import TamperModel, Testbed
from weightvault.tamper.defaults import LabDefaults, load_defaults
from weightvault.tamper.defenses import DefenseRecord, defend
from weightvault.tamper.evaluate import SuiteResult, check_seeds, run_suite
from weightvault.tamper.grid import AttackGrid, default_grid, evaluation_suite

__all__ = ["METHODS", "run_lab"]

METHODS = ("mlac", "tar")


def run_lab(
    testbed: Testbed,
    *,
    quick: bool = False,
    seeds: tuple[int, ...] | None = None,
    grid: AttackGrid | None = None,
    defaults: LabDefaults | None = None,
    defaults_path: Path | None = None,
    methods: tuple[str, ...] = METHODS,
    threads: int = 1,
    jobs: int = 1,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> SuiteResult:
    """Run the lab end to end (module docstring); ``quick``: the small grid, short training,
    seeds below 3 allowed, report stamped "not for claims"."""
    say = progress or (lambda _msg: None)
    if defaults is None:
        defaults, defaults_path = load_defaults(defaults_path, testbed.name)
    if grid is None:
        grid = _quick_grid(testbed) if quick else default_grid(testbed.name)
    if not quick:
        defaults.check_grid(grid)
    if seeds is not None:
        grid = grid.with_seeds(seeds)
    check_seeds(grid.seeds, quick=quick)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UsageError(f"defense method {unknown[0]!r}: use mlac or tar")
    data = testbed.data()
    suite, split = evaluation_suite(grid, len(data.attacker))
    say(
        f"grid {grid.name}: {len(suite.attacks)} attacks x {len(grid.seeds)} seeds; "
        f"train-time lrs {list(split.train_lrs)}, budgets {list(split.train_budgets)}"
    )
    candidates: dict[str, dict[int, tuple[TamperModel, DefenseRecord | None]]] = {}
    used = {method: defaults.overrides(method, quick=quick) for method in methods}
    jobs_list = [(method, seed) for method in methods for seed in grid.seeds]
    testbed.release(0)  # built once here (workers inherit it)
    _DEFEND.update(testbed=testbed, used=used, split=split, threads=threads, device=device)
    try:
        trained = _map(jobs_list, jobs if device == "cpu" else 1, say)
    finally:
        _DEFEND.clear()
    for (method, seed), (model, record, desired) in zip(jobs_list, trained, strict=True):
        say(f"{method} seed {seed}: desired-task test accuracy {desired:.1%}")
        candidates.setdefault(method, {})[seed] = (model, record)
    labels: dict[str, str] = {spec.name: split.label(spec) for spec in suite.attacks}
    return run_suite(
        testbed,
        candidates,
        suite,
        threads=threads,
        jobs=jobs,
        device=device,
        quick=quick,
        split=split.to_dict(),
        labels=labels,
        defaults={
            "path": str(defaults_path) if defaults_path is not None else None,
            "sha256": defaults.sha256,
            "defenses": used,
        },
        progress=say,
    )


#: What forked defense workers read (set just before forking).
_DEFEND: dict[str, Any] = {}


def _defend_one(job: tuple[str, int]) -> tuple[TamperModel, DefenseRecord | None, float]:
    method, seed = job
    return defend(
        _DEFEND["testbed"],
        method,
        overrides=_DEFEND["used"][method],
        split=_DEFEND["split"],
        seed=seed,
        threads=_DEFEND["threads"],
        device=_DEFEND["device"],
    )


def _map(
    jobs_list: list[tuple[str, int]], jobs: int, say: Callable[[str], None]
) -> list[tuple[TamperModel, DefenseRecord | None, float]]:
    """Train every (method, seed) defense, in ``jobs`` forked processes (same results)."""
    for method, seed in jobs_list:
        say(f"training {method} (seed {seed}) ...")
    if jobs == 1 or len(jobs_list) < 2 or not hasattr(os, "fork"):
        return [_defend_one(job) for job in jobs_list]
    import multiprocessing

    import torch

    from weightvault.tamper.evaluate import _worker_signals

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with multiprocessing.get_context("fork").Pool(jobs, initializer=_worker_signals) as pool:
            return list(pool.imap(_defend_one, jobs_list))
    finally:
        torch.set_num_threads(previous)


def _quick_grid(testbed: Testbed) -> AttackGrid:
    """The testbed's small grid if it has one, else the digits one (a quick run of a
    bring-your-own testbed still needs some grid)."""
    try:
        return default_grid(testbed.name, quick=True)
    except Exception:  # any missing or unreadable built-in grid
        return default_grid("digits", quick=True)
