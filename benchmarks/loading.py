"""Benchmark: verified loading vs plain loading vs verify-then-load, warm and cold page cache.

For a safetensors model and a PyTorch (``torch.save``) model of the same size, each in its own
signed folder (config.json + weights, signed with an ECDSA key, ``files``/SHA-256 unless told
otherwise), the ways to get the weights into a model that is already built (its parameters
allocated and touched, as a model's constructor leaves them; a user loads into one):

* ``lazy``: ``safetensors.torch.load_file`` (maps the file) / ``torch.load(mmap=True,
  weights_only=True)``, then one byte of every page of every tensor touched. Printed for
  reference only: a mapped load defers its reads to first use.
* ``plain``: the same load, then ``model.load_state_dict(tensors)``: every byte copied into the
  model, as a user really loads. **The targets are computed against this one.**
* ``verified``: ``weightvault.load.safetensors(path, verifier=..., into=model)`` /
  ``weightvault.load.torch(path, verifier=..., into=model)``: each byte read once, straight
  into the model's parameter, and hashed there.
* ``verified-dict``: ``weightvault.load.safetensors`` / ``weightvault.load.torch`` into a buffer
  of their own (the tensors are views of it), then ``load_state_dict``: what a caller who wants
  the tensors themselves pays.
* ``naive``: ``weightvault.signing.verify`` of the folder, then ``plain`` (two reads).

And three floors, timed alone: ``hash``, the hash of every byte from memory (one stream per
file or shard: any verifying load must do it); ``read``, the file read with ``preadv`` straight
into the model's parameters (no hash: the cheapest possible load); ``fresh``, the file read into
new memory of its own (no hash), which a load that hands out tensors of its own must also pay.
With two free cores a verifying load into a model can cost max(hash, read); on one, their sum.

Warm: the files are in the page cache (one unmeasured run of each way first). Cold: before each
run every file of the model is written back and evicted with ``posix_fadvise(POSIX_FADV_DONTNEED)``
(no root needed); ``mincore`` then counts the weight file's pages still cached (``cached``
column, should be 0%). Runs are interleaved across the ways, so a burst of load on a shared
machine is spread over all of them; each figure is the median of ``--repeats`` runs, wall
clock and CPU (all threads of the process). Ratios are of medians on the same row.

Usage: ``.venv/bin/python benchmarks/loading.py [--gb 1] [--repeats 5] [--hash sha256]
[--serialization files|shards] [--shard-mb 1000]``
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import mmap
import os
import shutil
import statistics
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
PAGE = mmap.PAGESIZE
LAYERS = 16


def _tensors(total_bytes: int) -> dict[str, torch.Tensor]:
    per = total_bytes // LAYERS // 4
    generator = torch.Generator().manual_seed(0)
    return {f"layer{i}.weight": torch.rand(per, generator=generator) for i in range(LAYERS)}


def _model(total_bytes: int) -> torch.nn.Module:
    """A built model for the weights: parameters allocated and written once (as a constructor's
    initialisation leaves them), so loading into it measures the load, not the first faults."""
    model = torch.nn.Module()
    per = total_bytes // LAYERS // 4
    for i in range(LAYERS):
        layer = torch.nn.Module()
        layer.weight = torch.nn.Parameter(torch.zeros(per))
        model.add_module(f"layer{i}", layer)
    return model


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


_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_LIBC.mmap.restype = ctypes.c_void_p
_LIBC.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_LIBC.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_LIBC.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


def _cached_fraction(path: Path) -> float:
    """The share of ``path``'s pages in the page cache (``mincore`` over a read-only mapping,
    which faults nothing in)."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        address = _LIBC.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            return float("nan")
        try:
            pages = -(-size // PAGE)
            vector = ctypes.create_string_buffer(pages)
            if _LIBC.mincore(address, size, vector) != 0:
                return float("nan")
            return sum(byte & 1 for byte in vector.raw) / pages
        finally:
            _LIBC.munmap(address, size)
    finally:
        os.close(fd)


def _read_into(path: Path, model: torch.nn.Module) -> None:
    """The cheapest load: ``preadv`` of the weights straight into the model's parameters, file
    order, no hash and no check (safetensors: the header is skipped by its length; torch: the
    bytes are read, in the file's order, into the same memory)."""
    from weightvault.load._place import writable_bytes

    targets = [writable_bytes(p) for p in model.parameters()]
    fd = os.open(path, os.O_RDONLY)
    try:
        position = 0
        for target in targets:
            done = 0
            while done < len(target):
                count = os.preadv(fd, [target[done : done + (4 << 20)]], position)
                if count == 0:
                    return
                done += count
                position += count
    finally:
        os.close(fd)


def _fresh_read(path: Path) -> None:
    """``preadv`` of the file into fresh private memory (no hash): what a load that returns
    tensors of its own (``verified-dict``) cannot avoid, the page faults that give new memory
    its pages included."""
    size = path.stat().st_size
    view = memoryview(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))
    fd = os.open(path, os.O_RDONLY)
    try:
        position = 0
        while position < size:
            position += os.preadv(fd, [view[position : position + (4 << 20)]], position)
    finally:
        os.close(fd)
        view.release()


