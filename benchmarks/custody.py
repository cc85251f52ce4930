"""Custody service benchmark, over loopback, in one run.

1. Pull throughput of a multi-GB version (budgets and audit on: every byte is debited from the
   grant, principal and model budgets in slices, and the pull is in the transparency log before
   the response starts), compared with a plain file copy of the same ciphertext bytes.
2. Peak resident memory of the service process while it serves that pull (target < 300 MB for a
   10 GB version).
3. Audited small requests per second (``GET /v1/whoami``) from 50 concurrent clients; the audit
   log is checked to hold exactly one entry per request.

Usage::

    .venv/bin/python benchmarks/custody.py                 # 10 GB version (needs ~35 GB of disk)
    .venv/bin/python benchmarks/custody.py --size-gb 2     # quicker

Data lives under ``bench-data/`` (git-ignored) and is deleted at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import secrets
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.custody.helpers import free_port  # noqa: E402

from weightvault.crypt.recipients import X25519Identity  # noqa: E402
from weightvault.custody.approvals import ApprovalSigner  # noqa: E402
from weightvault.custody.client import ClientConfig, VaultClient  # noqa: E402

GIB = 1 << 30
MB = 1_000_000


def _pem(key: object) -> str:
    return (
        key.public_key()  # type: ignore[attr-defined]
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def write_safetensors(path: Path, size: int, seed: int) -> None:
    """A safetensors file holding one uint8 tensor of ``size`` bytes (pseudo-random content)."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}})
    header_bytes = header.encode() + b" " * (-len(header) % 8)
    block = np.random.default_rng(seed).integers(0, 256, 64 << 20, dtype=np.uint8).tobytes()
    with path.open("wb") as out:
        out.write(struct.pack("<Q", len(header_bytes)) + header_bytes)
        remaining = size
        while remaining:
            piece = block[: min(remaining, len(block))]
            out.write(piece)
            remaining -= len(piece)


def rss_sampler(pid: int, stop: threading.Event, peak: list[int]) -> None:
    while not stop.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    peak[0] = max(peak[0], int(line.split()[1]) * 1024)
        except OSError:
            return
        time.sleep(0.02)


def hammer(url: str, token: str, clients: int, seconds: float) -> tuple[int, int, list[float]]:
    """``clients`` threads, each with a keep-alive connection, calling GET /v1/whoami."""
    host, port = url.split("//")[1].split(":")
    ok = [0]
    failed = [0]
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def worker() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        mine: list[float] = []
        good = bad = 0
        while time.monotonic() < deadline:
            started = time.perf_counter()
            connection.request("GET", "/v1/whoami", headers={"Authorization": f"Bearer {token}"})
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            if response.status == 200:
                good += 1
            else:
                bad += 1
        connection.close()
        with lock:
            ok[0] += good
            failed[0] += bad
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ok[0], failed[0], sorted(latencies)


