"""Custody pulls under a ``fingerprint`` policy: every grant gets its own marked copy (the same
bytes on every pull and resume of that grant), the audit log carries the fingerprint id, and
``trace`` names the grant a leaked copy came from. Models without the policy keep byte-identical
pulls (the custody suite's own tests)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tests.custody.helpers import World, build_world, public_pem, sign_model, start_service
from tests.fingerprint.models import state_of, tiny_bert

from weightvault.fingerprint import load_fingerprint_key, trace_copy
from weightvault.tlog import LogExport


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("custody-fp")
    service = start_service(root / "data")
    try:
        world = build_world(root, service)
        model = tiny_bert()
        folder = root / "bert-v1"
        folder.mkdir()
        save_file(state_of(model), folder / "model.safetensors")
        model.config.save_pretrained(folder)
        assert world.signing_key is not None
        policy = {
            "approvers": ["alice", "bob", "carol"],
            "approvals_required": 2,
            "signers": [{"name": "release", "public_key_pem": public_pem(world.signing_key)}],
            "fingerprint": True,
        }
        with world.client("olivia") as olivia:
            olivia.create_model("bert", policy)
            olivia.push("bert", "v1", folder, sign_model(folder, world.signing_key).read_bytes())
        yield world
    finally:
        service.stop()


def _grant(world: World, who: str) -> str:
    with world.client(who) as client:
        request = client.request("bert", "v1", "evaluation run for safety", 3600, 1 << 30)
    world.approve("alice", request["id"])
    assert world.approve("bob", request["id"])["status"] == "active"
    return str(request["id"])


def _pull(world: World, who: str, grant: str, out: Path) -> dict[str, bytes]:
    person = world.people[who]
    with world.client(who) as client:
        client.pull(grant, out, person.identity)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_each_grant_gets_its_own_traceable_copy(world: World, tmp_path: Path) -> None:
    rita_grant, ravi_grant = _grant(world, "rita"), _grant(world, "ravi")
    rita = _pull(world, "rita", rita_grant, tmp_path / "rita")
    again = _pull(world, "rita", rita_grant, tmp_path / "rita-again")
    ravi = _pull(world, "ravi", ravi_grant, tmp_path / "ravi")
    assert rita["config.json"] == ravi["config.json"]  # only weights are marked
    assert rita["model.safetensors"] == again["model.safetensors"]  # one copy per grant
    assert rita["model.safetensors"] != ravi["model.safetensors"]
    marked = load_file(tmp_path / "rita" / "model.safetensors")
    assert set(marked) == set(state_of(tiny_bert()))

    key = load_fingerprint_key(world.service.data_dir / "fingerprint.key")
    source = world.root / "bert-v1" / "model.safetensors"
    candidates = [f"rita:{rita_grant}", f"ravi:{ravi_grant}", "carol:0"]
    leak = tmp_path / "leak.pt"
    torch.save({f"m.{k}": v for k, v in marked.items()}, leak)
    assert trace_copy(leak, source, key, candidates).recipient == f"rita:{rita_grant}"

    with world.client("audrey") as client:
        entries = [json.loads(e) for e in LogExport.from_json(client.audit_export()).entries]
    mark = key.fingerprint_id(f"rita:{rita_grant}")
    logged = [e for e in entries if mark in json.dumps(e)]
    assert logged and all(rita_grant in json.dumps(e) for e in logged)
    # The approval that activated the grant already names the mark, before any byte left.
    activations = [e for e in entries if _activates(e, rita_grant)]
    assert len(activations) == 1 and mark in json.dumps(activations[0])
    assert key.fingerprint_id(f"ravi:{ravi_grant}") not in json.dumps(activations[0])


def _activates(entry: object, grant: str) -> bool:
    """Whether a log entry is the approval record that made ``grant`` active."""
    if isinstance(entry, dict):
        if entry.get("status") == "active" and str(entry.get("request_id")) == grant:
            return True
        return any(_activates(v, grant) for v in entry.values())
    if isinstance(entry, list):
        return any(_activates(v, grant) for v in entry)
    return False


def test_models_without_the_policy_are_delivered_as_stored(world: World, tmp_path: Path) -> None:
    grant = world.granted("rita")
    with world.client("rita") as client:
        client.pull(grant, tmp_path / "llama", world.people["rita"].identity)
    with world.client("audrey") as client:
        entries = [json.loads(e) for e in LogExport.from_json(client.audit_export()).entries]
    activations = [e for e in entries if _activates(e, grant)]
    assert len(activations) == 1 and "fingerprint_id" not in json.dumps(activations[0])
    assert world.model_dir is not None
    pulled = (tmp_path / "llama" / "model.safetensors").read_bytes()
    original = (world.model_dir / "model.safetensors").read_bytes()
    assert hashlib.sha256(pulled).digest() == hashlib.sha256(original).digest()


def test_ranges_of_a_fingerprinted_file_resume_onto_the_same_bytes(world: World) -> None:
    """A download that stops half-way and resumes with a Range gets the rest of the same copy:
    the copy is made once per grant and stored, not re-marked (or re-encrypted) per request."""
    import httpx

    grant = _grant(world, "carol")
    headers = {"Authorization": f"Bearer {world.people['carol'].token}"}
    with world.client("carol") as client:
        listing = client.grant_files(grant)
    entry = next(f for f in listing["files"] if f["path"] == "model.safetensors")
    url = f"{world.service.url}/v1/grants/{grant}/files/{entry['index']}"
    whole = httpx.get(url, headers=headers).content
    assert len(whole) == entry["delivered_size"]
    half = len(whole) // 2
    first = httpx.get(url, headers={**headers, "Range": f"bytes=0-{half - 1}"})
    rest = httpx.get(url, headers={**headers, "Range": f"bytes={half}-"})
    assert first.status_code == rest.status_code == 206
    assert first.content + rest.content == whole
