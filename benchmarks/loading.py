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


def _fresh_read(path: Path) -> dict[str, torch.Tensor]:
    """Read ``path`` into fresh private memory, as a verified load must (no hash): the copy
    out of the page cache (or the disk) plus the faults that give the buffer its pages."""
    import mmap

    size = path.stat().st_size
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = memoryview(buffer)
    fd = os.open(path, os.O_RDONLY)
    try:
        position = 0
        while position < size:
            position += os.preadv(fd, [view[position : position + (2 << 20)]], position)
    finally:
        os.close(fd)
    view.release()
    buffer.close()
    return {}


def _hash_only(size: int, hash_type: str, streams: int) -> dict[str, torch.Tensor]:
    """Hash ``size`` bytes held in a cache-resident buffer, ``streams`` streams at once (one per
    file or shard, at most one per core): the hashing floor of any verifying load, since every
    byte must go through the hash and one stream cannot be split."""
    from concurrent.futures import ThreadPoolExecutor

    from weightvault.hashing import HashAlgorithm, default_workers

    algorithm = HashAlgorithm.parse(hash_type)
    block = memoryview(_BLOCK)
    threads = default_workers() if algorithm is HashAlgorithm.BLAKE3 and streams == 1 else 1

    def stream(count: int) -> None:
        hasher = algorithm.new_hasher(threads=threads)
        for _ in range(count // len(block)):
            hasher.update(block)
        hasher.update(block[: count % len(block)])

    workers = max(1, min(streams, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(stream, [size // workers] * workers))
    return {}


_BLOCK = os.urandom(1 << 20)


def _ways(
    model: Path, weights: Path, kind: str, verifier: KeyVerifier, hash_type: str, streams: int
) -> dict[str, Callable[[], Any]]:
    """The ways to load ``weights``; safetensors has two plain ones: its default (a mapping of
    the file, read lazily) and ``backend="pread"`` (read into memory, as the verified load).
    ``fresh-read`` and ``hash`` are the two halves of a verifying load's unavoidable work, timed
    alone: the machine's limit for it is the slower of the two (they overlap on two cores)."""
    size = weights.stat().st_size
    ways: dict[str, Callable[[], Any]] = {
        "fresh-read": lambda: _fresh_read(weights),
        "hash": lambda: _hash_only(size, hash_type, streams),
    }
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
        "limit = max(hash, fresh read): the hash of every byte (one stream per file or shard) "
        "and the read into fresh memory, each timed alone in this run"
    )
    print(
        f"{'format':<12} {'cache':<5} {'plain s':>7} {'read s':>6} {'verified s':>10} "
        f"{'naive s':>7} {'hash s':>6} {'fresh s':>7} {'limit s':>7} {'verified/plain':>14} "
        f"{'limit/plain':>11} {'verified/limit':>14} {'verified/naive':>14}  evicted read"
    )
    rows: dict[str, dict[str, float]] = {}
    for kind in ("safetensors", "torch"):
        model = args.dir / kind
        weights = model / ("model.safetensors" if kind == "safetensors" else "pytorch_model.bin")
        size = weights.stat().st_size
        shard = args.shard_mb * 1_000_000
        streams = -(-size // shard) if args.serialization == "shards" else 1
        ways = _ways(model, weights, kind, verifier, args.hash, streams)
        warm_read = _read_seconds(weights)
        for cache in ("warm", "cold"):
            best, note = _measure(model, weights, ways, cache, args.repeats)
            best["limit"] = max(best["hash"], best["fresh-read"])
            rows[f"{kind} {cache}"] = best
            read = best.get("plain-read")
            read_text = f"{read:>6.2f}" if read is not None else f"{'-':>6}"
            if note:
                note = f"{note} (warm {warm_read:.2f} s)"
            print(
                f"{kind:<12} {cache:<5} {best['plain']:>7.2f} {read_text} "
                f"{best['verified']:>10.2f} {best['naive']:>7.2f} {best['hash']:>6.2f} "
                f"{best['fresh-read']:>7.2f} {best['limit']:>7.2f} "
                f"{best['verified'] / best['plain']:>13.2f}x "
                f"{best['limit'] / best['plain']:>10.2f}x "
                f"{best['verified'] / best['limit']:>13.2f}x "
                f"{best['verified'] / best['naive']:>13.2f}x  {note}"
            )
    print(f"load average after {os.getloadavg()[0]:.2f}")
    targets = {"warm": 1.10, "cold": 1.05}
    for name, best in rows.items():
        target = targets[name.split()[1]]
        ratio = best["verified"] / best["plain"]
        verdict = "meets" if ratio <= target else "misses"
        reach = best["limit"] / best["plain"]
        serial = best["verified"] / (best["hash"] + best["fresh-read"])
        why = (
            f"reachable here (limit/plain {reach:.2f}x)"
            if reach <= target
            else f"unreachable here: hashing and reading alone take {reach:.2f}x plain"
        )
        print(
            f"{name}: verified/plain {ratio:.2f}x {verdict} the {target:.2f}x target, {why}; "
            f"verified is {best['verified'] / best['limit']:.2f}x the machine's limit with a "
            f"spare core (max), {serial:.2f}x it without one (hash + fresh read), and "
            f"{best['verified'] / best['naive']:.2f}x verify-then-load"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
