"""The report's PNG plots: attack curves per fine-tuning attack, and worst cases per model and
per data budget (matplotlib, imported only when a plot is drawn)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from weightvault._fs import StagedOutputs, write_bytes_atomic
from weightvault.tamper.evaluate import SuiteResult
from weightvault.tamper.spec import AnySpec, AttackSpec
from weightvault.tamper.summary import group_runs, mean_curve

__all__ = ["plot_curves", "plot_summary"]


def plot_curves(
    result: SuiteResult,
    summary: dict[str, Any],
    path: Path,
    force: bool,
    *,
    batch: StagedOutputs | None = None,
) -> None:
    """Harmful accuracy against attack steps, one panel per fine-tuning attack, one line per
    model (mean over seeds, band = min..max over seeds)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group_runs(result)
    specs: list[AnySpec] = [s for s in result.suite.attacks if isinstance(s, AttackSpec)]
    specs = specs or list(result.suite.attacks)
    names = [m.name for m in result.models]
    cols = min(5, max(1, len(specs)))
    rows = (len(specs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, spec in zip(axes.flat, specs, strict=False):
        for i, name in enumerate(names):
            runs = groups.get((name, spec.name), [])
            if not runs:
                continue
            steps = [s for s, _ in mean_curve(runs)]
            per_seed = [dict(r.curve) for r in runs]
            mean = [statistics.fmean(c[s] for c in per_seed) for s in steps]
            low = [min(c[s] for c in per_seed) for s in steps]
            high = [max(c[s] for c in per_seed) for s in steps]
            color = colors[i % len(colors)]
            ax.plot(steps, mean, marker="o", ms=3, label=name, color=color)
            ax.fill_between(steps, low, high, alpha=0.15, color=color)
        ax.axhline(result.harmful_chance, ls="--", lw=0.8, color="grey")
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0)
        ax.set_title(f"{spec.name}", fontsize=6)
        ax.tick_params(labelsize=6)
        ax.set_ylim(0.3, 1.0)
    for ax in list(axes.flat)[len(specs) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    stamp = " — NOT FOR CLAIMS" if summary["not_for_claims"] else ""
    fig.suptitle(
        f"{summary['testbed']}: harmful-task accuracy vs attack steps (mean, band = min..max "
        f"over seeds {summary['seeds']}; dashed = chance){stamp}",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.legend(handles, labels, loc="lower center", ncol=len(names), fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    _write(path, buf.getvalue(), force, batch)


def plot_summary(
    summary: dict[str, Any], path: Path, force: bool, *, batch: StagedOutputs | None = None
) -> None:
    """Worst case (with its interval) and desired accuracy per model; the budget curve."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = summary["models"]
    names = list(models)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.4), gridspec_kw={"width_ratios": [1, 2]})
    xs = list(range(len(names)))

    def value_and_error(stat: dict[str, Any] | None) -> tuple[float, list[float]]:
        if not stat:
            return 0.0, [0.0, 0.0]
        return stat["value"], [
            max(0.0, stat["value"] - stat["ci"][0]),
            max(0.0, stat["ci"][1] - stat["value"]),
        ]

    worst = [value_and_error(models[n]["worst_case"]) for n in names]
    desired = [models[n]["desired_acc"] for n in names]
    left.bar(
        [x - 0.2 for x in xs],
        [w[0] for w in worst],
        0.4,
        yerr=np.array([w[1] for w in worst]).T,
        label="worst case (95% CI)",
    )
    left.bar([x + 0.2 for x in xs], desired, 0.4, label="desired acc (no attack)")
    left.axhline(summary["harmful_chance"], ls="--", lw=0.8, color="grey")
    left.set_xticks(xs, names, rotation=20, fontsize=8)
    left.set_ylim(0.3, 1.0)
    left.legend(fontsize=7, loc="lower right")
    left.set_title("worst case over every (attack, seed) run", fontsize=9)
    budgets = summary["budgets"]
    for name in names:
        points = [models[name]["by_budget"][str(b)]["worst"] for b in budgets]
        present = [(b, p) for b, p in zip(budgets, points, strict=True) if p]
        if not present:
            continue
        bs = [b for b, _ in present]
        right.plot(bs, [p["value"] for _, p in present], marker="o", ms=4, label=name)
        right.fill_between(
            bs, [p["ci"][0] for _, p in present], [p["ci"][1] for _, p in present], alpha=0.15
        )
    right.axhline(summary["harmful_chance"], ls="--", lw=0.8, color="grey")
    right.set_xscale("log")
    right.set_xticks(budgets, [str(b) for b in budgets], fontsize=7)
    right.set_xlabel("attacker examples (data budget)", fontsize=8)
    right.set_ylabel("worst-case harmful acc", fontsize=8)
    right.set_ylim(0.3, 1.0)
    stamp = " — NOT FOR CLAIMS" if summary["not_for_claims"] else ""
    right.set_title(f"budget curve: worst case per budget (band: 95% CI){stamp}", fontsize=9)
    right.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    _write(path, buf.getvalue(), force, batch)


def _write(path: Path, data: bytes, force: bool, batch: StagedOutputs | None) -> None:
    if batch is None:
        write_bytes_atomic(path, data, force=force)
    else:
        batch.write_bytes(path, data, force=force)
