"""Hashing on a real local Ray cluster (``ray.init(num_cpus=2)``): same digests as local signing.

Ray starts worker processes; one cluster serves the whole module. Trees are small, but the task
size is lowered so that every tree is cut into many tasks (files and byte ranges).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.s3 import SeaweedS3, start_seaweedfs

from weightvault.errors import InputError
from weightvault.hashing import HashJob, hash_jobs
from weightvault.hashing.cluster import plan_batches
from weightvault.signing import compute_manifest

ray = pytest.importorskip("ray", reason="the ray extra is not installed")


@pytest.fixture(scope="module", autouse=True)
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A bucket server whose credentials the workers inherit (set before Ray starts them)."""
    server = start_seaweedfs(tmp_path_factory.mktemp("s3"))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in server.env().items():
            patch.setenv(name, value)
        ray.init(num_cpus=2, include_dashboard=False, logging_level="error")
        try:
            yield server
        finally:
            ray.shutdown()
            server.stop()


@pytest.fixture(autouse=True)
def small_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("weightvault.hashing.cluster.BATCH_BYTES", 64 << 10)


def _tree(root: Path, files: int, size: int) -> Path:
    """Weights, config, tokenizer, a nested folder of parts, an empty file."""
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(os.urandom(size))
    (root / "config.json").write_text(json.dumps({"hidden_size": 64}))
    (root / "tokenizer.json").write_text(json.dumps({"vocab": {"a": 0}}))
    for index in range(files):
        (root / "shards" / f"part-{index}.bin").parent.mkdir(exist_ok=True)
        (root / "shards" / f"part-{index}.bin").write_bytes(os.urandom(size // (index + 1)))
    (root / "empty").write_bytes(b"")
    return root


@pytest.mark.parametrize(
    ("files", "size", "options"),
    [
        (3, 400_000, {"hash_type": "sha256"}),
        (12, 50_000, {"hash_type": "blake2"}),
        (2, 900_000, {"hash_type": "blake3"}),
        (4, 700_000, {"serialization": "shards", "shard_size": 100_000}),
        (5, 300_000, {"hash_type": "blake2", "serialization": "shards", "shard_size": 65_536}),
    ],
)
def test_ray_manifest_equals_the_local_one(
    tmp_path: Path, files: int, size: int, options: dict[str, object]
) -> None:
    root = _tree(tmp_path / "model", files, size)
    local = compute_manifest(root, **options)  # type: ignore[arg-type]
    on_ray = compute_manifest(root, cluster="auto", **options)  # type: ignore[arg-type]
    assert on_ray.to_payload() == local.to_payload()
    assert on_ray.root_digest == local.root_digest


def test_relative_paths_are_found_by_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path / "model", 2, 100_000)
    monkeypatch.chdir(tmp_path)
    assert compute_manifest(Path("model"), cluster="auto").root_digest == (
        compute_manifest(Path("model")).root_digest
    )


def test_tasks_pack_small_jobs_and_keep_large_ones_alone(tmp_path: Path) -> None:
    jobs = [HashJob(tmp_path / str(n), str(n), size) for n, size in enumerate([10, 500, 20, 30])]
    assert plan_batches(jobs, batch_bytes=100) == [[1], [3, 2, 0]]
    assert sorted(i for batch in plan_batches(jobs, batch_bytes=1) for i in batch) == [0, 1, 2, 3]


def test_a_worker_that_cannot_read_a_file_raises_its_one_line_error(tmp_path: Path) -> None:
    present = tmp_path / "present.bin"
    present.write_bytes(b"x" * 1000)
    jobs = [HashJob(present, "present.bin", 1000), HashJob(tmp_path / "gone", "gone.bin", 10)]
    with pytest.raises(InputError, match=r"^gone\.bin: cannot open"):
        hash_jobs(jobs, "sha256", cluster="auto")
    short = [HashJob(present, "present.bin", 2000, 0, 2000)]
    with pytest.raises(InputError, match="shorter than expected"):
        hash_jobs(short, "sha256", cluster="auto")


def test_workers_read_a_model_in_a_bucket(s3: SeaweedS3, tmp_path: Path) -> None:
    root = _tree(tmp_path / "model", 3, 300_000)
    bucket = s3.create_bucket()
    client = s3.client()
    for path in root.rglob("*"):
        if path.is_file():
            key = f"model/{path.relative_to(root).as_posix()}"
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    options = {"serialization": "shards", "shard_size": 100_000}
    local = compute_manifest(root, **options)  # type: ignore[arg-type]
    on_ray = compute_manifest(f"s3://{bucket}/model", cluster="auto", **options)  # type: ignore[arg-type]
    assert on_ray.to_payload() == local.to_payload()


def test_cli_digest_on_the_running_cluster_and_a_bad_address(tmp_path: Path) -> None:
    root = _tree(tmp_path / "model", 2, 200_000)
    wv = [sys.executable, "-m", "weightvault"]
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}

    def digest(*extra: str) -> str:
        done = subprocess.run(
            [*wv, "digest", str(root), "--json", *extra],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["root_digest"])

    assert digest("--ray", "auto") == digest()
    refused = subprocess.run(
        [*wv, "digest", str(root), "--ray", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "cannot connect to the Ray cluster" in refused.stderr


def test_an_explicit_address_needs_the_token_and_says_so(tmp_path: Path) -> None:
    """Ray starts its clusters with token authentication, and a driver sends the token to an
    explicit address only under ``RAY_AUTH_MODE=token``: without it the refusal names what to
    set, in one line (Ray's C++ client logs a line a second while it retries; held back)."""
    assert os.environ.get("RAY_AUTH_MODE") == "token", "this Ray started its cluster without tokens"
    root = _tree(tmp_path / "model", 1, 100_000)
    address = ray.get_runtime_context().gcs_address
    wv = [sys.executable, "-m", "weightvault", "digest", str(root), "--json", "--ray", address]
    without = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    refused = subprocess.run(wv, capture_output=True, text=True, timeout=180, env=without)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: cannot connect to the Ray cluster at {address}: it requires token "
        "authentication; set RAY_AUTH_MODE=token and give its token in RAY_AUTH_TOKEN (or a file "
        "named by RAY_AUTH_TOKEN_PATH, default ~/.ray/auth_token)"
    ]
    assert refused.stdout == ""
    accepted = subprocess.run(
        wv, capture_output=True, text=True, timeout=180, env={**without, "RAY_AUTH_MODE": "token"}
    )
    assert accepted.returncode == 0, accepted.stderr
    local = subprocess.run(wv[:-2], capture_output=True, text=True, timeout=180, check=True)
    assert json.loads(accepted.stdout)["root_digest"] == json.loads(local.stdout)["root_digest"]


def test_verification_on_ray_finds_a_changed_file(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from weightvault.signing import KeySigner, KeyVerifier, check, sign

    root = _tree(tmp_path / "model", 3, 200_000)
    key = ec.generate_private_key(ec.SECP256R1())
    signature = tmp_path / "model.sig"
    sign(root, KeySigner(key), signature_path=signature, serialization="shards", shard_size=50_000)
    verifier = KeyVerifier(key.public_key())
    assert check(root, signature, verifier, cluster="auto").ok
    data = bytearray((root / "shards" / "part-1.bin").read_bytes())
    data[-1] ^= 1
    (root / "shards" / "part-1.bin").write_bytes(bytes(data))
    result = check(root, signature, verifier, cluster="auto")
    assert result.changed == ("shards/part-1.bin",)
