"""Benchmark: signing a model in object storage, against signing it on a local disk.

Builds a synthetic model (default four 1 GB safetensors files, ``--gb`` to change) under
``bench-data/s3/``, uploads it to a real local S3 server (SeaweedFS on 127.0.0.1, as the tests
use), then times in child processes, each with its own peak RSS (``/usr/bin/time``):

* ``weightvault sign LOCAL`` (page-cached files on the local disk);
* ``weightvault sign s3://bucket/prefix`` (parallel ranged GETs, nothing written to disk);
* download-then-sign: boto3's multi-threaded ``download_file`` of every object to a temporary
  folder, then ``weightvault sign`` of that folder (what one does without s3:// support);
* the server's limit: parallel ranged GETs of every object, read and thrown away, with no
  hashing (``--raw-depth`` GETs in flight in all, the signer's 8 MiB parts): what the S3
  server and the machine deliver to any client; the signer cannot beat it;
* the same GETs through ``obstore`` (a client that receives in native code), when it is
  installed (``pip install obstore``): what a cheaper client would gain;
* with ``--ray``: ``weightvault sign --ray auto`` of the local folder and of the bucket
  (a local Ray cluster started once by this script with ``ray start --head``, as a user's
  ``--ray ADDRESS`` finds one; its start-up is not timed), the fixed cost
  a fresh ``sign --ray`` process pays before hashing (import Ray, connect, start workers: a
  trivial task's round trip), and the library's hashing on Ray against local hashing in one
  driver whose workers are already running (a Ray application signing what it trains).

Every S3 row also reports the S3 server's own CPU time (its process tree, from ``/proc``): with
the server on the same cores, S3 signing's wall time is at least ``(signer CPU + server CPU) /
CPUs``, so it cannot beat ``local seconds x CPUs / (signer CPU + server CPU)`` of local speed;
the script prints that ceiling.

Prints one line per mode and the ratios the issue sets as targets (s3 >= 0.8x local speed,
peak RSS < 300 MB; Ray overhead <= 1.3x local). Usage::

    .venv/bin/python benchmarks/s3_signing.py              # 4 GB
    .venv/bin/python benchmarks/s3_signing.py --gb 1 --ray
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from tests.s3 import start_seaweedfs  # noqa: E402

from signing import Run, build_model, run_child, warm_page_cache  # noqa: E402

GB = 1_000_000_000
WV = [sys.executable, "-m", "weightvault"]

_RAW_GETS = """
import os, sys, boto3
from concurrent.futures import ThreadPoolExecutor
from botocore.config import Config
bucket, prefix, depth = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = boto3.client("s3", endpoint_url=os.environ["WEIGHTVAULT_S3_ENDPOINT"],
                      config=Config(s3={"addressing_style": "path"}, max_pool_connections=64))
part = 8 << 20
ranges = []
for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
    for item in page.get("Contents", []):
        for start in range(0, item["Size"], part):
            ranges.append((item["Key"], start, min(start + part, item["Size"])))
def get(job):
    key, start, end = job
    body = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")["Body"]
    return len(body.read())
with ThreadPoolExecutor(depth) as pool:
    total = sum(pool.map(get, ranges))
print(total, file=sys.stderr)
"""

_RAW_OBSTORE = """
import os, sys
from concurrent.futures import ThreadPoolExecutor
import obstore
from obstore.store import S3Store
bucket, prefix, depth = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = S3Store(bucket, endpoint=os.environ["WEIGHTVAULT_S3_ENDPOINT"],
                access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
                secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                virtual_hosted_style_request=False, client_options={"allow_http": True})
part = 8 << 20
ranges = []
for page in obstore.list(store, prefix=prefix + "/"):
    for item in page:
        for start in range(0, item["size"], part):
            ranges.append((item["path"], start, min(start + part, item["size"])))
def get(job):
    key, start, end = job
    return len(obstore.get_range(store, key, start=start, end=end))
with ThreadPoolExecutor(depth) as pool:
    total = sum(pool.map(get, ranges))
