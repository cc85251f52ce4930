"""Signing and verifying a model that lives in a bucket, against a real S3 server (SeaweedFS).

The manifest of the objects must be byte-identical to the manifest of the same files on a disk,
for every hash and both serializations; a signature made either way verifies the other copy;
an object changed in the bucket (or while it is hashed) is refused.
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

from weightvault.errors import InputError, UsageError
from weightvault.signing import KeySigner, KeyVerifier, check, compute_manifest, sign
from weightvault.tree.s3 import S3Object, walk_object_store


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = start_seaweedfs(tmp_path_factory.mktemp("s3"))
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


def _upload(server: SeaweedS3, bucket: str, root: Path, prefix: str) -> str:
    client = server.client()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(root).as_posix()}"
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    return f"s3://{bucket}/{prefix}"


def _realistic_model(root: Path) -> Path:
    """Safetensors weights over several 8 MiB parts, config, tokenizer, nested and empty files,
    names that sort differently by component (``a/b`` before ``a-c``), a git folder."""
    (root / "sub").mkdir(parents=True)
    (root / "model.safetensors").write_bytes(os.urandom(300_000))
    (root / "config.json").write_text(json.dumps({"hidden_size": 64, "layers": 2}))
    (root / "tokenizer.json").write_text(json.dumps({"vocab": {"a": 0, "b": 1}}))
    (root / "sub" / "adapter.bin").write_bytes(os.urandom(5000))
    (root / "model-00001-of-00002.safetensors").write_bytes(os.urandom((8 << 20) * 2 + 12345))
    (root / "model-00002-of-00002.safetensors").write_bytes(os.urandom(3 << 20))
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "w.bin").write_bytes(os.urandom(777))
    (root / "a-c").write_bytes(b"x")
    (root / "empty.bin").write_bytes(b"")
    (root / ".git").mkdir()
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


@pytest.fixture(scope="module")
def uploaded(s3: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = _realistic_model(tmp_path_factory.mktemp("local") / "llm")
    bucket = s3.create_bucket()
    return root, _upload(s3, bucket, root, "org/llm")


@pytest.mark.parametrize(
    ("hash_type", "serialization", "shard_size"),
    [
        ("sha256", "files", None),
        ("blake2", "files", None),
        ("blake3", "files", None),
        ("sha256", "shards", 3 << 20),
        ("blake2", "shards", 1 << 20),
    ],
)
def test_manifest_of_the_bucket_is_byte_identical_to_the_disk_one(
    uploaded: tuple[Path, str], hash_type: str, serialization: str, shard_size: int | None
) -> None:
    root, url = uploaded
    options = {"hash_type": hash_type, "serialization": serialization, "shard_size": shard_size}
    local = compute_manifest(root, **options)  # type: ignore[arg-type]
    remote = compute_manifest(url, **options)  # type: ignore[arg-type]
    assert remote.to_payload() == local.to_payload()
    assert ".git" in remote.serialization.ignore_paths  # ignored by name, like on a disk
    assert len(remote.resources) >= 8


def test_single_object_is_a_single_file_model(s3: SeaweedS3, tmp_path: Path) -> None:
    weights = tmp_path / "one.safetensors"
    weights.write_bytes(os.urandom(9 << 20))
    bucket = s3.create_bucket()
    s3.client().put_object(Bucket=bucket, Key="m/one.safetensors", Body=weights.read_bytes())
    remote = compute_manifest(f"s3://{bucket}/m/one.safetensors")
    assert remote.to_payload() == compute_manifest(weights).to_payload()


def test_signature_made_either_way_verifies_the_other_copy(
    uploaded: tuple[Path, str], keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    root, url = uploaded
    signer, verifier = KeySigner.from_file(keypair[0]), KeyVerifier.from_file(keypair[1])
    from_bucket = tmp_path / "bucket.sig"
    sign(url, signer, signature_path=from_bucket, serialization="shards", shard_size=5 << 20)
    assert check(root, from_bucket, verifier).ok
    from_disk = tmp_path / "disk.sig"
    sign(root, signer, signature_path=from_disk)
    result = check(url, from_disk, verifier)
    assert result.ok, result.summary()
    assert not (root / "model.sig").exists()


def test_changed_missing_and_extra_objects_are_refused(
    s3: SeaweedS3, keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    root = _realistic_model(tmp_path / "llm")
    bucket = s3.create_bucket()
    url = _upload(s3, bucket, root, "llm")
    signature = tmp_path / "model.sig"
    sign(root, KeySigner.from_file(keypair[0]), signature_path=signature)
    verifier = KeyVerifier.from_file(keypair[1])
    client = s3.client()
    key = "llm/model-00001-of-00002.safetensors"
    data = bytearray(root.joinpath(key.split("/", 1)[1]).read_bytes())
    data[(8 << 20) + 5] ^= 1  # one bit, in the second ranged part
    client.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    client.delete_object(Bucket=bucket, Key="llm/config.json")
    client.put_object(Bucket=bucket, Key="llm/added.bin", Body=b"new")
    result = check(url, signature, verifier)
    assert not result.ok
    assert result.changed == ("model-00001-of-00002.safetensors",)
    assert result.missing == ("config.json",)
    assert result.extra == ("added.bin",)


def test_an_object_replaced_while_hashed_is_refused(s3: SeaweedS3) -> None:
    bucket = s3.create_bucket()
    client = s3.client()
    client.put_object(Bucket=bucket, Key="m/w.bin", Body=os.urandom(3 << 20))
    tree = walk_object_store(f"s3://{bucket}/m")
    source = tree.files[0].source
    assert isinstance(source, S3Object)
    pieces = S3Object(
        source.bucket, source.key, source.size, source.etag, source.endpoint, 256 << 10, 1
    )
    stream = pieces.chunks(0, source.size)
    first = next(stream)
    client.put_object(Bucket=bucket, Key="m/w.bin", Body=os.urandom(3 << 20))
    with pytest.raises(InputError, match="changed while hashing"):
        for piece in stream:
            first += piece
    stream.close()


def test_bad_urls_and_missing_objects_are_one_line_errors(s3: SeaweedS3) -> None:
    bucket = s3.create_bucket()
    with pytest.raises(InputError, match="no such object or prefix"):
        compute_manifest(f"s3://{bucket}/nothing-here")
    with pytest.raises(InputError, match="no such bucket"):
        compute_manifest("s3://no-such-bucket-wv/m")
    with pytest.raises(InputError, match="no bucket named"):
        compute_manifest("s3:///m")


@pytest.mark.parametrize("name", ["a//b.bin", "../escape.bin", "a/./b.bin", "a\\b.bin", "a/"])
def test_keys_no_folder_could_hold_are_refused(name: str) -> None:
    # SeaweedFS normalizes such keys on upload (AWS S3 keeps them), so the check is called here
    from weightvault.tree.s3 import _check_key_name

    with pytest.raises(InputError, match="cannot be a file's path"):
        _check_key_name(name, "s3://bucket/m")
    _check_key_name("a/b-c/w.bin", "s3://bucket/m")


def test_cli_signs_and_verifies_in_the_bucket_and_needs_a_local_signature_path(
    uploaded: tuple[Path, str], keypair: tuple[Path, Path], tmp_path: Path
) -> None:
    _, url = uploaded
    wv = [sys.executable, "-m", "weightvault"]
    signature = tmp_path / "llm.sig"
    refused = subprocess.run(
        [*wv, "sign", url, "--key", str(keypair[0])], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode != 0
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "signed into a local file" in refused.stderr and "--signature" in refused.stderr
    signed = subprocess.run(
        [*wv, "sign", url, "--key", str(keypair[0]), "--signature", str(signature), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert signed.returncode == 0, signed.stderr
    assert json.loads(signed.stdout)["resources"] >= 8
    assert json.loads(signed.stdout)["model"] == url
    verified = subprocess.run(
        [*wv, "verify", url, "--key", str(keypair[1]), "--signature", str(signature)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stderr
    assert f"{url}: signature OK" in verified.stdout


def test_default_signature_path_is_refused_for_a_bucket() -> None:
    from weightvault.signing import default_signature_path

    with pytest.raises(UsageError, match="no default signature file"):
        default_signature_path("s3://bucket/model")
