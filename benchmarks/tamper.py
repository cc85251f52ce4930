"""Documented runs of the tamper-resistance lab on both testbeds (the README's tables and plots).

    .venv/bin/python benchmarks/tamper.py --testbed digits            # minutes on 1 core
    .venv/bin/python benchmarks/tamper.py --testbed minilm            # ~20-30 min on 1 core
    .venv/bin/python benchmarks/tamper.py --testbed digits --update-docs   # also copy the plots

For each testbed: train the MLAC- and TAR-style defenses (two defense seeds each), run the preset
attack suite (3 attack seeds) against them plus the references (random init, undefended release,
and for minilm the public base model), write results JSON + Markdown + PNG plots under
``bench-data/tamper/<testbed>/`` and print the Markdown report. The lab is about cost, not speed:
what it prints are the measured accuracies and the wall time of each phase, with the cost of a
defense expressed as a ratio to the cost of attacking the undefended release.
The machine's load is printed first: the documented runs shared 2 cores with other work.
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
    parser.add_argument("--testbed", choices=("digits", "minilm"), required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--defense-seeds", default="0,1")
    parser.add_argument("--seeds", default="0,1,2", help="attack seeds")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench-data" / "tamper")
    parser.add_argument(
        "--update-docs",
        action="store_true",
        help="copy the plots to docs/images/tamper-<testbed>-*.png",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from weightvault.tamper._determinism import set_default_threads
    from weightvault.tamper.defenses import defend
    from weightvault.tamper.evaluate import run_suite
    from weightvault.tamper.report import summarize, to_markdown, write_report
    from weightvault.tamper.spec import preset_suite
    from weightvault.tamper.testbed import load_adapter

    torch.set_num_threads(args.threads)
    set_default_threads(args.threads)
    print(f"load: {os.getloadavg()} on {os.cpu_count()} cores; torch threads {args.threads}")
    out = args.out_dir / args.testbed
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    t0 = time.perf_counter()
    bed = load_adapter(args.testbed)
    data = bed.data()
    bed.release(0)
    setup_s = time.perf_counter() - t0
    print(
        f"testbed {bed.name}: defender {len(data.defender)}, attacker pool "
        f"{len(data.attacker)}, test {len(data.test)}; setup {setup_s:.1f} s"
    )

    candidates = {}
    defense_seconds: dict[str, float] = {}
    for method in ("mlac", "tar"):
        for seed in (int(s) for s in args.defense_seeds.split(",")):
            t = time.perf_counter()
            model, record, desired = defend(bed, method, seed=seed, threads=args.threads)
            name = f"{method}-s{seed}"
            defense_seconds[name] = time.perf_counter() - t
            assert record is not None
            candidates[name] = (model, record)
            print(
                f"defense {name}: {defense_seconds[name]:.1f} s, desired acc {desired:.1%}, "
                f"history {record.history}",
                flush=True,
            )

    suite = preset_suite(args.testbed).with_seeds(tuple(int(s) for s in args.seeds.split(",")))
    t = time.perf_counter()
    result = run_suite(bed, candidates, suite, threads=args.threads)
    attack_s = time.perf_counter() - t
    results_path = out / "results.json"
    results_path.write_bytes(result.to_json())
    files = write_report(result, out, prefix=f"tamper-{args.testbed}")
    summary = summarize(result)
    print(to_markdown(summary))
    per_model = attack_s / len(result.models)
    print(
        f"attack suite: {len(result.runs)} runs in {attack_s:.1f} s "
        f"({per_model:.1f} s per model on average)"
    )
    for name, seconds in defense_seconds.items():
        print(
            f"cost of defense {name}: {seconds:.1f} s = {seconds / per_model:.2f}x the time "
            "to run the whole attack suite against one model"
        )
    print(f"wrote {results_path}, {files.markdown}, {files.curves_png}, {files.summary_png}")
    if args.update_docs:
        images = ROOT / "docs" / "images"
        images.mkdir(parents=True, exist_ok=True)
        for src in (files.curves_png, files.summary_png):
            shutil.copyfile(src, images / src.name)
            print(f"copied {src.name} to {images}")
    print(f"total {time.perf_counter() - t0:.1f} s; load now {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
