"""Custody replicas benchmark: 1, 2 and 3 replicas on one PostgreSQL, audited requests per
CPU-second.

A machine with two cores cannot show replicas speeding anything up, so what this measures is
what a replica costs: for each replica count, 50 client threads spread over the replicas by a
round robin (the harness's load balancer) for ``--seconds``, half of them asking ``GET
/v1/whoami``, half pulling a 64 KiB range of a granted model file (authorization, the three
budget debits, the delivery header, the ciphertext from the shared blob folder). Every request
is one audit entry appended through the replica's group committer to the one log sequencer in
PostgreSQL; the log's growth is counted, not assumed.

Printed per replica count: audited requests/s (log entries appended per second of the run),
p50/p99 latency seen by the clients, and audited requests per CPU-second, the CPU being the
replicas' processes and PostgreSQL's (every process under the postmaster, reaped children
included), read from ``/proc`` before and after the run (the client threads are the load, not
the system, and are not counted), split into the replicas' share and the database's, and the
CPU both spend per second with no load at all. Each count is measured ``--rounds`` times,
interleaved, so a machine whose load changes during the run biases no count. Then the ratio of
3 replicas' per-CPU-second throughput to 1 replica's (target >= 0.8x: adding replicas must not
waste CPU on coordination).

The replicas share one PostgreSQL database (a fresh one per replica count) and one blob folder
(the ciphertext; a bucket would add the S3 server's CPU, the same for every count).

Usage::

    nice -n 10 .venv/bin/python benchmarks/custody_scale.py   # 20 s per count, 2 rounds
    .venv/bin/python benchmarks/custody_scale.py --seconds 10 --replicas 1 3 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from tests.custody.helpers import Service, build_world, start_service  # noqa: E402
from tests.postgres import PostgresServer, start_postgres  # noqa: E402

from weightvault.tlog import TransparencyLog  # noqa: E402

TARGET_RATIO = 0.8
PULL_BYTES = 64 * 1024
_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children) from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is state (field 3): ppid is field 4, utime..cstime fields 14..17.
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, (utime + stime + cutime + cstime) / _TICKS


def cpu_seconds(roots: list[int]) -> float:
    """CPU time so far of ``roots`` and every live descendant (each counts its reaped children,
    so a backend that exited is in its parent's total, once)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                stats[int(entry)] = stat
    children: dict[int, list[int]] = {}
    for pid, (ppid, _cpu) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total = 0.0
    seen = set()
    todo = [pid for pid in roots if pid in stats]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(children.get(pid, []))
    return total


def start_replicas(root: Path, count: int, dsn: str, blobs: Path) -> list[Service]:
    """``count`` replicas on one database and one blob folder, sharing the first one's secrets."""
    args = ("--database", dsn, "--blobs", str(blobs))
    first = start_service(root / "r0", args=(*args, "--replica", "r0"))
    services = [first]
    for index in range(1, count):
        folder = root / f"r{index}"
        folder.mkdir(mode=0o700)
        for name in ("service-kek.keyring", "audit-log.key", "audit-hmac.key"):
            shutil.copy2(root / "r0" / name, folder / name)
        services.append(
            start_service(
                folder,
                args=(*args, "--replica", f"r{index}"),
                init_admin=False,
                admin_token=first.admin_token,
            )
        )
    return services


def drive(
    urls: list[str],
    token: str,
    grant: str,
    index: int,
    clients: int,
    seconds: float,
    kind: str = "both",
) -> tuple[int, int, list[float], float]:
    """``clients`` threads for ``seconds``: the ok and failed request counts, the latencies and
    the seconds the threads ran.

    Each thread's keep-alive connection pools are made before the clock starts, with one TLS
    context for all (an httpx client loads the CA bundle otherwise: on a loaded machine 150
    clients take seconds of the driver's CPU, which would be counted as the replicas' slowness).
    """
    lock = threading.Lock()
    turn = [0]
    ok = [0]
    failed = [0]
    latencies: list[float] = []
    auth = {"Authorization": f"Bearer {token}"}
    tls = ssl.create_default_context()
    pools = [
        {url: httpx.Client(base_url=url, timeout=60, verify=tls) for url in urls}
        for _ in range(clients)
    ]
    stop_at = 0.0

    def worker(number: int) -> None:
        sessions = pools[number]
        mine: list[float] = []
        good = bad = 0
        try:
            while time.monotonic() < stop_at:
                with lock:
                    turn[0] += 1
                    url = urls[turn[0] % len(urls)]
                began = time.perf_counter()
                try:
                    if kind == "whoami" or (kind == "both" and (number + good + bad) % 2):
                        response = sessions[url].get("/v1/whoami", headers=auth)
                    else:
                        response = sessions[url].get(
                            f"/v1/grants/{grant}/files/{index}",
                            headers={**auth, "Range": f"bytes=0-{PULL_BYTES - 1}"},
                        )
                    success = response.status_code < 300
                except httpx.HTTPError:
                    success = False
                mine.append(time.perf_counter() - began)
                good += success
                bad += not success
        finally:
            for session in sessions.values():
                session.close()
            with lock:
                latencies.extend(mine)
                ok[0] += good
                failed[0] += bad

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    began = time.monotonic()
    stop_at = began + seconds
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ok[0], failed[0], latencies, time.monotonic() - began


def measure(
    postgres: PostgresServer,
    work: Path,
    count: int,
    clients: int,
    seconds: float,
    idle_s: float,
    kind: str,
    warmup_s: float,
) -> dict[str, float]:
    root = Path(tempfile.mkdtemp(prefix=f"replicas-{count}-", dir=work))
    blobs = root / "blobs"
    blobs.mkdir()
    dsn = postgres.create_database()
    services = start_replicas(root, count, dsn, blobs)
    try:
        world = build_world(root, services[0])
        grant = world.granted("rita", budget=1 << 40)
        with world.client("rita") as rita:
            listing = rita.grant_files(grant)["files"]
        (weights,) = [f for f in listing if f["path"] == "model.safetensors"]
        token = world.people["rita"].token
        urls = [s.url for s in services]
        # Warm up: every client's connections, and every database connection of every replica
        # (psycopg prepares a statement after its fifth use on a connection; N replicas hold N
        # times the connections, so a short run would charge N times the warm-up to N).
        drive(urls, token, grant, int(weights["index"]), clients, warmup_s, kind)
        log = TransparencyLog.open(dsn)
        size_before = log.size()
        replica_pids = [s.process.pid for s in services]
        idle_before = cpu_seconds(replica_pids), cpu_seconds([postgres.process.pid])
        time.sleep(idle_s)  # what the replicas and the database spend with no request at all
        replica_before, db_before = cpu_seconds(replica_pids), cpu_seconds([postgres.process.pid])
        idle = replica_before - idle_before[0] + db_before - idle_before[1]
        ok, failed, latencies, wall = drive(
            urls, token, grant, int(weights["index"]), clients, seconds, kind
        )
        replica_cpu = cpu_seconds(replica_pids) - replica_before
        db_cpu = cpu_seconds([postgres.process.pid]) - db_before
        cpu = replica_cpu + db_cpu
        audited = log.size() - size_before
        log.close()
    finally:
        for service in services:
            service.stop()
    latencies.sort()
    return {
        "replicas": count,
        "ok": ok,
        "failed": failed,
        "audited": audited,
        "wall": wall,
        "cpu": cpu,
        "replica_cpu": replica_cpu,
        "db_cpu": db_cpu,
        "idle_cpu_per_s": idle / idle_s,
        "per_s": audited / wall,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "per_cpu_s": audited / cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="run per replica count")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load first")
    parser.add_argument(
        "--requests",
        choices=("both", "whoami", "pull"),
        default="both",
        help="the request mix (both: half and half)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="measure every replica count this many times, interleaved (1, 2, 3, 1, 2, 3)",
    )
    parser.add_argument(
        "--idle-seconds", type=float, default=5.0, help="CPU measured with no load first"
    )
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wv-custody-scale-"))
    postgres = start_postgres(max_connections=500)
    rows = []
    try:
        print(
            f"{args.clients} clients, {args.seconds:.0f} s per replica count, one PostgreSQL; "
            f"requests: {args.requests} (whoami: GET /v1/whoami; pull: a 64 KiB range); "
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start"
        )
        print(
            f"{'replicas':>8} {'audited req':>11} {'failed':>6} {'req/s':>7} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'CPU s':>6} {'replicas':>8} {'db':>5} {'req/CPU-s':>9} "
            f"{'idle CPU/s':>10}"
        )
        for count in [c for _round in range(args.rounds) for c in args.replicas]:
            row = measure(
                postgres,
                work,
                count,
                args.clients,
                args.seconds,
                args.idle_seconds,
                args.requests,
                args.warmup,
            )
            rows.append(row)
            print(
                f"{count:>8} {row['audited']:>11.0f} {row['failed']:>6.0f} {row['per_s']:>7.1f} "
                f"{row['p50']:>7.1f} {row['p99']:>7.1f} {row['cpu']:>6.1f} "
                f"{row['replica_cpu']:>8.1f} {row['db_cpu']:>5.1f} {row['per_cpu_s']:>9.1f} "
                f"{row['idle_cpu_per_s']:>10.3f}",
                flush=True,
            )
    finally:
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)
    per_cpu_s = {}
    for count in args.replicas:
        mine = [r for r in rows if r["replicas"] == count]
        per_cpu_s[count] = sum(r["audited"] for r in mine) / sum(r["cpu"] for r in mine)
        print(
            f"{count} replica(s), all rounds: {per_cpu_s[count]:.1f} audited requests per "
            f"CPU-second, {sum(r['audited'] for r in mine) / sum(r['wall'] for r in mine):.1f}/s"
        )
    if 1 in per_cpu_s and 3 in per_cpu_s:
        ratio = per_cpu_s[3] / per_cpu_s[1]
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        print(
            f"3 replicas vs 1, audited requests per CPU-second: {ratio:.2f}x "
            f"(target >= {TARGET_RATIO}x: {verdict}); load average at the end "
            f"{os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
