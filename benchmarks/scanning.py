"""Benchmark: weightvault scan vs picklescan, modelscan and fickling, in one run.

1. Detection on the test corpus (tests/scan/scan_corpus.py): every tool's CLI on every sample,
   one process per file; verdict from the exit code (0 clean, 1 flagged, anything else error).
2. Speed and peak memory (CLI wall time, ``/usr/bin/time`` max RSS, best of N runs, warm page
   cache): a 1 GB raw pickle of arrays, multi-GB PyTorch zip and legacy checkpoints, and a model
   folder with hundreds of files. Ratios = fastest peer time / weightvault time.

The peers live in their own virtual environment (they would downgrade packages of the project's
one): ``python -m venv bench-data/peers-venv && bench-data/peers-venv/bin/pip install picklescan
modelscan fickling numpy typing_extensions``.

The headline ``weightvault`` row is the ``weightvault scan`` console script, what users run (its
``scan`` command skips the Typer shell: ``weightvault.cli:main``); ratios and targets are computed
from it. ``weightvault (python -m weightvault.scan)`` is the same scanner started as a module, for
comparison.

Usage: ``.venv/bin/python benchmarks/scanning.py [--gb 1] [--torch-gb 2] [--files 300]``
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "scan"))

from scan_corpus import Sample, build_corpus  # noqa: E402

WEIGHTVAULT = [str(REPO / ".venv" / "bin" / "weightvault"), "scan"]  # the console script
WEIGHTVAULT_MODULE = [str(REPO / ".venv" / "bin" / "python"), "-m", "weightvault.scan"]
HEADLINE = "weightvault"
PEERS = ("picklescan", "modelscan", "fickling")
MEMORY_LIMIT = 8 << 30  # peers that need more than this fail (the machine is shared)
TIMEOUT = 600


@dataclass
class Tool:
    name: str
    argv: Callable[[Path], list[str]]
    directory_mode: bool = True
    folder_only: bool = False


def _tools(peers: Path) -> list[Tool]:
    bin_dir = peers / "bin"
    return [
        Tool(HEADLINE, lambda p: [*WEIGHTVAULT, str(p)]),
        Tool("weightvault (python -m weightvault.scan)", lambda p: [*WEIGHTVAULT_MODULE, str(p)]),
        Tool("weightvault --workers 2", lambda p: [*WEIGHTVAULT, "--workers", "2", str(p)],
             folder_only=True),
        Tool("picklescan", lambda p: [str(bin_dir / "picklescan"), "-p", str(p)]),
        Tool("modelscan", lambda p: [str(bin_dir / "modelscan"), "-p", str(p)]),
        Tool("fickling", lambda p: [str(bin_dir / "fickling"), "--check-safety", str(p)],
             directory_mode=False),
    ]


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


@dataclass
class Run:
    rc: int
    seconds: float
    max_rss_mb: float
    output: str
    cpu_seconds: float = 0.0


def run_cli(argv: list[str], cwd: Path) -> Run:
    """Run one command under /usr/bin/time; wall seconds and peak RSS of the process."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as timing:
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                ["/usr/bin/time", "-f", "%U %S %M", "-o", timing.name, *argv], cwd=cwd,
                capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=_limit_memory,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Run(-9, float(TIMEOUT), 0.0, "timeout")
        seconds = time.perf_counter() - start
        lines = [ln for ln in Path(timing.name).read_text().splitlines() if ln.strip()]
        fields = lines[-1].split() if lines else []
        try:
            user, system, rss_kb = float(fields[0]), float(fields[1]), float(fields[2])
        except (IndexError, ValueError):
            user = system = rss_kb = 0.0
    return Run(proc.returncode, seconds, rss_kb / 1024, (proc.stdout + proc.stderr)[-2000:],
               user + system)


def verdict(tool: str, run: Run) -> str:
    if tool == "fickling" and run.rc == 1 and "rror" in run.output and "unsafe" not in (
        run.output.lower()
    ):
        return "error"
    if run.rc == 0:
        return "clean"
    if run.rc == 1:
        return "flagged"
    return "error"


def detection(samples: list[Sample], tools: list[Tool], cwd: Path) -> dict[str, dict[str, str]]:
    # One weightvault row: the other rows run the same scanner (same verdicts), only started
    # differently.
    tools = [t for t in tools if t.name == HEADLINE or not t.name.startswith("weightvault")]
    results: dict[str, dict[str, str]] = {t.name: {} for t in tools}
    jobs = [(tool, sample) for tool in tools for sample in samples]

    def one(job: tuple[Tool, Sample]) -> tuple[str, str, str]:
        tool, sample = job
        return tool.name, sample.name, verdict(tool.name, run_cli(tool.argv(sample.path), cwd))

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for tool_name, sample_name, result in pool.map(one, jobs):
            results[tool_name][sample_name] = result
    return results


