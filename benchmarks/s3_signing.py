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
* with ``--ray``: ``weightvault sign --ray auto`` of the local folder and of the bucket
  (a local Ray cluster started once by this script; its start-up is not timed).

Prints one line per mode and the ratios the issue sets as targets (s3 >= 0.8x local speed,
peak RSS < 300 MB; Ray overhead <= 1.3x local). Usage::

    .venv/bin/python benchmarks/s3_signing.py              # 4 GB
    .venv/bin/python benchmarks/s3_signing.py --gb 1 --ray
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
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


def _line(label: str, run: Run, size: int, base: Run | None) -> str:
    speed = size / run.seconds / 1e6
    ratio = f"  {base.seconds / run.seconds:5.2f}x local speed" if base else ""
    status = "" if run.returncode == 0 else f"  FAILED (exit {run.returncode})"
    return (
        f"{label:<34} {run.seconds:7.2f} s  {speed:7.0f} MB/s  peak RSS {run.max_rss_mb:6.0f} MB"
        f"  CPU {run.cpu_seconds:6.1f} s{ratio}{status}"
    )


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
        local = run_child([*WV, "sign", str(model), *common])
        print(_line("sign local disk (page-cached)", local, size, None))
        remote = run_child([*WV, "sign", url, *common])
        print(_line("sign s3:// (ranged GETs)", remote, size, local))
        raw = run_child(
            [sys.executable, "-c", _RAW_GETS, bucket, "bench/model", str(args.raw_depth)]
        )
        print(_line(f"raw ranged GETs, {args.raw_depth} in flight", raw, size, local))
        with tempfile.TemporaryDirectory(dir=data) as scratch:
            script = (
                f"{sys.executable} -c '{_DOWNLOAD}' {bucket} bench/model {scratch}/model && "
                f"{' '.join(WV)} sign {scratch}/model {' '.join(common)}"
            )
            downloaded = run_child(["sh", "-c", script])
        print(_line("download (boto3) then sign", downloaded, size, local))
        if args.ray:
            import ray

            ray.init(include_dashboard=False)
            os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
            on_ray = run_child([*WV, "sign", str(model), *common, "--ray", "auto"])
            print(_line("sign local disk --ray auto", on_ray, size, local))
            on_ray_s3 = run_child([*WV, "sign", url, *common, "--ray", "auto"])
            print(_line("sign s3:// --ray auto", on_ray_s3, size, local))
            print(f"ray overhead vs local: {on_ray.seconds / local.seconds:.2f}x (target <= 1.3x)")
            ray.shutdown()
        print(
            f"s3 vs local speed: {local.seconds / remote.seconds:.2f}x (target >= 0.8x); "
            f"s3 peak RSS {remote.max_rss_mb:.0f} MB (target < 300 MB); "
            f"s3 vs download-then-sign: {downloaded.seconds / remote.seconds:.2f}x faster; "
            f"s3 signing reaches {raw.seconds / remote.seconds:.2f} of the raw GET rate"
        )
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