_BLOCK = os.urandom(1 << 20)


def _hash_only(size: int, hash_type: str, streams: int) -> None:
    """Hash ``size`` bytes of a cache-resident buffer, ``streams`` streams at once (one per
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


def _ways(
    folder: Path,
    weights: Path,
    kind: str,
    verifier: KeyVerifier,
    model: torch.nn.Module,
    floor: Callable[[], None],
) -> dict[str, Callable[[], None]]:
    """Each way loads the weights into ``model`` (or touches them, for ``lazy``)."""
    if kind == "safetensors":
        from safetensors.torch import load_file

        def lazy() -> None:
            _touch(load_file(weights))

        def plain() -> None:
            model.load_state_dict(load_file(weights))

        def verified() -> None:
            load.safetensors(weights, verifier=verifier, into=model)

        def verified_dict() -> None:
            model.load_state_dict(load.safetensors(weights, verifier=verifier))

    else:

        def lazy() -> None:
            _touch(torch.load(weights, weights_only=True, mmap=True))

        def plain() -> None:
            model.load_state_dict(torch.load(weights, weights_only=True))

        def verified() -> None:
            load.torch(weights, verifier=verifier, into=model)

        def verified_dict() -> None:
            model.load_state_dict(load.torch(weights, verifier=verifier))

    def naive() -> None:
        verify(folder, None, verifier)
        plain()

    ways: dict[str, Callable[[], None]] = {
        "lazy": lazy,
        "plain": plain,
        "verified": verified,
        "verified-dict": verified_dict,
        "naive": naive,
    }
    ways["hash"] = floor
    ways["read"] = lambda: _read_into(weights, model)
    ways["fresh"] = lambda: _fresh_read(weights)
    return ways


def _run(way: Callable[[], None]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    way()
    return time.perf_counter() - wall, time.process_time() - cpu


def _measure(
    folder: Path, weights: Path, ways: dict[str, Callable[[], None]], cache: str, repeats: int
) -> tuple[dict[str, float], dict[str, float], list[float]]:
    """Median wall and CPU seconds of each way, interleaved; for ``cold``, the share of the
    weights still cached right after each eviction."""
    walls: dict[str, list[float]] = {name: [] for name in ways}
    cpus: dict[str, list[float]] = {name: [] for name in ways}
    for way in ways.values():  # one unmeasured run of each (imports, first touches)
        _run(way)
    cached: list[float] = []
    for _ in range(repeats):
        for name, way in ways.items():
            if cache == "cold" and name != "hash":
                if not _evict(folder):
                    cached.append(float("nan"))
                cached.append(_cached_fraction(weights))
            wall, cpu = _run(way)
            walls[name].append(wall)
            cpus[name].append(cpu)
    wall_median = {name: statistics.median(times) for name, times in walls.items()}
    cpu_median = {name: statistics.median(times) for name, times in cpus.items()}
    return wall_median, cpu_median, cached


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--gb", type=float, default=1.0, help="model size in GB (default 1)")
    parser.add_argument("--repeats", type=int, default=5)
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
    model = _model(int(args.gb * 1e9))
    print(
        f"model {args.gb:g} GB, {args.serialization}/{args.hash}, {os.cpu_count()} CPUs, load "
        f"average before {os.getloadavg()[0]:.2f}; median of {args.repeats} runs, wall (CPU) s"
    )
    names = ["lazy", "plain", "verified", "verified-dict", "naive", "hash", "read", "fresh"]
    header = " ".join(f"{name:>13}" for name in names)
    print(f"{'format':<11} {'cache':<5} {header} {'cached':>7}", flush=True)
    rows: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    for kind in ("safetensors", "torch"):
        folder = args.dir / kind
        weights = folder / ("model.safetensors" if kind == "safetensors" else "pytorch_model.bin")
        size = weights.stat().st_size
        shard = args.shard_mb * 1_000_000
        streams = -(-size // shard) if args.serialization == "shards" else 1
        ways = _ways(
            folder,
            weights,
            kind,
            verifier,
            model,
            lambda size=size, streams=streams: _hash_only(size, args.hash, streams),
        )
        for cache in ("warm", "cold"):
            wall, cpu, cached = _measure(folder, weights, ways, cache, args.repeats)
            rows[f"{kind} {cache}"] = (wall, cpu)
            cells = " ".join(
                f"{f'{wall[n]:.2f} ({cpu[n]:.2f})':>13}" if n in wall else f"{'-':>13}"
                for n in names
            )
            share = f"{max(cached):.0%}" if cached else "-"
            print(f"{kind:<11} {cache:<5} {cells} {share:>7}", flush=True)
    print(f"load average after {os.getloadavg()[0]:.2f}")
    _verdicts(rows)
    return 0


def _verdicts(rows: dict[str, tuple[dict[str, float], dict[str, float]]]) -> None:
    targets = {"warm": 1.10, "cold": 1.05}
    print(
        "\nratios of medians (wall; CPU in brackets); target: verified/plain (plain = "
        "materialized into the model)"
    )
    print(
        f"{'row':<17} {'verified/plain':>15} {'verified/naive':>15} {'verified/lazy':>14} "
        f"{'dict/naive':>14} {'hash/plain':>14} {'floor/plain':>12}  verdict"
    )
    for name, (wall, cpu) in rows.items():
        target = targets[name.split()[1]]

        def ratio(
            a: str, b: str, wall: dict[str, float] = wall, cpu: dict[str, float] = cpu
        ) -> str:
            if a not in wall:
                return "-"
            return f"{wall[a] / wall[b]:.2f}x ({cpu[a] / cpu[b]:.2f}x)"

        floor = max(wall["hash"], wall["read"])
        reach = floor / wall["plain"]
        achieved = wall["verified"] / wall["plain"]
        verdict = f"{'meets' if achieved <= target else 'misses'} {target:.2f}x; " + (
            "reachable here"
            if reach <= target
            else f"unreachable here: hash alone is {wall['hash'] / wall['plain']:.2f}x plain"
        )
        print(
            f"{name:<17} {ratio('verified', 'plain'):>15} {ratio('verified', 'naive'):>15} "
            f"{ratio('verified', 'lazy'):>14} {ratio('verified-dict', 'naive'):>14} "
            f"{ratio('hash', 'plain'):>14} {reach:>11.2f}x  {verdict}"
        )


if __name__ == "__main__":
    sys.exit(main())