def print_detection(samples: list[Sample], results: dict[str, dict[str, str]],
                    dangerous_benign: int) -> None:
    malicious = [s for s in samples if s.malicious]
    benign = [s for s in samples if not s.malicious]
    print(f"\n## Detection: {len(malicious)} malicious and {len(benign)} benign samples\n")
    print("| tool | malicious flagged | malicious error (not clean) | malicious missed (clean) "
          "| benign clean | benign flagged (false positive) | benign error |")
    print("|---|---|---|---|---|---|---|")
    for tool, verdicts in results.items():
        mal = [verdicts[s.name] for s in malicious]
        ben = [verdicts[s.name] for s in benign]
        print(f"| {tool} | {mal.count('flagged')} | {mal.count('error')} | {mal.count('clean')} "
              f"| {ben.count('clean')} | {ben.count('flagged')} | {ben.count('error')} |")
    print(f"\nweightvault verdicts of *dangerous* on benign samples: {dangerous_benign} "
          "(the one benign 'flagged' is a scikit-learn model: suspicious, allow with --allow)")
    print("\nMalicious samples each peer calls clean (missed):")
    for tool, verdicts in results.items():
        missed = [s.name for s in malicious if verdicts[s.name] == "clean"]
        print(f"- {tool}: {len(missed)}" + (f" ({', '.join(missed)})" if missed else ""))


def timed_best(tool: Tool, target: Path, cwd: Path, repeats: int) -> Run:
    best: Run | None = None
    for _ in range(repeats):
        run = run_cli(tool.argv(target), cwd)
        if best is None or run.seconds < best.seconds:
            best = run
    assert best is not None
    return best


def timed_folder_per_file(tool: Tool, folder: Path, cwd: Path) -> Run:
    """Tools without a folder mode: one process per file, times summed."""
    total = cpu = rss = 0.0
    rc = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        run = run_cli(tool.argv(path), cwd)
        total += run.seconds
        cpu += run.cpu_seconds
        rss = max(rss, run.max_rss_mb)
        rc = max(rc, run.rc)
    return Run(rc, total, rss, "", cpu)


def speed_case(title: str, target: Path, tools: list[Tool], cwd: Path, repeats: int,
               target_ratio: float | None) -> None:
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) if target.is_dir() \
        else target.stat().st_size
    if target.is_file():  # warm the page cache: every tool reads from memory
        subprocess.run(["cat", str(target)], stdout=subprocess.DEVNULL, check=False)
    print(f"\n## {title} ({size / 2**30:.2f} GiB)\n")
    print("| tool | exit | wall s | CPU s | peak RSS (MB) | verdict |")
    print("|---|---|---|---|---|---|")
    runs: dict[str, Run] = {}
    for tool in tools:
        if tool.folder_only and not target.is_dir():
            continue
        if target.is_dir() and not tool.directory_mode:
            run = timed_folder_per_file(tool, target, cwd)
        else:
            run = timed_best(tool, target, cwd, repeats)
        runs[tool.name] = run
        note = "timeout" if run.output == "timeout" else verdict(tool.name, run)
        print(f"| {tool.name} | {run.rc} | {run.seconds:.2f} | {run.cpu_seconds:.2f} "
              f"| {run.max_rss_mb:.0f} | {note} |")
    ours = runs[HEADLINE].seconds
    peers = {n: r for n, r in runs.items() if not n.startswith("weightvault")}
    usable = {n: r for n, r in peers.items() if verdict(n, r) == "clean"}
    pool = usable or peers
    fastest_name = min(pool, key=lambda n: pool[n].seconds)
    fastest = pool[fastest_name].seconds
    ratio = fastest / ours if ours else float("inf")
    ours_cpu = runs[HEADLINE].cpu_seconds or 0.01
    fastest_cpu = min(r.cpu_seconds for r in pool.values())
    target_text = f" (target >= {target_ratio:g}x)" if target_ratio else ""
    print(f"\nratio (wall): fastest peer that finished clean ({fastest_name}, {fastest:.2f} s) / "
          f"weightvault scan, the console script ({ours:.2f} s) = **{ratio:.2f}x**{target_text}")
    print(f"ratio (CPU, robust on a shared machine): {fastest_cpu:.2f} s / {ours_cpu:.2f} s = "
          f"**{fastest_cpu / ours_cpu:.2f}x**; weightvault peak RSS "
          f"{runs[HEADLINE].max_rss_mb:.0f} MB")
    for name, run in runs.items():
        if name != HEADLINE:
            print(f"- {name}: {run.seconds / ours:.2f}x the weightvault wall time, "
                  f"{run.cpu_seconds / ours_cpu:.2f}x its CPU time")


