"""Benchmark: weightvault scan vs picklescan, modelscan and fickling, in one run.

1. Detection on the test corpus (tests/scan/scan_corpus.py, with the issue-12 samples of
   corpus_malicious.py / corpus_benign.py): every tool's CLI on every sample, one process per file,
   all tools in the same run; verdict from the exit code (0 passed, 1 refused for a finding,
   anything else error). A CI gate refuses on any non-zero exit, so "refused" counts findings and
   errors alike ("of which errors" says how many were errors). Rows: weightvault at
   its default threshold, weightvault --fail-on dangerous, picklescan, modelscan, fickling.
2. Speed and peak memory (CLI wall time, ``/usr/bin/time`` max RSS, best of N runs interleaved
   across the tools, warm page cache): a 1 GB raw pickle of arrays, multi-GB PyTorch zip and
   legacy checkpoints, and a model folder with hundreds of files. Ratios = fastest peer time /
   weightvault time.

The peers run from ``bench-data/peers-venv`` when it exists (``python -m venv
bench-data/peers-venv && bench-data/peers-venv/bin/pip install picklescan modelscan fickling numpy
typing_extensions``), otherwise from the project's ``.venv`` (where the dev setup installs them).

The headline ``weightvault`` row is the ``weightvault scan`` console script, what users run (its
``scan`` command skips the Typer shell: ``weightvault.cli:main``); ratios and targets are computed
from it. ``weightvault (python -m weightvault scan)`` is the same command started as a module, for
comparison.

Usage: ``.venv/bin/python benchmarks/scanning.py [--gb 1] [--torch-gb 2] [--files 300]``
(``--skip-speed`` for the detection table alone, ``--skip-detection`` for the speed cases alone)
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
WEIGHTVAULT_MODULE = [str(REPO / ".venv" / "bin" / "python"), "-m", "weightvault", "scan"]
HEADLINE = "weightvault"
FAIL_ON_DANGEROUS = "weightvault --fail-on dangerous"
PEERS = ("picklescan", "modelscan", "fickling")
MEMORY_LIMIT = 8 << 30  # peers that need more than this fail (the machine is shared)
TIMEOUT = 600


@dataclass
class Tool:
    name: str
    argv: Callable[[Path], list[str]]
    directory_mode: bool = True
    folder_only: bool = False
    detection_only: bool = False


def _tools(peers: Path) -> list[Tool]:
    bin_dir = peers / "bin"
    return [
        Tool(HEADLINE, lambda p: [*WEIGHTVAULT, str(p)]),
        Tool(FAIL_ON_DANGEROUS, lambda p: [*WEIGHTVAULT, "--fail-on", "dangerous", str(p)],
             detection_only=True),
        Tool("weightvault (python -m weightvault scan)", lambda p: [*WEIGHTVAULT_MODULE, str(p)]),
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
        return "passed"
    if run.rc == 1:
        return "finding"
    return "error"


DETECTION_TOOLS = (HEADLINE, FAIL_ON_DANGEROUS, *PEERS)


def detection(samples: list[Sample], tools: list[Tool], cwd: Path
              ) -> dict[str, dict[str, tuple[str, float]]]:
    """Every detection tool on every sample: ``{tool: {sample: (verdict, seconds)}}``."""
    tools = [t for t in tools if t.name in DETECTION_TOOLS]
    results: dict[str, dict[str, tuple[str, float]]] = {t.name: {} for t in tools}
    jobs = [(tool, sample) for tool in tools for sample in samples]

    def one(job: tuple[Tool, Sample]) -> tuple[str, str, str, float]:
        tool, sample = job
        run = run_cli(tool.argv(sample.path), cwd)
        return tool.name, sample.name, verdict(tool.name, run), run.seconds

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        for tool_name, sample_name, result, seconds in pool.map(one, jobs):
            results[tool_name][sample_name] = (result, seconds)
    return results


def _share(count: int, total: int) -> str:
    return f"{count}/{total} ({100 * count / total:.0f}%)" if total else "0/0"


def print_detection(samples: list[Sample], results: dict[str, dict[str, tuple[str, float]]]
                    ) -> None:
    malicious = [s for s in samples if s.malicious]
    benign = [s for s in samples if not s.malicious]
    new_mal = sum(bool(s.loader) for s in malicious)
    new_ben = sum(bool(s.loader) for s in benign)
    print(f"\n## Detection: {len(malicious)} malicious or malformed and {len(benign)} benign "
          f"samples ({new_mal} and {new_ben} of them from issue 12), one process per file\n")
    print("| tool | malicious refused (exit != 0) | of which errors | malicious missed (exit 0) "
          "| benign passed (exit 0) | benign refused | of which errors | time (s, sum) "
          "| time vs weightvault |")
    print("|---|---|---|---|---|---|---|---|---|")
    ours_time = sum(t for _, t in results[HEADLINE].values()) or 1.0
    for tool, verdicts in results.items():
        mal = [verdicts[s.name][0] for s in malicious]
        ben = [verdicts[s.name][0] for s in benign]
        seconds = sum(t for _, t in verdicts.values())
        refused = len(mal) - mal.count("passed")
        print(f"| {tool} | {_share(refused, len(mal))} | {mal.count('error')} "
              f"| {mal.count('passed')} | {_share(ben.count('passed'), len(ben))} "
              f"| {len(ben) - ben.count('passed')} | {ben.count('error')} | {seconds:.1f} "
              f"| {seconds / ours_time:.2f}x |")
    ours = results[HEADLINE]
    refused = sum(ours[s.name][0] != "passed" for s in malicious)
    passed = sum(ours[s.name][0] == "passed" for s in benign)
    met = refused == len(malicious) and passed == len(benign)
    print(f"\nIssue-12 target at the default threshold (every malicious refused, every benign "
          f"exit 0): malicious {_share(refused, len(malicious))}, benign "
          f"{_share(passed, len(benign))}: **{'met' if met else 'not met'}**")

    categories = sorted({s.category for s in malicious if s.category})
    if categories:
        print("\nIssue-12 malicious classes, refused per tool:\n")
        print("| class | samples | " + " | ".join(results) + " |")
        print("|---|---|" + "---|" * len(results))
        for category in categories:
            members = [s for s in malicious if s.category == category]
            cells = [str(sum(verdicts[s.name][0] != "passed" for s in members))
                     for verdicts in results.values()]
            print(f"| {category} | {len(members)} | " + " | ".join(cells) + " |")
    print("\nMalicious samples each tool lets through (exit 0):")
    for tool, verdicts in results.items():
        missed = [s.name for s in malicious if verdicts[s.name][0] == "passed"]
        print(f"- {tool}: {len(missed)}" + (f" ({', '.join(missed)})" if missed else ""))
    print("\nBenign samples each tool refuses (exit != 0):")
    for tool, verdicts in results.items():
        refused_benign = [f"{s.name}{' (error)' if verdicts[s.name][0] == 'error' else ''}"
                          for s in benign if verdicts[s.name][0] != "passed"]
        print(f"- {tool}: {len(refused_benign)}"
              + (f" ({', '.join(refused_benign)})" if refused_benign else ""))


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
    timed = [t for t in tools
             if not t.detection_only and not (t.folder_only and not target.is_dir())]
    # Repeats are interleaved (one run of every tool per round, best of the rounds kept), so a
    # burst of load from other users of the machine does not fall on one tool's runs only.
    for _ in range(repeats):
        for tool in timed:
            if target.is_dir() and not tool.directory_mode:
                continue
            run = run_cli(tool.argv(target), cwd)
            best = runs.get(tool.name)
            if best is None or run.seconds < best.seconds:
                runs[tool.name] = run
    for tool in timed:
        if target.is_dir() and not tool.directory_mode:
            runs[tool.name] = timed_folder_per_file(tool, target, cwd)
    for tool in timed:
        run = runs[tool.name]
        note = "timeout" if run.output == "timeout" else verdict(tool.name, run)
        print(f"| {tool.name} | {run.rc} | {run.seconds:.2f} | {run.cpu_seconds:.2f} "
              f"| {run.max_rss_mb:.0f} | {note} |")
    ours = runs[HEADLINE].seconds
    peers = {n: r for n, r in runs.items() if not n.startswith("weightvault")}
    usable = {n: r for n, r in peers.items() if verdict(n, r) == "passed"}
    pool = usable or peers
    fastest_name = min(pool, key=lambda n: pool[n].seconds)
    fastest = pool[fastest_name].seconds
    ratio = fastest / ours if ours else float("inf")
    ours_cpu = runs[HEADLINE].cpu_seconds or 0.01
    fastest_cpu = min(r.cpu_seconds for r in pool.values())
    target_text = f" (target >= {target_ratio:g}x)" if target_ratio else ""
    print(f"\nratio (wall): fastest peer that passed the file ({fastest_name}, {fastest:.2f} s) / "
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
    parser.add_argument("--peers", type=Path, default=None,
                        help="virtual environment of the peers (default: bench-data/peers-venv "
                             "if present, else .venv)")
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
    if args.peers is None:
        separate = REPO / "bench-data" / "peers-venv"
        args.peers = separate if (separate / "bin" / "picklescan").exists() else REPO / ".venv"
    args.peers = args.peers.resolve()

    load = os.getloadavg()
    print("# weightvault scan benchmark\n")
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f} (shared with other work; timings are noisy)")
    tools = _tools(args.peers)
    versions = {}
    for tool in (t for t in tools if t.name in PEERS):
        out = subprocess.run([str(args.peers / "bin" / "python"), "-c",
                              f"import importlib.metadata as m; print(m.version({tool.name!r}))"],
                             capture_output=True, text=True, check=False).stdout
        versions[tool.name] = out.strip() or "?"
    print("peers: " + ", ".join(f"{k} {v}" for k, v in versions.items())
          + f" (from {args.peers})")
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
        print_detection(samples, results)
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
