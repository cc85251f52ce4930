"""Structured-access benchmark: what isolation and in-memory decryption cost a job.

1. Start-up: a query job of one prompt and one new token in a fresh confined worker
   (``unshare -rn``, Landlock, limits; data keys over a pipe; the safetensors decrypted into
   memory range by range; the model built from them), against a plain fresh process that
   imports the same libraries, loads the same model from the plaintext folder with
   ``from_pretrained`` and generates the same token. Target: at most 1.5x.
2. Query throughput: new tokens a second for the same batch of prompts, generated in the worker
   (its own timing, recorded in its environment: model loaded, job running) against the same
   model called in this process. Target: at least 0.8x. The whole job, start-up included, is
   reported too.

Runs alternate between the two sides, and the best of ``--repeats`` is kept for each (the
development machine is shared). Usage::

    .venv/bin/python benchmarks/custody_jobs.py                  # GPT-2, 8 layers, 512 wide
    .venv/bin/python benchmarks/custody_jobs.py --layers 2 --width 128 --repeats 2   # quick

Data lives under ``bench-data/custody-jobs`` (git-ignored) and is deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.access.helpers import encrypt_model  # noqa: E402

from weightvault.access.sandbox import Limits, isolation, run_worker  # noqa: E402

_PLAIN_LOAD = """
import sys, time
import torch
from transformers import AutoModelForCausalLM
torch.set_num_threads({threads})
model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
model.eval()
with torch.no_grad():
    ids = torch.tensor([[5, 9, 13]])
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False,
                   pad_token_id=0)
"""


def make_model(folder: Path, layers: int, width: int, vocab: int) -> int:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=vocab, n_positions=256, n_embd=width, n_layer=layers, n_head=8,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(folder)
    (folder / "generation_config.json").unlink(missing_ok=True)
    return sum(p.stat().st_size for p in folder.iterdir())


def job(prompts: list[list[int]], new_tokens: int) -> dict[str, Any]:
    return {
        "kind": "query",
        "model": "bench",
        "version": "v1",
        "parameters": {"max_new_tokens": new_tokens},
        "inputs": {"prompts": prompts},
    }


def run_job(root: Path, files: list[dict[str, str]], request: dict[str, Any]) -> Any:
    scratch = root / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    message = {
        "job": request,
        "files": files,
        "forbidden": [str(root / "blobs")],
        "threads": os.cpu_count() or 1,
    }
    started = time.perf_counter()
    outcome = run_worker(message, scratch=scratch, limits=Limits(cpu_s=3600, wall_s=3600))
    seconds = time.perf_counter() - started
    if outcome.status != "succeeded":
        raise SystemExit(f"job {outcome.status}: {outcome.reason}\n{outcome.stderr_tail}")
    return seconds, outcome


def plain_load(folder: Path) -> float:
    started = time.perf_counter()
    code = _PLAIN_LOAD.format(threads=os.cpu_count() or 1)
    subprocess.run([sys.executable, "-c", code, str(folder)], check=True, capture_output=True)
    return time.perf_counter() - started


def in_process_tokens_per_s(folder: Path, prompts: list[list[int]], new_tokens: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(os.cpu_count() or 1)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    started = time.perf_counter()
    produced = 0
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([prompt])
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                do_sample=False, pad_token_id=0,
            )  # fmt: skip
            produced += out.shape[1] - len(prompt)
    return produced / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"load before the run: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)")
    print(f"isolation: {isolation()}")
    root = REPO / "bench-data" / "custody-jobs"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    try:
        size = make_model(root / "model", args.layers, args.width, args.vocab)
        files = encrypt_model(root / "model", root / "blobs")
        print(f"model: GPT-2, {args.layers} layers, width {args.width}, vocabulary {args.vocab}: "
              f"{size / 1e6:.1f} MB of safetensors + config")  # fmt: skip
        one = job([[5, 9, 13]], 1)
        starts, plains = [], []
        for _ in range(args.repeats):
            starts.append(run_job(root, files, one)[0])
            plains.append(plain_load(root / "model"))
        start, plain = min(starts), min(plains)
        print(f"start-up, fresh process to first token: job {start:.2f} s (runs "
              f"{', '.join(f'{s:.2f}' for s in starts)}), plain load {plain:.2f} s (runs "
              f"{', '.join(f'{s:.2f}' for s in plains)})")  # fmt: skip
        verdict = "met" if start <= 1.5 * plain else "missed"
        print(f"  ratio job / plain: {start / plain:.2f}x (target <= 1.5x: {verdict})")
        prompts = [[(7 * i + j) % args.vocab for j in range(8)] for i in range(args.prompts)]
        batch = job(prompts, args.new_tokens)
        worker_rates, whole_rates, local_rates = [], [], []
        for _ in range(args.repeats):
            seconds, outcome = run_job(root, files, batch)
            tokens = outcome.outputs["tokens_out"]
            worker_rates.append(tokens / outcome.environment["timings"]["run_s"])
            whole_rates.append(tokens / seconds)
            local_rates.append(in_process_tokens_per_s(root / "model", prompts, args.new_tokens))
        worker, local = max(worker_rates), max(local_rates)
        print(f"query throughput, {args.prompts} prompts x {args.new_tokens} new tokens: worker "
              f"{worker:.0f} tokens/s, in-process {local:.0f} tokens/s; whole job with start-up "
              f"{max(whole_rates):.0f} tokens/s")  # fmt: skip
        verdict = "met" if worker >= 0.8 * local else "missed"
        print(f"  ratio worker / in-process: {worker / local:.2f}x (target >= 0.8x: {verdict})")
        print(f"load after the run: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
