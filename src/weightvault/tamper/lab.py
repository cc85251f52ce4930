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
    used: dict[str, dict[str, Any]] = {}
    for method in methods:
        overrides = defaults.overrides(method, quick=quick)
        used[method] = overrides
        versions: dict[int, tuple[TamperModel, DefenseRecord | None]] = {}
        for seed in grid.seeds:
            say(f"training {method} (seed {seed}) ...")
            model, record, desired = defend(
                testbed,
                method,
                overrides=overrides,
                split=split,
                seed=seed,
                threads=threads,
                device=device,
            )
            say(f"  {method} seed {seed}: desired-task test accuracy {desired:.1%}")
            versions[seed] = (model, record)
        candidates[method] = versions
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


def _quick_grid(testbed: Testbed) -> AttackGrid:
    """The testbed's small grid if it has one, else the digits one (a quick run of a
    bring-your-own testbed still needs some grid)."""
    try:
        return default_grid(testbed.name, quick=True)
    except Exception:  # any missing or unreadable built-in grid
        return default_grid("digits", quick=True)
