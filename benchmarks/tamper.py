"""Documented runs of the tamper-resistance lab (the tables and plots of docs/tamper.md).

    .venv/bin/python benchmarks/tamper.py --testbed bios --jobs 2      # the default report
    .venv/bin/python benchmarks/tamper.py --testbed digits --jobs 2
    .venv/bin/python benchmarks/tamper.py --testbed bios --quick       # minutes, not for claims
    ... --update-docs        # also copy the two plots to docs/images/tamper-<testbed>-*.png
    .venv/bin/python benchmarks/tamper.py --cost     # CPU seconds per component, per bios size

Each run is exactly ``weightvault tamper report`` on the testbed's default configuration (its
declared grid split before training, defense settings read from the shipped defaults file,
every attack on every seed against random init, the undefended release and the defenses), timed
phase by phase: results JSON, Markdown and PNG plots land in ``bench-data/tamper/<testbed>/``
and the Markdown is printed. The machine's load is printed first and last: the documented runs
shared 2 cores with other work.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--testbed", default="bios")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seeds", default=None, help="e.g. 0,1,2 (default: the grid's)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench-data" / "tamper")
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="copy the plots to docs/images/tamper-<testbed>-*.png",
    )
    parser.add_argument(
        "--cost",
        action="store_true",
        help="instead of a run: CPU seconds of each component of the default report, per bios "
        "size, and the run time they add up to on 2 idle cores",
    )
    args = parser.parse_args()
    if args.cost:
        return cost()

    import torch

    from weightvault.tamper._determinism import set_default_threads
    from weightvault.tamper.lab import run_lab
    from weightvault.tamper.markdown import to_markdown
    from weightvault.tamper.report import write_report
    from weightvault.tamper.summary import summarize
    from weightvault.tamper.testbed import load_adapter

    torch.set_num_threads(args.threads)
    set_default_threads(args.threads)
    print(
        f"load: {os.getloadavg()} on {os.cpu_count()} cores; torch threads {args.threads}, "
        f"jobs {args.jobs}, device {args.device}, torch {torch.__version__}",
        flush=True,
    )
    out = args.out_dir / (args.testbed + ("-quick" if args.quick else ""))
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    start = time.perf_counter()
    phases: list[tuple[str, float]] = []
    last = [start]

    def progress(message: str) -> None:
        now = time.perf_counter()
        print(f"[{now - start:7.1f} s] {message}", flush=True)
        last[0] = now

    bed = load_adapter(args.testbed)
    data = bed.data()
    bed.release(0)
    phases.append(("testbed (data, pretraining, release)", time.perf_counter() - start))
    progress(
        f"testbed {bed.name}: defender {len(data.defender)}, attacker pool "
        f"{len(data.attacker)}, test {len(data.test)}"
    )
    seeds = None if args.seeds is None else tuple(int(s) for s in args.seeds.split(","))
    lab_start = time.perf_counter()
    result = run_lab(
        bed,
        quick=args.quick,
        seeds=seeds,
        threads=args.threads,
        jobs=args.jobs,
        device=args.device,
        progress=progress,
    )
    phases.append(("defenses and attacks", time.perf_counter() - lab_start))
    report_start = time.perf_counter()
    results_path = out / "results.json"
    results_path.write_bytes(result.to_json())
    prefix = f"tamper-{args.testbed}" + ("-quick" if args.quick else "")
    files = write_report(result, out, prefix=prefix)
    summary = summarize(result)
    phases.append(("report (bootstrap, plots)", time.perf_counter() - report_start))
    print(to_markdown(summary))
    for name, seconds in phases:
        print(f"phase {name}: {seconds:.1f} s")
    print(f"attack runs: {len(result.runs)}; wrote {results_path}, {files.markdown}")
    if args.update_docs:
        images = ROOT / "docs" / "images"
        images.mkdir(parents=True, exist_ok=True)
        for src in (files.curves_png, files.summary_png):
            shutil.copyfile(src, images / src.name)
            print(f"copied {src.name} to {images}")
    print(f"total {time.perf_counter() - start:.1f} s; load now {os.getloadavg()}")
    return 0


#: Shapes measured by ``--cost``: the shipped sizes and one that is not shipped (BERT's 4 x
#: feed-forward ratio on the default's vocabulary), to show what it would cost.
COST_SIZES = ("bios-small", "bios", "bios-ffn1024", "bios-base")


def cost() -> int:
    """CPU seconds (one torch thread, ``time.process_time``) of each component of the default
    report, per size, on random-init weights (the cost of a step does not depend on the
    weights; divergence retries, which do, are left out):

    * pretraining: 5 steps, times the size's step count;
    * every attack of the default grid's suite, run at 2 and at 4 steps (same curve points):
      the fixed part (copies, evaluations) plus the per-step slope times its real steps;
      probes as they are;
    * MLAC and TAR: 2 outer steps with the shipped defaults, times their outer steps.

    The report trains 3 seeds of each defense and runs the suite on 4 models x 3 seeds; on 2
    cores (``--jobs 2``) pretraining and the release are serial, the rest splits in two.
    """
    import dataclasses

    import torch

    from weightvault.tamper import bios
    from weightvault.tamper.attacks import run_attack
    from weightvault.tamper.base import TamperModel
    from weightvault.tamper.defaults import load_defaults
    from weightvault.tamper.defenses import defense_config, train_defense
    from weightvault.tamper.grid import default_grid, evaluation_suite
    from weightvault.tamper.spec import AttackSpec

    torch.set_num_threads(1)
    bios.SIZES.setdefault(
        "bios-ffn1024", dataclasses.replace(bios.SIZES["bios"], intermediate=1024)
    )
    grid = default_grid("bios")
    defaults, _ = load_defaults(None, "bios")
    print(f"load: {os.getloadavg()} on {os.cpu_count()} cores; CPU seconds, 1 torch thread")

    def cpu(fn: Any, *args: Any, **kwargs: Any) -> float:
        begin = time.process_time()
        fn(*args, **kwargs)
        return time.process_time() - begin

    for name in COST_SIZES:
        bed = bios.BiosTestbed(name)
        size = bed.size
        data = bed.data()
        counts = bios.parameter_count(name)
        short = dataclasses.replace(size, pretrain_steps=5)
        bios.SIZES[name + "-5"] = short
        bios._world.cache_clear()
        pre = cpu(bios._pretrain, name + "-5", 0) / 5 * size.pretrain_steps
        del bios.SIZES[name + "-5"]
        model = TamperModel(bed.make_trunk(0), size.hidden, data.num_desired)
        suite, split = evaluation_suite(grid, len(data.attacker))
        attacks = 0.0
        for spec in suite.attacks:
            if not isinstance(spec, AttackSpec):
                attacks += cpu(run_attack, model, "x", spec, data, 0, threads=1)
                continue
            two, four = (
                cpu(
                    run_attack,
                    model,
                    "x",
                    dataclasses.replace(spec, steps=k),
                    data,
                    0,
                    points=grid.curve_points,
                    threads=1,
                )
                for k in (2, 4)
            )
            slope = max(0.0, (four - two) / 2)
            attacks += max(0.0, two - 2 * slope) + slope * spec.steps
        defenses = 0.0
        for method in ("mlac", "tar"):
            used = dict(defaults.overrides(method, quick=False))
            outer = int(used.get("outer_steps", 40))
            used["outer_steps"] = 2
            config = defense_config(
                method, used, split=split, defender_size=len(data.defender), seed=0
            )
            defenses += cpu(train_defense, model, data, config, threads=1) / 2 * outer
        total = pre + 3 * defenses + 12 * attacks
        wall = pre + (3 * defenses + 12 * attacks) / 2
        print(
            f"{name}: {counts['total'] / 1e6:.1f} M parameters ({counts['embeddings'] / 1e6:.1f} M "
            f"embeddings); pretraining {pre / 60:.1f} min, defenses (2 methods x 3 seeds) "
            f"{3 * defenses / 60:.1f} min, attacks (4 models x 3 seeds x {len(suite.attacks)}) "
            f"{12 * attacks / 60:.1f} min: {total / 60:.1f} CPU min, about {wall / 60:.1f} min "
            "on 2 idle cores",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
