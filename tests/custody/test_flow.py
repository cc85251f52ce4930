"""The golden path: push, request, two approvals, pull (encrypted to the grantee), audit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.custody.helpers import World


def test_pull_delivers_exact_weights_encrypted_to_the_grantee(world: World, tmp_path: Path) -> None:
    grant_id = world.granted("rita")
    rita = world.people["rita"]
    with world.client("rita") as client:
        listing = client.grant_files(grant_id)
        result = client.pull(grant_id, tmp_path / "out", rita.identity)
    assert {f["path"] for f in listing["files"]} == {"config.json", "model.safetensors"}
    assert world.model_dir is not None
    for name in ("config.json", "model.safetensors"):
        original = (world.model_dir / name).read_bytes()
        assert (tmp_path / "out" / name).read_bytes() == original
    assert len(result["files"]) == 2


def test_delivered_bytes_are_ciphertext_for_the_grantee_only(world: World, tmp_path: Path) -> None:
    from weightvault.crypt.envelope import unlock
    from weightvault.errors import DecryptionError

    grant_id = world.granted("rita")
    with world.client("rita") as client:
        client.pull(grant_id, tmp_path / "enc", None)
    encrypted = tmp_path / "enc" / "model.safetensors.wvenc"
    data = encrypted.read_bytes()
    assert world.model_dir is not None
    plain = (world.model_dir / "model.safetensors").read_bytes()
    assert plain[:4096] not in data
    assert unlock(encrypted, [world.people["rita"].identity]).plaintext_size == len(plain)
    other = world.people["ravi"].identity
    try:
        unlock(encrypted, [other])
    except DecryptionError:
        pass
    else:
        raise AssertionError("another reader's identity opened the delivered file")


def test_inventory_lists_owner_signer_digests_access_and_exfiltration_time(world: World) -> None:
    grant_id = world.granted("rita")
    with world.client("audrey") as client:
        inventory = client.inventory()
    entry = next(e for e in inventory if e["model"] == "llama")
    version = next(v for v in entry["versions"] if v["version"] == "v1")
    assert entry["owner"] == "olivia"
    assert version["signer"] == "key:release-key"
    assert "rita" in version["access"]
    assert world.model_dir is not None
    digest = hashlib.sha256((world.model_dir / "config.json").read_bytes()).hexdigest()
    assert {
        "path": "config.json",
        "size": len(json.dumps({"hidden": 64, "seed": 0})),
        "sha256": digest,
    } in version["files"]
    expected = version["size"] * entry["window_s"] / entry["egress_bytes_per_window"]
    assert abs(version["time_to_exfiltrate_s"] - expected) < 1e-9
    assert grant_id
