"""Documented runs of the tamper-resistance lab (the tables and plots of docs/tamper.md).

    .venv/bin/python benchmarks/tamper.py --testbed bios --jobs 2      # the default report
    .venv/bin/python benchmarks/tamper.py --testbed digits --jobs 2
    .venv/bin/python benchmarks/tamper.py --testbed bios --quick       # minutes, not for claims
    ... --update-docs        # also copy the two plots to docs/images/tamper-<testbed>-*.png

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
    args = parser.parse_args()

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


if __name__ == "__main__":
    sys.exit(main())