print(total, file=sys.stderr)
"""

#: A fresh driver's fixed cost before any hashing: import Ray, connect, one trivial task per CPU
#: (which starts the job's worker processes).
_RAY_START = """
import time
start = time.perf_counter()
import ray
ray.init(address="auto", include_dashboard=False, logging_level="error")
cpus = int(ray.cluster_resources().get("CPU", 1))
ray.get([ray.remote(num_cpus=1)(lambda: None).remote() for _ in range(cpus)])
print(f"{time.perf_counter() - start:.3f}")
"""

#: Hashing the same jobs locally and on Ray in one driver, Ray's workers already started by a
#: first round: the per-run cost of distributing, without the fixed start-up.
_RAY_WARM = """
import sys, time
from pathlib import Path
import ray
from weightvault.hashing import HashJob, hash_jobs
from weightvault.hashing.cluster import hash_jobs_on_ray
model, hash_type = Path(sys.argv[1]), sys.argv[2]
ray.init(address="auto", include_dashboard=False, logging_level="error")
files = sorted(p for p in model.iterdir() if p.is_file())
jobs = [HashJob(p.absolute(), p.name, p.stat().st_size) for p in files]
hash_jobs_on_ray(jobs, hash_type, address="auto")  # starts the workers
best_local = best_ray = float("inf")
for _ in range(3):
    start = time.perf_counter()
    local = hash_jobs(jobs, hash_type)
    best_local = min(best_local, time.perf_counter() - start)
    start = time.perf_counter()
    remote = hash_jobs_on_ray(jobs, hash_type, address="auto")
    best_ray = min(best_ray, time.perf_counter() - start)
    assert local == remote, "Ray and local digests differ"
print(f"{best_local:.3f} {best_ray:.3f}")
"""

_DOWNLOAD = """
import os, sys, boto3
from botocore.config import Config
from boto3.s3.transfer import TransferConfig
bucket, prefix, target = sys.argv[1:4]
client = boto3.client("s3", endpoint_url=os.environ["WEIGHTVAULT_S3_ENDPOINT"],
                      config=Config(s3={"addressing_style": "path"}, max_pool_connections=32))
transfer = TransferConfig(max_concurrency=16, multipart_chunksize=8 << 20)
for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
    for item in page.get("Contents", []):
        path = os.path.join(target, item["Key"][len(prefix) + 1:])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        client.download_file(bucket, item["Key"], path, Config=transfer)
"""


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its descendants, from ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK")
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
        stack.extend(int(child) for child in children)
    return total


def _line(
    label: str, run: Run, size: int, base: Run | None, server_cpu: float | None = None
) -> str:
    speed = size / run.seconds / 1e6
    ratio = f"  {base.seconds / run.seconds:5.2f}x local speed" if base else ""
    server = f"  server CPU {server_cpu:5.1f} s" if server_cpu is not None else ""
    status = "" if run.returncode == 0 else f"  FAILED (exit {run.returncode})"
    return (
        f"{label:<34} {run.seconds:7.2f} s  {speed:7.0f} MB/s  peak RSS {run.max_rss_mb:6.0f} MB"
        f"  CPU {run.cpu_seconds:6.1f} s{server}{ratio}{status}"
    )


@contextlib.contextmanager
def _ray_cluster(data: Path) -> Iterator[str]:
    """A running local Ray cluster (``ray start --head --block``, its own process group), as a
    user's ``--ray ADDRESS`` would find one; stopped, with all its processes, afterwards."""
    port = _free_port()
    # One authentication mode for the head and every driver: loopback only, and Ray turns token
    # authentication on for ``ray start`` once a token file exists, but not for drivers.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [
            str(ray_cli),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            f"--num-cpus={len(os.sched_getaffinity(0))}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={data / 'ray'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # the head's port first (Ray's own connect retries for minutes), then Ray
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if head.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the local Ray cluster did not start")
            time.sleep(0.5)
        if _child_output([sys.executable, "-c", _RAY_UP, address]) != "up":
            raise SystemExit("cannot connect to the local Ray cluster it started")
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


