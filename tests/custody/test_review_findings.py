"""Regression tests for findings of the authorization review of the custody service."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
from tests.custody.helpers import World, public_pem


def _request(world: World, who: str = "rita") -> dict[str, Any]:
    with world.client(who) as client:
        return client.request("llama", "v1", "evaluation run for safety", 3600, 1 << 30)


def test_approval_of_a_disabled_approver_does_not_count(world: World) -> None:
    request = _request(world)
    world.approve("alice", request["id"])
    with world.service.admin as admin:
        admin.update_principal("alice", disabled=True)
    try:
        # M = 2: bob's approval alone must not activate the grant.
        assert world.approve("bob", request["id"])["status"] == "pending"
    finally:
        with world.service.admin as admin:
            admin.update_principal("alice", disabled=False)
    assert world.approve("carol", request["id"])["status"] == "active"


def test_approval_of_an_approver_removed_from_the_policy_does_not_count(world: World) -> None:
    request = _request(world)
    world.approve("alice", request["id"])
    with world.client("olivia") as owner:
        policy = owner.set_policy("llama", _llama_policy(world, ["bob", "carol"]))["policy"]
        assert policy["approvers"] == ["bob", "carol"]
        try:
            assert world.approve("bob", request["id"])["status"] == "pending"
        finally:
            owner.set_policy("llama", _llama_policy(world, ["alice", "bob", "carol"]))
    assert world.approve("carol", request["id"])["status"] == "active"


def _llama_policy(world: World, approvers: list[str]) -> dict[str, Any]:
    return {
        "approvers": approvers,
        "approvals_required": 2,
        "signers": [{"name": "release-key", "public_key_pem": public_pem(world.signing_key)}],
        "max_grant_bytes": 1 << 40,
        "approval_validity_s": 7200,
    }


def test_range_with_non_ascii_digits_is_a_client_error(world: World) -> None:
    grant_id = world.granted("rita")
    for value in (b"bytes=\xb2-", b"bytes=0-\xb9"):
        response = httpx.get(
            f"{world.service.url}/v1/grants/{grant_id}/files/1",
            headers={"Authorization": f"Bearer {world.people['rita'].token}", "Range": value},
            timeout=30,
        )
        assert response.status_code == 400, (value, response.status_code, response.text)


def _stream_and_interrupt(world: World, version: str, interrupt: Any) -> tuple[int, int]:
    """Start a pull of a 48 MB file, call ``interrupt`` after the first chunk, count bytes."""
    from tests.custody.helpers import make_model, sign_model

    assert world.signing_key is not None
    folder = make_model(world.root / f"llama-{version}", seed=7, megabytes=48)
    signature = sign_model(folder, world.signing_key)
    with world.client("olivia") as owner:
        owner.push("llama", version, folder, signature.read_bytes())
    grant_id = world.granted("rita", version=version)
    with world.client("rita") as client:
        files = client.grant_files(grant_id)["files"]
    big = max(files, key=lambda f: f["delivered_size"])
    total = big["delivered_size"]
    assert total > 40 << 20
    received = 0
    headers = {"Authorization": f"Bearer {world.people['rita'].token}"}
    url = f"{world.service.url}/v1/grants/{grant_id}/files/{big['index']}"
    try:
        with httpx.stream("GET", url, headers=headers, timeout=60) as response:
            assert response.status_code == 200
            chunks = response.iter_bytes()
            received += len(next(chunks))
            interrupt(grant_id)
            for chunk in chunks:
                received += len(chunk)
    except httpx.HTTPError:
        pass  # the server cut the stream short, as it should
    return received, total


def test_revocation_stops_a_pull_that_is_already_streaming(world: World) -> None:
    def revoke(grant_id: str) -> None:
        with world.client("olivia") as owner:
            owner.revoke(grant_id)

    received, total = _stream_and_interrupt(world, "v-big", revoke)
    # Before the fix the whole first debit slice (64 MiB, here the whole file) was still sent.
    assert received < total, (received, total)


def test_revoking_the_token_stops_a_pull_that_is_already_streaming(world: World) -> None:
    """A stolen token that is revoked must not keep an open download going."""
    from weightvault.custody.tokens import parse_token

    parsed = parse_token(world.people["rita"].token)
    assert parsed is not None

    def revoke_token(_: str) -> None:
        with world.client("admin") as admin:
            admin.revoke_token(parsed[0])

    try:
        received, total = _stream_and_interrupt(world, "v-token", revoke_token)
    finally:  # the world is shared by the module: give rita a working token again
        with world.client("admin") as admin:
            world.people["rita"].token = admin.issue_token("rita", "replacement")["token"]
    assert received < total, (received, total)


def test_disabling_the_principal_stops_a_pull_that_is_already_streaming(world: World) -> None:
    def disable(_: str) -> None:
        with world.client("admin") as admin:
            admin.update_principal("rita", disabled=True)

    try:
        received, total = _stream_and_interrupt(world, "v-disabled", disable)
    finally:  # the world is shared by the module
        with world.client("admin") as admin:
            admin.update_principal("rita", disabled=False)
    assert received < total, (received, total)


def test_a_file_with_a_non_latin1_name_can_be_pulled(world: World) -> None:
    from tests.custody.helpers import make_model, sign_model

    assert world.signing_key is not None
    folder = make_model(world.root / "llama-unicode", seed=3)
    (folder / "模型.json").write_text('{"a": 1}')
    signature = sign_model(folder, world.signing_key)
    with world.client("olivia") as owner:
        owner.push("llama", "v-unicode", folder, signature.read_bytes())
    grant_id = world.granted("rita", version="v-unicode")
    with world.client("rita") as client:
        files = client.grant_files(grant_id)["files"]
    entry = next(f for f in files if f["path"] == "模型.json")
    response = httpx.get(
        f"{world.service.url}/v1/grants/{grant_id}/files/{entry['index']}",
        headers={"Authorization": f"Bearer {world.people['rita'].token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert len(response.content) == entry["delivered_size"]
    assert response.headers["X-Weightvault-Path"] == "%E6%A8%A1%E5%9E%8B.json"


def test_a_chunked_body_past_the_limit_is_refused(world: World) -> None:
    def body() -> Iterator[bytes]:
        yield b'{"model":"'
        for _ in range(3):
            yield b"a" * (1 << 20)
        yield b'"}'

    for token in (None, world.people["rita"].token):
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = httpx.post(
            f"{world.service.url}/v1/requests", content=body(), headers=headers, timeout=30
        )
        assert response.status_code == 413, response.text


def test_a_policy_tightened_while_a_request_is_pending_applies_to_it(world: World) -> None:
    request = _request(world)
    world.approve("alice", request["id"])
    with world.client("olivia") as owner:
        tighter = {**_llama_policy(world, ["alice", "bob", "carol"]), "approvals_required": 3}
        owner.set_policy("llama", tighter)
        try:
            view = world.approve("bob", request["id"])
            assert view["status"] == "pending"
            assert view["approvals_required"] == 3
        finally:
            owner.set_policy("llama", _llama_policy(world, ["alice", "bob", "carol"]))
    assert world.approve("carol", request["id"])["status"] == "active"


def test_an_owner_sees_only_its_own_models_in_the_inventory(world: World) -> None:
    """Owners used to read the whole inventory: every model, its grantees and digests."""
    with world.client("admin") as admin:
        result = admin.create_principal("otto", ["owner"])
    otto = result["token"]
    with world.service.client(otto) as client:
        client.create_model(
            "otto-model",
            {"approvers": ["alice", "bob"], "approvals_required": 2, "signers": []},
        )
        assert [entry["model"] for entry in client.inventory()] == ["otto-model"]
    with world.client("olivia") as olivia:
        names = [entry["model"] for entry in olivia.inventory()]
    assert "llama" in names and "otto-model" not in names
    for who in ("admin", "audrey"):  # admins and auditors still see everything
        with world.client(who) as client:
            names = [entry["model"] for entry in client.inventory()]
        assert {"llama", "otto-model"} <= set(names)
