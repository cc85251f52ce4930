"""Scale-out: two replicas on one real PostgreSQL database and one real S3 bucket (SeaweedFS)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.custody.helpers import Service, build_world, start_service
from tests.postgres import PostgresServer
from tests.s3 import SeaweedS3, start_seaweedfs

from weightvault.custody.audit import verify_audit
from weightvault.custody.blobs import S3BlobStore
from weightvault.tlog.log import LogExport


@pytest.fixture(scope="module")
def backends(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> Iterator[tuple[PostgresServer, SeaweedS3]]:
    s3 = start_seaweedfs(tmp_path_factory.mktemp("s3"))
    try:
        yield postgres, s3
    finally:
        s3.stop()


def _replicas(tmp_path: Path, postgres: PostgresServer, s3: SeaweedS3) -> tuple[Service, Service]:
    dsn = postgres.create_database()
    bucket = s3.create_bucket()
    args = ("--database", dsn, "--blobs", f"s3://{bucket}/weights")
    first = start_service(tmp_path / "a", args=(*args, "--replica", "a"), env=s3.env())
    # The operator gives the second replica the same secrets (KEK, log key, audit HMAC key).
    (tmp_path / "b").mkdir(mode=0o700)
    for name in ("service-kek.keyring", "audit-log.key", "audit-hmac.key"):
        shutil.copy2(tmp_path / "a" / name, tmp_path / "b" / name)
    second = start_service(
        tmp_path / "b",
        args=(*args, "--replica", "b"),
        env=s3.env(),
        init_admin=False,
        admin_token=first.admin_token,
    )
    return first, second


def test_two_replicas_share_one_database_bucket_and_audit_log(
    backends: tuple[PostgresServer, SeaweedS3], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    postgres, s3 = backends
    first, second = _replicas(tmp_path, postgres, s3)
    try:
        world = build_world(tmp_path, first)  # principals, model and v1 via replica a
        blobs = s3.client().list_objects_v2(Bucket=s3.buckets[-1], Prefix="weights/")
        assert len(blobs.get("Contents", [])) == 2  # two encrypted files, nothing on local disk
        assert not (tmp_path / "a" / "blobs").exists()
        rita_b = second.client(world.people["rita"].token)
        request = rita_b.request("llama", "v1", "evaluation run for safety", 3600, 1 << 30)
        with first.client(world.people["alice"].token) as alice_a:
            alice_a.decide(request["id"], world.people["alice"].signer, approver="alice")
        with second.client(world.people["bob"].token) as bob_b:
            result = bob_b.decide(request["id"], world.people["bob"].signer, approver="bob")
        assert result["status"] == "active"
        rita_b.pull(request["id"], tmp_path / "out", world.people["rita"].identity)
        rita_b.close()
        assert world.model_dir is not None
        for name in ("config.json", "model.safetensors"):
            assert (tmp_path / "out" / name).read_bytes() == (world.model_dir / name).read_bytes()

        def whoami(index: int) -> str:
            service = (first, second)[index % 2]
            with service.client(world.people["ravi"].token) as client:
                return str(client.whoami()["name"])

        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(whoami, range(40))) == {"ravi"}
        with second.client(world.people["audrey"].token) as auditor:
            export = auditor.audit_export()
            key = auditor.audit_key()["log_key"]
        result_ok = verify_audit(export, key)
        entries = [json.loads(e) for e in LogExport.from_json(export).entries]
        assert result_ok.size == len(entries)
        assert {e["replica"] for e in entries} >= {"a", "b"}
        assert sum(1 for e in entries if e["action"] == "whoami" and e["principal"] == "ravi") == 40
        # An upload that died after its ciphertext reached the bucket is swept; versions stay.
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)
        store = S3BlobStore(s3.buckets[-1], "weights", endpoint_url=s3.endpoint)
        orphan = "f" * 32
        s3.client().put_object(Bucket=s3.buckets[-1], Key=f"weights/{orphan}/0.wvenc", Body=b"x")
        registered = {o["Key"].split("/")[1] for o in blobs["Contents"]}
        assert store.sweep(registered, time.time() + 60) == [orphan]
        left = s3.client().list_objects_v2(Bucket=s3.buckets[-1], Prefix="weights/")["Contents"]
        assert {o["Key"].split("/")[1] for o in left} == registered
    finally:
        first.stop()
        second.stop()