def pull_discarding(url: str, token: str, grant_id: str, index: int) -> int:
    """Read one delivered file over HTTP into a reused buffer (no disk): the service's rate."""
    host, port = url.split("//")[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    connection.request(
        "GET",
        f"/v1/grants/{grant_id}/files/{index}",
        headers={"Authorization": f"Bearer {token}"},
    )
    response = connection.getresponse()
    assert response.status == 200, response.status
    view = memoryview(bytearray(4 << 20))
    total = 0
    while count := response.readinto(view):
        total += count
    connection.close()
    return total


def read_discarding(path: Path) -> int:
    view = memoryview(bytearray(4 << 20))
    total = 0
    with path.open("rb", buffering=0) as handle:
        while count := handle.readinto(view):
            total += count
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=10.0, help="Version size in GiB.")
    parser.add_argument("--files", type=int, default=5, help="Files in the version.")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    print(f"load before the run: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)")
    root = REPO / "bench-data" / f"custody-{secrets.token_hex(4)}"
    root.mkdir(parents=True)
    data_dir = root / "service"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token_file = root / "admin.token"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "weightvault",
            "serve",
            "--data",
            str(data_dir),
            "--port",
            str(port),
            "--init-admin",
            "admin",
            "--admin-token-file",
            str(token_file),
            "--principal-budget",
            "1000T",
        ],
        stdout=(root / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v1/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("service did not start")
            time.sleep(0.1)
        admin = VaultClient(ClientConfig(url, token_file.read_text().strip()))
        approvers = {n: ed25519.Ed25519PrivateKey.generate() for n in ("alice", "bob")}
        tokens = {}
        for name, key in approvers.items():
            tokens[name] = admin.create_principal(name, ["approver"], approval_key_pem=_pem(key))[
                "token"
            ]
        identity = X25519Identity.generate()
        tokens["rita"] = admin.create_principal(
            "rita", ["reader"], recipient=identity.recipient().to_string()
        )["token"]
        tokens["olivia"] = admin.create_principal("olivia", ["owner"])["token"]
        signing_key = ec.generate_private_key(ec.SECP256R1())
        owner = VaultClient(ClientConfig(url, tokens["olivia"]))
        owner.create_model(
            "bench",
            {
                "approvers": ["alice", "bob"],
                "approvals_required": 2,
                "signers": [{"name": "bench", "public_key_pem": _pem(signing_key)}],
                "max_grant_bytes": 1 << 50,
                "egress_bytes_per_window": 1 << 50,
            },
        )

        # -- the version ------------------------------------------------------------------------
        model = root / "model"
        model.mkdir()
        total = int(args.size_gb * GIB)
        per_file = total // args.files
        started = time.perf_counter()
        for index in range(args.files):
            write_safetensors(model / f"shard-{index:03d}.safetensors", per_file, index)
        print(
            f"made a {total / GIB:.1f} GiB model ({args.files} files) in "
            f"{time.perf_counter() - started:.1f} s"
        )
        from weightvault.signing import KeySigner, sign

        signature = root / "model.sig"
        sign(model, KeySigner(signing_key), signature_path=signature)
        started = time.perf_counter()
        owner.push("bench", "v1", model, signature.read_bytes())
        push_s = time.perf_counter() - started
        print(
            f"push (stream, verify signature, scan, encrypt, store): {push_s:.1f} s, "
            f"{total / push_s / MB:.0f} MB/s"
        )
        shutil.rmtree(model)

        rita = VaultClient(ClientConfig(url, tokens["rita"]))
        request = rita.request("bench", "v1", "throughput benchmark run", 3600, 1 << 50)
        for name, key in approvers.items():
            with VaultClient(ClientConfig(url, tokens[name])) as client:
                client.decide(
                    request["id"],
                    ApprovalSigner(private_key=key),
                    approver=name,
                    valid_for=dt.timedelta(hours=1),
                )

        # -- 1 + 2: pull throughput and service memory ------------------------------------------
        listing = rita.grant_files(request["id"])
        delivered = sum(f["delivered_size"] for f in listing["files"])
        out = root / "pulled"
        out.mkdir()
        peak = [0]
        stop = threading.Event()
        sampler = threading.Thread(target=rss_sampler, args=(process.pid, stop, peak))
        rss_before = 0
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_before = int(line.split()[1]) * 1024
        sampler.start()
        started = time.perf_counter()
        rita.pull(request["id"], out, None)  # to disk, still encrypted to rita
        pull_s = time.perf_counter() - started
        started = time.perf_counter()
        streamed = sum(
            pull_discarding(url, tokens["rita"], request["id"], f["index"])
            for f in listing["files"]
        )
        stream_s = time.perf_counter() - started
        stop.set()
        sampler.join()
        assert streamed == delivered
        pull_rate = delivered / pull_s
        stream_rate = delivered / stream_s
        blobs = sorted((data_dir / "blobs").rglob("*.wvenc"))
        copies = root / "copies"
        copies.mkdir()
        started = time.perf_counter()
        for blob in blobs:
            shutil.copyfile(blob, copies / blob.name)
        copy_s = time.perf_counter() - started
        copied = sum(b.stat().st_size for b in blobs)
        copy_rate = copied / copy_s
        started = time.perf_counter()
        read = sum(read_discarding(b) for b in blobs)
        read_rate = read / (time.perf_counter() - started)
        shutil.rmtree(copies)
        shutil.rmtree(out)

        # -- 3: audited small requests ----------------------------------------------------------
        auditor_token = admin.create_principal("audrey", ["auditor"])["token"]
        auditor = VaultClient(ClientConfig(url, auditor_token))

        def log_size() -> int:
            from weightvault.tlog.log import LogExport

            return len(LogExport.from_json(auditor.audit_export()).entries)

        before = log_size()
        ok, failed, latencies = hammer(url, tokens["rita"], args.clients, args.seconds)
        after = log_size()
        rps = ok / args.seconds
        # whoami requests, plus the export request itself
        logged = after - before - 1

        print()
        print(
            f"pull of {delivered / GIB:.2f} GiB to disk over loopback (budgets + audit on): "
            f"{pull_s:.1f} s = {pull_rate / MB:.0f} MB/s"
        )
        print(
            f"plain file copy of the same {copied / GIB:.2f} GiB of ciphertext (disk to disk): "
            f"{copy_s:.1f} s = {copy_rate / MB:.0f} MB/s"
        )
        print(f"  ratio pull / copy: {pull_rate / copy_rate:.2f}")
        print(
            f"pull into memory (service rate, no client disk): {stream_rate / MB:.0f} MB/s; "
            f"plain read of the same files into memory: {read_rate / MB:.0f} MB/s"
        )
        print(f"  ratio pull / read: {stream_rate / read_rate:.2f}")
        best = max(pull_rate, stream_rate)
        print(
            f"  target pull >= 500 MB/s: {'met' if best >= 500 * MB else 'MISSED'} "
            f"(best {best / MB:.0f} MB/s)"
        )
        print(
            f"service RSS: {rss_before / MB:.0f} MB before the pulls, peak "
            f"{peak[0] / MB:.0f} MB while serving {delivered / GIB:.1f} GiB twice "
            f"(target < 300 MB: {'met' if peak[0] < 300 * MB else 'MISSED'})"
        )
        p50 = latencies[len(latencies) // 2] * 1000 if latencies else 0.0
        p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0
        print(
            f"audited small requests (GET /v1/whoami), {args.clients} concurrent clients, "
            f"{args.seconds:.0f} s: {rps:.0f} requests/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"{failed} failed; audit entries added {logged} "
            f"(one per request: {logged == ok + failed})"
        )
        print(f"load after the run: {os.getloadavg()[0]:.2f}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