_RAY_UP = """
import sys, ray
try:
    ray.init(address=sys.argv[1], include_dashboard=False, logging_level="error")
except Exception:
    print("down")
else:
    print("up")
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _child_output(argv: list[str]) -> str:
    """A helper process's last line of output (it fails loudly: a benchmark must not guess)."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=4.0, help="model size in GB (default 4)")
    parser.add_argument("--hash", default="sha256", choices=("sha256", "blake2", "blake3"))
    parser.add_argument("--ray", action="store_true", help="also time --ray auto")
    parser.add_argument(
        "--raw-depth", type=int, default=16, help="ranged GETs in flight for the server's limit"
    )
    parser.add_argument("--keep", action="store_true", help="keep bench-data/s3 afterwards")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="the S3 server on the last CPU, this script and every signer on the others (local "
        "signing too): the signer's own cost, with the server's CPU not taken from it",
    )
    args = parser.parse_args()

    files = max(1, round(args.gb))
    sizes = [int(args.gb * GB / files)] * files
    data = REPO / "bench-data" / "s3"
    model = data / "model"
    build_model(model, sizes)
    size = sum(p.stat().st_size for p in model.iterdir())
    key = data / "key.pem"
    if not key.exists():
        subprocess.run([*WV, "keygen", "--out", str(key)], check=True, capture_output=True)
    server = start_seaweedfs(data)
    os.environ.update(server.env())
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            parser.error("--pin needs at least 2 CPUs")
        for thread in Path(f"/proc/{server.process.pid}/task").iterdir():
            os.sched_setaffinity(int(thread.name), {cpus[-1]})
        os.sched_setaffinity(0, set(cpus[:-1]))  # children (every signer) inherit it
        print(f"pinned: S3 server on CPU {cpus[-1]}, signers on CPUs {cpus[:-1]}")
    try:
        bucket = server.create_bucket()
        client = server.client()
        start = time.perf_counter()
        for path in sorted(model.iterdir()):
            client.upload_file(str(path), bucket, f"bench/model/{path.name}")
        print(f"model: {len(sizes) + 1} files, {size / GB:.2f} GB, hash {args.hash}")
        print(f"uploaded to SeaweedFS in {time.perf_counter() - start:.1f} s (not timed below)")
        url = f"s3://{bucket}/bench/model"
        sig = data / "out.sig"
        common = ["--key", str(key), "--signature", str(sig), "--force", "--hash", args.hash]

        warm_page_cache(model)
        pid = server.process.pid

        def against_server(argv: list[str]) -> tuple[Run, float]:
            before = _tree_cpu(pid)
            run = run_child(argv)
            return run, _tree_cpu(pid) - before

        local = run_child([*WV, "sign", str(model), *common])
        print(_line("sign local disk (page-cached)", local, size, None))
        remote, remote_server = against_server([*WV, "sign", url, *common])
        print(_line("sign s3:// (ranged GETs)", remote, size, local, remote_server))
        raw, raw_server = against_server(
            [sys.executable, "-c", _RAW_GETS, bucket, "bench/model", str(args.raw_depth)]
        )
        print(_line(f"raw ranged GETs, {args.raw_depth} in flight", raw, size, local, raw_server))
        if importlib.util.find_spec("obstore") is not None:
            native, native_server = against_server(
                [sys.executable, "-c", _RAW_OBSTORE, bucket, "bench/model", str(args.raw_depth)]
            )
            print(_line("raw ranged GETs, obstore", native, size, local, native_server))
        else:
            print("raw ranged GETs, obstore: not installed (pip install obstore)")
        with tempfile.TemporaryDirectory(dir=data) as scratch:
            script = (
                f"{sys.executable} -c '{_DOWNLOAD}' {bucket} bench/model {scratch}/model && "
                f"{' '.join(WV)} sign {scratch}/model {' '.join(common)}"
            )
            downloaded, downloaded_server = against_server(["sh", "-c", script])
        print(_line("download (boto3) then sign", downloaded, size, local, downloaded_server))
        if args.ray:
            with _ray_cluster(data) as address:
                os.environ["RAY_ADDRESS"] = address
                on_ray = run_child([*WV, "sign", str(model), *common, "--ray", "auto"])
                print(_line("sign local disk --ray auto", on_ray, size, local))
                on_ray_s3, ray_server = against_server([*WV, "sign", url, *common, "--ray", "auto"])
                print(_line("sign s3:// --ray auto", on_ray_s3, size, local, ray_server))
                fixed = float(_child_output([sys.executable, "-c", _RAY_START]))
                local_warm, ray_warm = (
                    float(x)
                    for x in _child_output(
                        [sys.executable, "-c", _RAY_WARM, str(model), args.hash]
                    ).split()
                )
            print(
                f"fresh driver's fixed Ray cost (import, connect, start workers): {fixed:.2f} s; "
                f"warm workers, one driver: local {local_warm:.2f} s, Ray {ray_warm:.2f} s"
            )
            print(
                f"ray overhead vs local: {on_ray.seconds / local.seconds:.2f}x for a fresh "
                f"`sign --ray` process, {ray_warm / local_warm:.2f}x with warm workers "
                "(target <= 1.3x)"
            )
        # S3 signing's wall time is at least its CPU time (signer + server) spread over every
        # CPU, so its speed relative to local signing is at most this:
        cpus = len(os.sched_getaffinity(0)) + (1 if args.pin else 0)
        ceiling = local.seconds * cpus / (remote.cpu_seconds + remote_server)
        print(
            f"s3 vs local speed: {local.seconds / remote.seconds:.2f}x (target >= 0.8x); "
            f"s3 peak RSS {remote.max_rss_mb:.0f} MB (target < 300 MB); "
            f"s3 vs download-then-sign: {downloaded.seconds / remote.seconds:.2f}x faster; "
            f"s3 signing reaches {raw.seconds / remote.seconds:.2f} of the raw GET rate"
        )
        print(
            f"CPU per GB: hashing (local signing) {local.cpu_seconds / size * GB:.2f} s, "
            f"S3 signer {remote.cpu_seconds / size * GB:.2f} s, "
            f"S3 server {remote_server / size * GB:.2f} s; signer and server sharing "
            f"{cpus} CPUs, S3 signing cannot pass {ceiling:.2f}x local speed"
        )
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