def make_big_pickle(path: Path, gib: float) -> None:
    import numpy as np

    chunk = 8 << 20
    count = max(1, int(gib * (1 << 30)) // chunk)
    rng = np.random.default_rng(0)
    with open(path, "wb") as handle:
        pickle.dump({f"layer{i}.weight": rng.random(chunk // 8) for i in range(count)}, handle,
                    protocol=4)


def make_torch(path: Path, gib: float, *, legacy: bool) -> None:
    import torch

    count = max(1, int(gib * 8))  # 128 MiB tensors
    state = {f"layers.{i}.weight": torch.full((32 << 20,), float(i)) for i in range(count)}
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)


def make_folder(root: Path, files: int) -> None:
    import numpy as np
    import torch
    from safetensors.numpy import save_file

    root.mkdir(parents=True, exist_ok=True)
    shards = files * 2 // 3
    for i in range(shards):
        torch.save({f"model.layers.{i}.{j}.weight": torch.randn(64, 64) for j in range(16)},
                   root / f"pytorch_model-{i:05d}-of-{shards:05d}.bin")
    for i in range(files // 6):
        save_file({f"w{j}": np.ones((64, 64), dtype=np.float32) for j in range(16)},
                  str(root / f"model-{i:05d}.safetensors"))
    for i in range(files - shards - files // 6):
        (root / f"config-{i}.json").write_text(json.dumps({"layer": i, "hidden": 64}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "bench-data" / "scanning")
    parser.add_argument("--peers", type=Path, default=REPO / "bench-data" / "peers-venv")
    parser.add_argument("--gb", type=float, default=1.0, help="size of the raw array pickle")
    parser.add_argument("--torch-gb", type=float, default=2.0, help="size of the checkpoints")
    parser.add_argument("--files", type=int, default=300, help="files in the model folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-detection", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the generated big files")
    parser.add_argument("--cases", default="pickle,zip,legacy,folder",
                        help="speed cases to run (comma-separated)")
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()
    args.peers = args.peers.resolve()

    load = os.getloadavg()
    print("# weightvault scan benchmark\n")
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} (shared with other work; timings are noisy)")
    tools = _tools(args.peers)
    versions = {}
    for tool in (t for t in tools if t.name in PEERS):
        out = subprocess.run([str(args.peers / "bin" / "python"), "-m", "pip", "show", tool.name],
                             capture_output=True, text=True, check=False).stdout
        versions[tool.name] = next((ln.split()[-1] for ln in out.splitlines()
                                    if ln.startswith("Version")), "?")
    print("peers: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    shown = " ".join([Path(WEIGHTVAULT[0]).name, *WEIGHTVAULT[1:]])
    print(f"{HEADLINE}: `{shown}`"
          " (the console script; ratios are computed from this row)")
    # pip byte-compiles installed packages (the peers); this checkout is an editable install and
    # the environment may set PYTHONDONTWRITEBYTECODE, so compile ours too for a fair start-up.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "src" / "weightvault")],
                   check=False, stdout=subprocess.DEVNULL)
    work = args.workdir
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    cwd = work

    if not args.skip_detection:
        samples = build_corpus(work / "corpus")
        start = time.perf_counter()
        results = detection(samples, tools, cwd)
        sys.path.insert(0, str(REPO / "src"))
        from weightvault.scan import Severity, scan_paths

        report = scan_paths([s.path for s in samples if not s.malicious])
        dangerous_benign = sum(r.max_severity == Severity.DANGEROUS for r in report.files)
        print_detection(samples, results, dangerous_benign)
        markers = list((work / "corpus" / "markers").iterdir())
        print(f"\npayload markers created during the whole detection run: {len(markers)}")
        print(f"(detection run: {time.perf_counter() - start:.1f} s)")

    cases = set(args.cases.split(","))
    if not args.skip_speed:
        if "pickle" in cases:
            big = work / "arrays-1g.pkl"
            make_big_pickle(big, args.gb)
            speed_case(f"Raw pickle of NumPy arrays, {args.gb:g} GB", big, tools, cwd,
                       args.repeats, 3.0)
            big.unlink()
        for legacy in (False, True):
            if ("legacy" if legacy else "zip") not in cases:
                continue
            path = work / ("legacy.pt" if legacy else "zip.pt")
            make_torch(path, args.torch_gb, legacy=legacy)
            kind = "legacy (stacked pickles + raw storages)" if legacy else "zip"
            speed_case(f"PyTorch {kind} checkpoint", path, tools, cwd, args.repeats, 1.0)
            if not args.keep:
                path.unlink()
        if "folder" in cases:
            folder = work / "model-folder"
            make_folder(folder, args.files)
            speed_case(f"Model folder with {args.files} files", folder, tools, cwd,
                       args.repeats, 2.0)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
