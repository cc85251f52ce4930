"""Benchmark: verified loading vs plain loading vs verify-then-load, warm and cold page cache.

For a safetensors model and a PyTorch (``torch.save``) model of the same size, each in its own
signed folder (config.json + weights, signed with an ECDSA key, ``files``/SHA-256 unless told
otherwise), three ways to get tensors into memory:

* ``plain``: ``safetensors.torch.load_file`` / ``torch.load(weights_only=True)``, no checking;
* ``verified``: ``weightvault.load.safetensors`` / ``weightvault.load.torch`` (one read, hashed
  as it is read);
* ``naive``: ``weightvault.signing.verify`` on the folder, then the plain load (two reads).

Every way ends by touching one byte of every page of every tensor (so a lazily mapped load
pays for its reads, as a first forward pass would). Warm: the files are in the page cache (one
unmeasured run first). Cold: before each run every file of the model is written back and evicted
with ``posix_fadvise(POSIX_FADV_DONTNEED)``; the script checks that eviction worked by timing a
plain read of the weights right after it (``evicted read`` column, vs the warm one). Times are
the best of ``--repeats`` runs, interleaved across the ways, so a burst of load on a shared
machine does not fall on one way only. Ratios are to ``plain`` on the same row.

Usage: ``.venv/bin/python benchmarks/loading.py [--gb 1] [--repeats 3] [--hash sha256]
[--serialization files|shards] [--shard-mb 1000]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from cryptography.hazmat.primitives.asymmetric import ec

import weightvault.load as load
from weightvault.signing import KeySigner, KeyVerifier, sign, verify

REPO = Path(__file__).resolve().parent.parent
PAGE = 4096


def _tensors(total_bytes: int, count: int = 16) -> dict[str, torch.Tensor]:
    per = total_bytes // count // 4
    generator = torch.Generator().manual_seed(0)
    return {f"layer{i}.weight": torch.rand(per, generator=generator) for i in range(count)}


def _build(folder: Path, gb: float, key: ec.EllipticCurvePrivateKey, **options: Any) -> None:
    from safetensors.torch import save_file

    if folder.exists():
        shutil.rmtree(folder)
    tensors = _tensors(int(gb * 1e9))
    for kind in ("safetensors", "torch"):
        model = folder / kind
        model.mkdir(parents=True)
        (model / "config.json").write_text(json.dumps({"hidden_size": 1024}))
        if kind == "safetensors":
            save_file(tensors, model / "model.safetensors")
        else:
            torch.save(tensors, model / "pytorch_model.bin")
        sign(model, KeySigner(key), **options)
    os.sync()


def _touch(tensors: dict[str, torch.Tensor]) -> int:
    """One byte of every page of every tensor: forces a lazy load to read everything."""
    total = 0
    for tensor in tensors.values():
        flat = tensor.reshape(-1).view(torch.uint8)
        total += int(flat[::PAGE].sum())
    return total


def _evict(model: Path) -> bool:
    """Write back and drop every file of ``model`` from the page cache; False if refused."""
    os.sync()
    ok = True
    for path in model.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError:
            ok = False
        finally:
            os.close(fd)
    return ok


def _read_seconds(path: Path) -> float:
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while handle.read(16 << 20):
            pass
    return time.perf_counter() - start


def _ways(
    model: Path, weights: Path, kind: str, verifier: KeyVerifier
) -> dict[str, Callable[[], Any]]:
    """The ways to load ``weights``; safetensors has two plain ones: its default (a mapping of
    the file, read lazily) and ``backend="pread"`` (read into memory, as the verified load)."""
    ways: dict[str, Callable[[], Any]] = {}
    if kind == "safetensors":
        from safetensors.torch import load_file

        ways["plain"] = lambda: load_file(weights)
        ways["plain-read"] = lambda: load_file(weights, backend="pread")
        ways["verified"] = lambda: load.safetensors(weights, verifier=verifier)
    else:
        ways["plain"] = lambda: torch.load(weights, weights_only=True)
        ways["verified"] = lambda: load.torch(weights, verifier=verifier)
    first = ways["plain"]

    def naive() -> Any:
        verify(model, None, verifier)
        return first()

    ways["naive"] = naive
    return ways


def _run(way: Callable[[], Any]) -> float:
    start = time.perf_counter()
    tensors = way()
    _touch(tensors)
    seconds = time.perf_counter() - start
    del tensors
    return seconds


def _measure(
    model: Path, weights: Path, ways: dict[str, Callable[[], Any]], cache: str, repeats: int
) -> tuple[dict[str, float], str]:
    """Best time of each way, interleaved; for ``cold``, the eviction check's text."""
    best = {name: float("inf") for name in ways}
    for way in ways.values():  # one unmeasured run of each (imports, first touches)
        _run(way)
    evicted_reads: list[float] = []
    evicted = True
    for _ in range(repeats):
        for name, way in ways.items():
            if cache == "cold":
                evicted = _evict(model) and evicted
            best[name] = min(best[name], _run(way))
        if cache == "cold":
            _evict(model)
            evicted_reads.append(_read_seconds(weights))
    if cache != "cold":
        return best, ""
    note = f"{min(evicted_reads):.2f} s"
    return best, note + ("" if evicted else " (fadvise refused)")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--gb", type=float, default=1.0, help="model size in GB (default 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hash", default="sha256", choices=["sha256", "blake2", "blake3"])
    parser.add_argument("--serialization", default="files", choices=["files", "shards"])
    parser.add_argument("--shard-mb", type=int, default=1000, help="shard size (MB) for shards")
    parser.add_argument("--dir", type=Path, default=REPO / "bench-data" / "loading")
    args = parser.parse_args()

    key = ec.generate_private_key(ec.SECP256R1())
    verifier = KeyVerifier(key.public_key())
    _build(
        args.dir,
        args.gb,
        key,
        hash_type=args.hash,
        serialization=args.serialization,
        shard_size=args.shard_mb * 1_000_000,
    )
    print(
        f"model {args.gb:g} GB, {args.serialization}/{args.hash}, {os.cpu_count()} CPUs, "
        f"load average before "
        f"{os.getloadavg()[0]:.2f}; best of {args.repeats}; times include touching every page"
    )
    print(
        f"{'format':<12} {'cache':<5} {'plain s':>8} {'read s':>7} {'verified s':>10} "
        f"{'naive s':>8} {'verified/plain':>14} {'verified/read':>13} {'naive/plain':>11}"
        "  plain file read after eviction"
    )
    ratios: dict[str, float] = {}
    for kind in ("safetensors", "torch"):
        model = args.dir / kind
        weights = model / ("model.safetensors" if kind == "safetensors" else "pytorch_model.bin")
        ways = _ways(model, weights, kind, verifier)
        warm_read = _read_seconds(weights)
        for cache in ("warm", "cold"):
            best, note = _measure(model, weights, ways, cache, args.repeats)
            ratio = best["verified"] / best["plain"]
            ratios[f"{kind} {cache}"] = ratio
            read = best.get("plain-read")
            read_text = f"{read:>7.2f}" if read is not None else f"{'-':>7}"
            read_ratio = f"{best['verified'] / read:>12.2f}x" if read else f"{'-':>13}"
            if note:
                note = f"{note} (warm {warm_read:.2f} s)"
            print(
                f"{kind:<12} {cache:<5} {best['plain']:>8.2f} {read_text} "
                f"{best['verified']:>10.2f} {best['naive']:>8.2f} {ratio:>13.2f}x {read_ratio} "
                f"{best['naive'] / best['plain']:>10.2f}x  {note}"
            )
    print(f"load average after {os.getloadavg()[0]:.2f}")
    targets = {"warm": 1.10, "cold": 1.05}
    for name, ratio in ratios.items():
        target = targets[name.split()[1]]
        verdict = "meets" if ratio <= target else "misses"
        print(f"{name}: verified/plain {ratio:.2f}x {verdict} the {target:.2f}x target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
