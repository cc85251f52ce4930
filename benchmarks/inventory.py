"""Inventory benchmark: walking a tree for copies of a custody model vs signing's hash speed.

Builds a tree of ``--files`` weight files (default 1,000) totalling ``--size-gb`` (default 10 GB)
in 10 folders: safetensors files of random tensors, 20 exact copies of a model registered in a
real custody deployment (started for the run), and 20 re-saved copies of it (tensors renamed,
another file). Then, in ONE run and interleaved so a burst of load on the shared machine does
not fall on one side only, times (best of ``--rounds``):

* signing's hash of the same tree: :func:`weightvault.signing.digest` (SHA-256, every file,
  the parallel hashing engine; what ``weightvault sign`` spends hashing);
* the inventory walk: :func:`weightvault.inventory.take_inventory` with the custody deployment's
  references (listing, sniffing, hashing every weight file, header checks, and tensor digests
  for the files whose dtypes and shapes could hold the model's tensors).

Prints the ratio (walk speed / signing speed; target >= 0.8) and what the walk found (it must
find the 20 exact and 20 re-saved copies). Both read from the page cache when the tree fits in
memory; the tree is read once before timing. Usage::

    .venv/bin/python benchmarks/inventory.py                      # 10 GB, 1,000 files
    .venv/bin/python benchmarks/inventory.py --size-gb 1 --files 200

Data lives under ``bench-data/inventory`` (git-ignored) and is deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from safetensors.numpy import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.custody.helpers import make_model, public_pem, sign_model, start_service  # noqa: E402

from weightvault.custody.config import ServiceConfig  # noqa: E402
from weightvault.inventory import custody_references, take_inventory  # noqa: E402
from weightvault.signing import digest  # noqa: E402

GB = 1_000_000_000


def build_custody(root: Path, model_mb: float) -> tuple[Path, Path]:
    """A custody data folder with one registered model; returns (data folder, model folder)."""
    data = root / "custody"
    service = start_service(data)
    try:
        with service.admin as admin:
            key = ed25519.Ed25519PrivateKey.generate()
            admin.create_principal("alice", ["approver"], approval_key_pem=public_pem(key))
            owner = admin.create_principal("olivia", ["owner"])["token"]
        signing_key = ec.generate_private_key(ec.SECP256R1())
        model = make_model(root / "llama", megabytes=model_mb)
        signature = sign_model(model, signing_key)
        policy = {
            "approvers": ["alice"],
            "approvals_required": 1,
            "signers": [{"name": "release", "public_key_pem": public_pem(signing_key)}],
        }
        with service.client(owner) as client:
            client.create_model("llama", policy)
            client.push("llama", "v1", model, signature.read_bytes())
    finally:
        service.stop()
    return data, model


def build_tree(tree: Path, model: Path, files: int, size: int) -> int:
    """``files`` weight files of about ``size`` bytes in 10 folders; returns the total bytes."""
    rng = np.random.default_rng(0)
    tensors = load_file(str(model / "model.safetensors"))
    per_folder = max(1, files // 10)
    for i in range(files):
        folder = tree / f"team-{i // per_folder:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        if i % 50 == 7:  # exact copies
            shutil.copy(model / "model.safetensors", folder / f"checkpoint-{i}.safetensors")
        elif i % 50 == 31:  # re-saved copies: same tensors, other names and file
            save_file(
                {f"backbone.{name}": value for name, value in tensors.items()},
                str(folder / f"export-{i}.safetensors"),
            )
        else:
            count = size // 4
            rows = max(1, count // 1024)
            weights = rng.standard_normal((rows, 1024), dtype=np.float32)
            save_file({"weight": weights}, str(folder / f"model-{i}.safetensors"))
    return sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())


def read_all(tree: Path) -> None:
    """Read every file once so both sides start from the page cache."""
    for path in tree.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                while handle.read(8 << 20):
                    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-gb", type=float, default=10.0)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="Keep bench-data/inventory.")
    args = parser.parse_args()
    root = REPO / "bench-data" / "inventory"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    free = shutil.disk_usage(root).free
    total_wanted = int(args.size_gb * GB)
    if free < total_wanted * 1.3:
        shrunk = free / 1.3 / GB
        print(f"only {free / GB:.1f} GB free: tree shrunk to {shrunk:.1f} GB")
        total_wanted = int(shrunk * GB)
    print(f"load before the run: {os.getloadavg()[0]:.2f} (1-min average, {os.cpu_count()} cores)")
    try:
        started = time.perf_counter()
        file_size = total_wanted // args.files
        data, model = build_custody(root, file_size / (1 << 20))
        tree = root / "tree"
        total = build_tree(tree, model, args.files, file_size)
        print(
            f"made a tree of {args.files} files, {total / GB:.2f} GB, and a custody deployment "
            f"with one {file_size / 1e6:.0f} MB model in {time.perf_counter() - started:.1f} s"
        )
        read_all(tree)
        refs = custody_references(ServiceConfig(data_dir=data))
        sign_times: list[float] = []
        walk_times: list[float] = []
        report = None
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            manifest = digest(tree, hash_type="sha256")
            sign_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            report = take_inventory([tree], refs)
            walk_times.append(time.perf_counter() - t0)
        assert report is not None
        kinds: dict[str, int] = {}
        for finding in report.findings:
            kinds[finding.kind] = kinds.get(finding.kind, 0) + 1
        sign_best, walk_best = min(sign_times), min(walk_times)
        print(
            f"signing hash (weightvault.signing.digest, sha256, {len(manifest.resources)} files): "
            f"best {sign_best:.2f} s = {total / sign_best / GB:.2f} GB/s "
            f"(rounds: {', '.join(f'{t:.2f}' for t in sign_times)})"
        )
        print(
            f"inventory walk ({report.files_seen} files, "
            f"{report.bytes_hashed / GB:.2f} GB hashed): best {walk_best:.2f} s = "
            f"{total / walk_best / GB:.2f} GB/s "
            f"(rounds: {', '.join(f'{t:.2f}' for t in walk_times)})"
        )
        print(f"found: {', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}")
        ratio = sign_best / walk_best
        verdict = "met" if ratio >= 0.8 else "missed"
        print(f"ratio walk speed / signing hash speed: {ratio:.2f} (target >= 0.8: {verdict})")
        print(f"load after the run: {os.getloadavg()[0]:.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
