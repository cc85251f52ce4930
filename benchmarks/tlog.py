"""Transparency-log benchmark: durable appends/s, proofs/s and proof sizes at 1,000,000 entries.

Usage::

    .venv/bin/python benchmarks/tlog.py                  # 1,000,000 entries, SQLite + PostgreSQL
    .venv/bin/python benchmarks/tlog.py --entries 100000 --skip-postgres

Everything is measured in the same run as the references it is compared with:

* the machine's limits: fsync()s per second on the data folder (the ceiling for one-entry durable
  commits) and SHA-256 leaf hashes per second (the ceiling for any append path);
* the issue's targets: >= 5,000 durable appends/s on SQLite, >= 20,000 inclusion proofs/s,
  proof bytes = 32 x ceil(log2 n) + a small constant;
* the peer design a Merkle log replaces: a hash chain, which needs O(n) data to prove one entry.

PostgreSQL runs on a private server started for the benchmark (Debian's ``postgresql``, via
``tests/postgres.py``) unless ``--postgres-dsn`` names one. Data lives in a temporary folder (or
``--dir``) and is deleted at the end.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from weightvault.tlog import (  # noqa: E402
    Ed25519NoteSigner,
    TransparencyLog,
    verify_consistency,
    verify_inclusion,
)
from weightvault.tlog.merkle import leaf_hash  # noqa: E402

TARGET_APPENDS = 5_000
TARGET_PROOFS = 20_000
ORIGIN = "bench.weightvault.dev/log"


def event(i: int) -> bytes:
    """A realistic ~110-byte audit event."""
    return (
        b'{"event":"download","grant":"g-%08d","principal":"alice@example.com",'
        b'"bytes":%d,"seq":%d}' % (i % 99_991, 1 << 20, i)
    )


def fsyncs_per_second(folder: Path, seconds: float = 1.0) -> float:
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    count, start = 0, time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
            count += 1
    finally:
        os.close(fd)
        path.unlink()
    return count / (time.perf_counter() - start)


def sha256_leaves_per_second(n: int = 200_000) -> float:
    entries = [event(i) for i in range(n)]
    start = time.perf_counter()
    for entry in entries:
        leaf_hash(entry)
    return n / (time.perf_counter() - start)


def timed_appends(log: TransparencyLog, batch: int, seconds: float, offset: int) -> float:
    """Durable appends/s with ``batch`` entries per committed transaction."""
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        log.append_many([event(offset + count + i) for i in range(batch)])
        count += batch
    return count / (time.perf_counter() - start)


def build(log: TransparencyLog, entries: int, batch: int = 10_000) -> float:
    start = time.perf_counter()
    for first in range(0, entries, batch):
        log.append_many([event(i) for i in range(first, min(entries, first + batch))])
    return entries / (time.perf_counter() - start)


CPU_RATES: dict[int, float] = {}


def rate(fn: Callable[[int], object], items: list[int]) -> float:
    """Items per wall-clock second; items per CPU-second of this process goes to CPU_RATES."""
    start, cpu = time.perf_counter(), time.process_time()
    for item in items:
        fn(item)
    CPU_RATES[id(items)] = len(items) / max(time.process_time() - cpu, 1e-9)
    return len(items) / (time.perf_counter() - start)


def bench_backend(
    name: str, location: str, entries: int, proofs: int, signer: Ed25519NoteSigner
) -> dict[str, float]:
    print(f"\n== {name}: building {entries:,} entries (10,000 per durable commit) ...", flush=True)
    log = TransparencyLog.create(location, ORIGIN)
    results: dict[str, float] = {}
    results["build"] = build(log, entries)
    print(f"   bulk build: {results['build']:,.0f} appends/s", flush=True)
    size = log.size()
    checkpoint = log.sign_checkpoint(signer)
    print(f"   checkpoint signed at size {size:,} ({len(checkpoint)} bytes)", flush=True)
    log.close()

    # Proofs at exactly ``entries``: a freshly opened log (nothing cached), then the next
    # ``proofs`` random indices (different ones) once the upper levels are cached.
    fresh = TransparencyLog.open(location)
    rng = random.Random(7)
    first = [rng.randrange(size) for _ in range(proofs)]
    second = [rng.randrange(size) for _ in range(proofs)]
    results["proofs_cold"] = rate(lambda i: fresh.inclusion_proof(i, size), first)
    results["proofs_cold_cpu"] = CPU_RATES[id(first)]
    results["proofs_warm"] = rate(lambda i: fresh.inclusion_proof(i, size), second)
    results["proofs_warm_cpu"] = CPU_RATES[id(second)]
    batches = [second[i : i + 100] for i in range(0, len(second), 100)]
    start = time.perf_counter()
    for batch in batches:
        fresh.inclusion_proofs(batch, size)
    results["proofs_batched"] = len(second) / (time.perf_counter() - start)
    root = fresh.root(size)
    sample = first[:2000]
    samples = [(i, fresh.inclusion_proof(i, size)) for i in sample]
    leaves = {i: leaf_hash(fresh.entry(i)) for i in sample}
    start = time.perf_counter()
    for i, proof in samples:
        verify_inclusion(leaves[i], i, size, proof, root)
    results["verify"] = len(samples) / (time.perf_counter() - start)
    olds = [rng.randrange(1, size) for _ in range(min(proofs, 5000))]
    results["consistency"] = rate(lambda m: fresh.consistency_proof(m, size), olds)
    old = olds[0]
    verify_consistency(old, size, fresh.consistency_proof(old, size), fresh.root(old), root)
    lengths = [len(p) for _, p in samples]
    results["size"] = size
    results["hashes_mean"] = statistics.mean(lengths)
    results["hashes_max"] = max(lengths)
    tlog_proof = fresh.prove(first[0])
    results["tlog_proof_bytes"] = len(tlog_proof.to_bytes())
    results["tlog_proof_hashes"] = len(tlog_proof.hashes)

    if location.startswith("postgresql://"):
        # The machine limit for one-query-per-proof: trivial round trips to the same server.
        import psycopg

        with psycopg.connect(location, autocommit=True) as conn:
            results["roundtrips"] = rate(lambda _i: conn.execute("SELECT 1").fetchone(), first)

    # Durable appends on top of the full log (each call = one committed transaction).
    results["batch1000"] = timed_appends(fresh, 1000, 3.0, entries)
    results["batch100"] = timed_appends(fresh, 100, 3.0, entries + 10**7)
    results["single"] = timed_appends(fresh, 1, 2.0, entries + 2 * 10**7)
    fresh.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=20_000)
    parser.add_argument("--dir", type=Path, default=None, help="Data folder (default: temp).")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--postgres-dsn", default=None, help="Use this (empty) database.")
    args = parser.parse_args()

    print(f"load average: {os.getloadavg()} on {os.cpu_count()} CPUs")
    folder = Path(tempfile.mkdtemp(prefix="wv-tlog-bench-", dir=args.dir))
    signer = Ed25519NoteSigner.generate(ORIGIN)
    server = None
    try:
        fsync_rate = fsyncs_per_second(folder)
        sha_rate = sha256_leaves_per_second()
        print(f"machine: {fsync_rate:,.0f} fsync/s on {folder}; {sha_rate:,.0f} SHA-256 leaves/s")
        backends = [("SQLite", str(folder / "log.db"))]
        if not args.skip_postgres:
            dsn = args.postgres_dsn
            if dsn is None:
                from tests.postgres import start_postgres

                server = start_postgres(None)
                dsn = server.create_database("tlog_bench")
            backends.append(("PostgreSQL", dsn))
        all_results = {
            name: bench_backend(name, location, args.entries, args.proofs, signer)
            for name, location in backends
        }
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)

    n = args.entries
    ideal = 32 * math.ceil(math.log2(n))
    print(f"\n== results at {n:,} entries (ratios: measured / reference; > 1 beats it)")
    print(f"   load average now: {os.getloadavg()}")
    for name, r in all_results.items():
        print(f"-- {name}")
        print(
            f"   durable appends/s, 10,000 per commit : {r['build']:>12,.0f}  "
            f"x{r['build'] / TARGET_APPENDS:.1f} target {TARGET_APPENDS:,}  "
            f"({r['build'] / sha_rate:.2f} of the SHA-256 leaf limit)"
        )
        print(
            f"   durable appends/s, 1,000 per commit  : {r['batch1000']:>12,.0f}  "
            f"x{r['batch1000'] / TARGET_APPENDS:.1f} target"
        )
        print(
            f"   durable appends/s, 100 per commit    : {r['batch100']:>12,.0f}  "
            f"x{r['batch100'] / TARGET_APPENDS:.1f} target"
        )
        print(
            f"   durable appends/s, 1 per commit      : {r['single']:>12,.0f}  "
            f"({r['single'] / fsync_rate:.2f} of the machine's {fsync_rate:,.0f} fsync/s)"
        )
        print(
            f"   inclusion proofs/s (just opened)     : {r['proofs_cold']:>12,.0f}  "
            f"x{r['proofs_cold'] / TARGET_PROOFS:.2f} target {TARGET_PROOFS:,}"
        )
        print(
            f"   inclusion proofs/s (next, new index) : {r['proofs_warm']:>12,.0f}  "
            f"x{r['proofs_warm'] / TARGET_PROOFS:.2f} target"
        )
        print(
            f"   ... per CPU-second of this process   : {r['proofs_cold_cpu']:>12,.0f} / "
            f"{r['proofs_warm_cpu']:,.0f}  (x{r['proofs_warm_cpu'] / TARGET_PROOFS:.2f} target; "
            "shows the cost when other processes share the CPUs"
            + ("; the server's CPU is not counted)" if "roundtrips" in r else ")")
        )
        if "roundtrips" in r:
            print(
                f"   PostgreSQL 'SELECT 1' round trips/s  : {r['roundtrips']:>12,.0f}  "
                f"(proofs/s = {r['proofs_warm'] / r['roundtrips']:.2f}x this rate: an uncached "
                "proof costs one query, a proof from cached tiles none)"
            )
        print(
            f"   inclusion proofs/s (100 per call)    : {r['proofs_batched']:>12,.0f}  "
            f"x{r['proofs_batched'] / TARGET_PROOFS:.2f} target"
        )
        print(f"   consistency proofs/s                 : {r['consistency']:>12,.0f}")
        print(f"   inclusion verifications/s            : {r['verify']:>12,.0f}")
        size = int(r["size"])
        mean_bytes = 32 * r["hashes_mean"]
        print(
            f"   proof bytes (tree size {size:,}): mean {mean_bytes:.0f}, "
            f"max {32 * r['hashes_max']:.0f}; 32 x ceil(log2 n) = {ideal}  "
            f"(max/ideal {32 * r['hashes_max'] / ideal:.2f})"
        )
        overhead = r["tlog_proof_bytes"] - 32 * r["tlog_proof_hashes"]
        print(
            f"   tlog-proof file (text, with signed checkpoint): {r['tlog_proof_bytes']:.0f} bytes "
            f"= {r['tlog_proof_hashes']:.0f} hashes x 32 + {overhead:.0f} (base64, header, note)"
        )
        chain = 32 * size
        merkle_max = 32 * r["hashes_max"]
        print(
            f"   peer: a hash chain proves one entry with ~{chain / 1e6:.0f} MB (32 x n); "
            f"Merkle max {merkle_max:.0f} B: x{chain / merkle_max:,.0f} smaller"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
