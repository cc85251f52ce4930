"""Attacks that must fail: wrong principal or role, bad tokens, self-approval, double approval,
replayed and forged approvals, expired and revoked grants, pulls past the budget, malformed and
oversized values, uploads with a bad signature or a dangerous payload."""

from __future__ import annotations

import base64
import datetime as dt
import json
import pickle
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from tests.custody.helpers import World, make_model, public_pem, sign_model

from weightvault.custody.approvals import (
    ApprovalSigner,
    ApprovalStatement,
    RequestTerms,
    sign_statement,
)
from weightvault.custody.client import VaultHTTPError


def _status(excinfo: pytest.ExceptionInfo[VaultHTTPError]) -> int:
    return excinfo.value.status


def _raw(world: World, who: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    token = world.people[who].token if who else None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kwargs.pop("headers", {}))
    return httpx.request(method, world.service.url + path, headers=headers, timeout=30, **kwargs)


def _request(world: World, who: str = "rita", budget: int = 1 << 30, **kw: Any) -> dict[str, Any]:
    with world.client(who) as client:
        return client.request(
            kw.get("model", "llama"),
            kw.get("version", "v1"),
            "evaluation run for safety",
            kw.get("duration", 3600),
            budget,
        )


# -- authentication and roles --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("who", "method", "path", "body"),
    [
        ("rita", "POST", "/v1/principals", {"name": "mallory", "roles": ["admin"]}),
        ("alice", "POST", "/v1/principals", {"name": "mallory", "roles": ["admin"]}),
        ("olivia", "PATCH", "/v1/principals/rita", {"roles": ["admin"]}),
        ("rita", "GET", "/v1/inventory", None),
        ("rita", "GET", "/v1/audit/export", None),
        ("alice", "POST", "/v1/requests", None),
        ("audrey", "POST", "/v1/models", {"name": "x", "policy": {"approvers": []}}),
        ("rita", "GET", "/v1/alerts", None),
    ],
)
def test_wrong_role_is_refused(
    world: World, who: str, method: str, path: str, body: dict[str, Any] | None
) -> None:
    if path == "/v1/requests":
        body = {
            "model": "llama",
            "version": "v1",
            "justification": "i want the weights now",
            "duration_s": 60,
            "byte_budget": 10,
        }
    response = _raw(world, who, method, path, json=body)
    assert response.status_code == 403, response.text
    assert "lacks the role" in response.json()["error"]


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer x",
        "Bearer wvt_0000000000000000_" + "A" * 43,
        "Basic YWRtaW46YWRtaW4=",
        "Bearer " + "x" * 150,
    ],
)
def test_missing_or_forged_token_is_refused(world: World, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    response = httpx.get(world.service.url + "/v1/whoami", headers=headers, timeout=10)
    assert response.status_code == 401


def test_token_with_a_wrong_secret_is_refused(world: World) -> None:
    token = world.people["rita"].token
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    response = httpx.get(
        world.service.url + "/v1/whoami", headers={"Authorization": f"Bearer {flipped}"}
    )
    assert response.status_code == 401


def test_revoked_token_stops_working_at_once(world: World) -> None:
    with world.service.admin as admin:
        issued = admin.issue_token("ravi", "laptop")
    with world.service.client(issued["token"]) as client:
        assert client.whoami()["name"] == "ravi"
        client.revoke_token(issued["token_id"])
        with pytest.raises(VaultHTTPError) as excinfo:
            client.whoami()
    assert _status(excinfo) == 401


def test_another_principals_grant_cannot_be_pulled(world: World) -> None:
    grant_id = world.granted("rita")
    with world.client("ravi") as client, pytest.raises(VaultHTTPError) as excinfo:
        client.grant_files(grant_id)
    assert _status(excinfo) == 404


# -- approvals -----------------------------------------------------------------------------------


def test_self_approval_is_refused(world: World) -> None:
    request = _request(world, "carol")
    with pytest.raises(VaultHTTPError) as excinfo:
        world.approve("carol", request["id"])
    assert _status(excinfo) == 403
    assert "self-approval" in str(excinfo.value)


def test_one_person_cannot_approve_twice_with_two_tokens(world: World) -> None:
    request = _request(world)
    world.approve("alice", request["id"])
    with world.service.admin as admin:
        second = admin.issue_token("alice", "second device")["token"]
    with world.service.client(second) as client, pytest.raises(VaultHTTPError) as excinfo:
        client.decide(request["id"], world.people["alice"].signer, approver="alice")
    assert _status(excinfo) == 409
    with world.client("rita") as client:
        assert client.get_request(request["id"])["status"] == "pending"


def test_one_key_cannot_be_registered_for_two_approvers(world: World) -> None:
    alice_key = world.people["alice"].approval_key
    with world.service.admin as admin, pytest.raises(VaultHTTPError) as excinfo:
        admin.create_principal("alice2", ["approver"], approval_key_pem=public_pem(alice_key))
    assert _status(excinfo) == 409


def test_an_approval_replayed_for_another_request_is_refused(world: World) -> None:
    first = _request(world)
    second = _request(world)
    terms = RequestTerms(
        first["id"], "llama", "v1", "rita", first["justification"], 3600, first["byte_budget"]
    )
    statement = ApprovalStatement.for_request(
        terms,
        approver="alice",
        decision="approve",
        issued_at=dt.datetime.now(dt.UTC),
        valid_for=dt.timedelta(hours=1),
    )
    envelope = sign_statement(statement, world.people["alice"].signer)
    with world.client("alice") as client:
        client.submit_envelope(first["id"], envelope)
        with pytest.raises(VaultHTTPError) as excinfo:
            client.submit_envelope(second["id"], envelope)
    assert _status(excinfo) == 403
    assert "another request" in str(excinfo.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("model", "mistral"),
        ("version", "v2"),
        ("grantee", "ravi"),
        ("byte_budget", 1 << 40),
        ("duration_s", 86400),
        ("justification", "a different reason entirely"),
    ],
)
def test_an_approval_for_other_terms_is_refused(world: World, field: str, value: Any) -> None:
    request = _request(world)
    doc = {
        "request_id": request["id"],
        "model": "llama",
        "version": "v1",
        "grantee": "rita",
        "justification": request["justification"],
        "duration_s": 3600,
        "byte_budget": request["byte_budget"],
        field: value,
    }
    statement = ApprovalStatement.for_request(
        RequestTerms(**doc),
        approver="alice",
        decision="approve",
        issued_at=dt.datetime.now(dt.UTC),
        valid_for=dt.timedelta(hours=1),
    )
    envelope = sign_statement(statement, world.people["alice"].signer)
    with world.client("alice") as client, pytest.raises(VaultHTTPError) as excinfo:
        client.submit_envelope(request["id"], envelope)
    assert _status(excinfo) == 403


def _envelope_for(
    world: World, request: dict[str, Any], signer: ApprovalSigner, **kw: Any
) -> bytes:
    terms = RequestTerms(
        request["id"], "llama", "v1", "rita", request["justification"], 3600, request["byte_budget"]
    )
    statement = ApprovalStatement.for_request(
        terms,
        approver=kw.get("approver", "alice"),
        decision="approve",
        issued_at=kw.get("issued_at", dt.datetime.now(dt.UTC)),
        valid_for=kw.get("valid_for", dt.timedelta(hours=1)),
    )
    return sign_statement(statement, signer)


def test_forged_approval_signatures_are_refused(world: World) -> None:
    request = _request(world)
    forger = ApprovalSigner(private_key=ed25519.Ed25519PrivateKey.generate())
    genuine = _envelope_for(world, request, world.people["alice"].signer)
    doc = json.loads(genuine)
    # (a) a key the server does not know, (b) bob's key submitted as alice, (c) a bit flip in the
    # signature, (d) an edited payload with the original signature, (e) a statement naming bob.
    flipped_sig = bytearray(base64.b64decode(doc["signatures"][0]["sig"]))
    flipped_sig[5] ^= 1
    edited_payload = json.loads(base64.b64decode(doc["payload"]))
    edited_payload["byte_budget"] = 1 << 40
    variants = [
        _envelope_for(world, request, forger),
        _envelope_for(world, request, world.people["bob"].signer),
        json.dumps(
            {
                **doc,
                "signatures": [
                    {**doc["signatures"][0], "sig": base64.b64encode(flipped_sig).decode()}
                ],
            }
        ).encode(),
        json.dumps(
            {
                **doc,
                "payload": base64.b64encode(
                    json.dumps(edited_payload, sort_keys=True, separators=(",", ":")).encode()
                ).decode(),
            }
        ).encode(),
        _envelope_for(world, request, world.people["alice"].signer, approver="bob"),
        b"{not json",
    ]
    with world.client("alice") as client:
        for envelope in variants:
            with pytest.raises(VaultHTTPError) as excinfo:
                client.submit_envelope(request["id"], envelope)
            assert _status(excinfo) in (400, 403), envelope
        assert client.get_request(request["id"])["approvals"] == []


def test_expired_or_overlong_approvals_are_refused(world: World) -> None:
    request = _request(world)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    expired = _envelope_for(world, request, world.people["alice"].signer, issued_at=past)
    overlong = _envelope_for(
        world, request, world.people["alice"].signer, valid_for=dt.timedelta(days=30)
    )
    with world.client("alice") as client:
        for envelope in (expired, overlong):
            with pytest.raises(VaultHTTPError) as excinfo:
                client.submit_envelope(request["id"], envelope)
            assert _status(excinfo) == 403


def test_a_denial_closes_the_request(world: World) -> None:
    request = _request(world)
    world.approve("alice", request["id"])
    assert world.approve("bob", request["id"], decision="deny")["status"] == "denied"
    with pytest.raises(VaultHTTPError) as excinfo:
        world.approve("carol", request["id"])
    assert _status(excinfo) == 409


def test_one_approval_is_not_enough(world: World) -> None:
    request = _request(world)
    world.approve("alice", request["id"])
    with world.client("rita") as client, pytest.raises(VaultHTTPError) as excinfo:
        client.grant_files(request["id"])
    assert _status(excinfo) == 403


# -- grants --------------------------------------------------------------------------------------


def test_revoked_grant_cannot_be_pulled(world: World, tmp_path: Path) -> None:
    grant_id = world.granted("rita")
    with world.client("olivia") as owner:
        owner.revoke(grant_id)
    with world.client("rita") as client, pytest.raises(VaultHTTPError) as excinfo:
        client.pull(grant_id, tmp_path, world.people["rita"].identity)
    assert _status(excinfo) == 403


def test_expired_grant_cannot_be_pulled(world: World, tmp_path: Path) -> None:
    request = _request(world, duration=1)
    world.approve("alice", request["id"])
    world.approve("bob", request["id"])
    time.sleep(1.2)
    with world.client("rita") as client, pytest.raises(VaultHTTPError) as excinfo:
        client.pull(request["id"], tmp_path, world.people["rita"].identity)
    assert _status(excinfo) == 403
    assert "expired" in str(excinfo.value)


def test_pull_past_the_byte_budget_is_refused(world: World, tmp_path: Path) -> None:
    grant_id = world.granted("rita", budget=1000)
    path = f"/v1/grants/{grant_id}/files/1"
    first = _raw(world, "rita", "GET", path, headers={"Range": "bytes=0-599"})
    assert first.status_code == 206 and len(first.content) == 600
    second = _raw(world, "rita", "GET", path, headers={"Range": "bytes=600-999"})
    assert second.status_code == 206 and len(second.content) == 400
    third = _raw(world, "rita", "GET", path, headers={"Range": "bytes=1000-1000"})
    assert third.status_code == 403
    assert "grant byte budget is exhausted" in third.json()["error"]
    whole = _raw(world, "rita", "GET", path)
    assert whole.status_code == 403


# -- malformed and oversized values --------------------------------------------------------------

_BAD_NAMES = ["../etc", "a/b", "..", ".hidden", "x" * 300, "a\x00b", "", "é", "a b", "%2e%2e"]


@pytest.mark.parametrize("bad", _BAD_NAMES)
def test_bad_names_in_every_field_are_refused(world: World, bad: str) -> None:
    cases = [
        ("admin", "POST", "/v1/principals", {"name": bad, "roles": ["reader"]}),
        ("olivia", "POST", "/v1/models", {"name": bad, "policy": {"approvers": []}}),
        (
            "rita",
            "POST",
            "/v1/requests",
            {
                "model": bad,
                "version": "v1",
                "justification": "evaluation run",
                "duration_s": 60,
                "byte_budget": 1,
            },
        ),
        (
            "rita",
            "POST",
            "/v1/requests",
            {
                "model": "llama",
                "version": bad,
                "justification": "evaluation run",
                "duration_s": 60,
                "byte_budget": 1,
            },
        ),
    ]
    for who, method, path, body in cases:
        response = _raw(world, who, method, path, json=body)
        assert response.status_code in (400, 422), (path, bad, response.text)
    quoted = urllib.parse.quote(bad, safe="") or "%20"
    for path in (
        f"/v1/requests/{quoted}",
        f"/v1/grants/{quoted}/files",
        f"/v1/principals/{quoted}/tokens",
    ):
        method = "POST" if path.endswith("tokens") else "GET"
        response = _raw(world, "admin", method, path, json={"label": "x"})
        assert response.status_code in (400, 403, 404, 405, 422), (path, response.text)
        assert response.status_code != 500


@pytest.mark.parametrize(
    "body",
    [
        {
            "model": "llama",
            "version": "v1",
            "justification": "x" * 5000,
            "duration_s": 60,
            "byte_budget": 1,
        },
        {
            "model": "llama",
            "version": "v1",
            "justification": "short",
            "duration_s": 60,
            "byte_budget": 1,
        },
        {
            "model": "llama",
            "version": "v1",
            "justification": "long enough here",
            "duration_s": 10**12,
            "byte_budget": 1,
        },
        {
            "model": "llama",
            "version": "v1",
            "justification": "long enough here",
            "duration_s": 60,
            "byte_budget": -5,
        },
        {
            "model": "llama",
            "version": "v1",
            "justification": "long enough here",
            "duration_s": True,
            "byte_budget": 1,
        },
        {
            "model": "llama",
            "version": "v1",
            "justification": "long enough here",
            "duration_s": 60,
            "byte_budget": 1,
            "extra": 1,
        },
    ],
)
def test_oversized_or_wrongly_typed_request_fields_are_refused(
    world: World, body: dict[str, Any]
) -> None:
    response = _raw(world, "rita", "POST", "/v1/requests", json=body)
    assert response.status_code in (400, 422), response.text


def test_a_huge_body_is_refused_before_parsing(world: World) -> None:
    response = _raw(
        world,
        "rita",
        "POST",
        "/v1/requests",
        content=b"{" + b" " * (2 << 20) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    "header", ["bytes=abc", "bytes=5-2", "bytes=0-1,4-5", "items=0-1", "bytes=99999999999-"]
)
def test_bad_range_headers_are_refused(world: World, header: str) -> None:
    grant_id = world.granted("rita")
    response = _raw(
        world, "rita", "GET", f"/v1/grants/{grant_id}/files/0", headers={"Range": header}
    )
    assert response.status_code in (400, 416), response.text


@pytest.mark.parametrize(
    "path", ["../evil", "/abs/path", "a//b", "a/./b", "a/../../b", "dir\\file", "x\x01y", "."]
)
def test_upload_file_paths_that_could_traverse_are_refused(world: World, path: str) -> None:
    manifest = {"signature": "", "files": [{"path": path, "size": 1}], "single_file": False}
    body = json.dumps(manifest).encode() + b"\nA"
    response = _raw(world, "olivia", "POST", "/v1/models/llama/versions/vbad/upload", content=body)
    assert response.status_code == 400, response.text


# -- uploads -------------------------------------------------------------------------------------


def _versions(world: World) -> set[str]:
    with world.client("audrey") as client:
        entry = next(e for e in client.inventory() if e["model"] == "llama")
    return {v["version"] for v in entry["versions"]}


def test_upload_signed_by_a_key_the_policy_does_not_allow_is_refused(
    world: World, tmp_path: Path
) -> None:
    model = make_model(tmp_path / "m", seed=3)
    signature = sign_model(model, ec.generate_private_key(ec.SECP256R1()))
    with world.client("olivia") as client, pytest.raises(VaultHTTPError) as excinfo:
        client.push("llama", "v-wrong-key", model, signature.read_bytes())
    assert _status(excinfo) == 403
    assert "v-wrong-key" not in _versions(world)


def test_upload_of_files_changed_after_signing_is_refused(world: World, tmp_path: Path) -> None:
    assert world.signing_key is not None
    model = make_model(tmp_path / "m", seed=4)
    signature = sign_model(model, world.signing_key)
    (model / "config.json").write_text('{"hidden": 65}')
    with world.client("olivia") as client, pytest.raises(VaultHTTPError) as excinfo:
        client.push("llama", "v-changed", model, signature.read_bytes())
    assert _status(excinfo) == 403
    assert "v-changed" not in _versions(world)


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.system, ("touch /tmp/weightvault-custody-pwned",))


def test_upload_with_a_dangerous_pickle_is_refused(world: World, tmp_path: Path) -> None:
    assert world.signing_key is not None
    model = make_model(tmp_path / "m", seed=5)
    (model / "extra.bin").write_bytes(pickle.dumps({"w": _Payload()}))
    signature = sign_model(model, world.signing_key)
    with world.client("olivia") as client, pytest.raises(VaultHTTPError) as excinfo:
        client.push("llama", "v-pickle", model, signature.read_bytes())
    assert _status(excinfo) == 403
    assert "dangerous" in str(excinfo.value)
    assert "v-pickle" not in _versions(world)
    assert not Path("/tmp/weightvault-custody-pwned").exists()


def test_only_the_owner_may_upload(world: World, tmp_path: Path) -> None:
    assert world.signing_key is not None
    model = make_model(tmp_path / "m", seed=6)
    signature = sign_model(model, world.signing_key)
    with world.service.admin as client, pytest.raises(VaultHTTPError) as excinfo:
        client.push("llama", "v-admin", model, signature.read_bytes())
    assert _status(excinfo) == 403


def test_a_version_cannot_be_replaced(world: World, tmp_path: Path) -> None:
    assert world.signing_key is not None
    model = make_model(tmp_path / "m", seed=7)
    signature = sign_model(model, world.signing_key)
    with world.client("olivia") as client, pytest.raises(VaultHTTPError) as excinfo:
        client.push("llama", "v1", model, signature.read_bytes())
    assert _status(excinfo) == 409


def test_an_approval_that_expired_before_the_second_arrives_does_not_count(world: World) -> None:
    request = _request(world)
    short = _envelope_for(
        world, request, world.people["alice"].signer, valid_for=dt.timedelta(seconds=1)
    )
    with world.client("alice") as client:
        client.submit_envelope(request["id"], short)
    time.sleep(1.2)
    assert world.approve("bob", request["id"])["status"] == "pending"
    assert world.approve("carol", request["id"])["status"] == "active"


@pytest.mark.parametrize(
    "policy",
    [
        {"approvers": ["../alice"]},
        {"approvers": ["alice", "alice"], "approvals_required": 1},
        {"approvers": ["alice"], "approvals_required": 0},
        {"approvers": ["alice"], "approvals_required": 2},
        {"approvers": ["alice"], "approvals_required": True},
        {"approvers": ["alice"], "approvals_required": 1, "signers": [{"public_key_pem": "x"}]},
        {"approvers": ["alice"], "approvals_required": 1, "max_grant_bytes": 1 << 60},
        {"approvers": ["alice"], "approvals_required": 1, "unknown": 1},
        {"approvers": ["rita"], "approvals_required": 1},
        {"approvers": ["x" * 100]},
        {"approvers": "alice"},
    ],
)
def test_bad_policies_are_refused(world: World, policy: dict[str, Any]) -> None:
    response = _raw(world, "olivia", "PUT", "/v1/models/llama/policy", json={"policy": policy})
    assert response.status_code in (400, 403, 422), response.text


def test_any_signer_the_policy_lists_is_accepted_and_named(world: World, tmp_path: Path) -> None:
    assert world.signing_key is not None
    other = ec.generate_private_key(ec.SECP384R1())
    policy = {
        "approvers": ["alice", "bob", "carol"],
        "approvals_required": 2,
        "signers": [
            {"name": "release-key", "public_key_pem": public_pem(world.signing_key)},
            {"name": "second-key", "public_key_pem": public_pem(other)},
        ],
        "max_grant_bytes": 1 << 40,
        "approval_validity_s": 7200,
    }
    with world.client("olivia") as client:
        client.set_policy("llama", policy)
        model = make_model(tmp_path / "m", seed=12)
        signature = sign_model(model, other)
        result = client.push("llama", "v-second", model, signature.read_bytes())
    assert result["signer"] == "key:second-key"


@pytest.mark.parametrize(
    ("manifest", "tail", "message"),
    [
        ({"signature": "", "files": []}, b"", "files"),
        ({"signature": "", "files": [{"path": "a", "size": 1}] * 10_001}, b"", "files"),
        ({"signature": "", "files": [{"path": "a", "size": -1}]}, b"", "size"),
        ({"signature": "", "files": [{"path": "a", "size": True}]}, b"", "size"),
        (
            {"signature": "", "files": [{"path": "a", "size": 1}, {"path": "a", "size": 1}]},
            b"",
            "twice",
        ),
        (
            {"signature": "", "files": [{"path": "a", "size": 1}, {"path": "a/b", "size": 1}]},
            b"xy",
            "collides",
        ),
        ({"signature": "!!", "files": [{"path": "a", "size": 1}]}, b"x", "base64"),
        ({"signature": "A" * (2 << 20), "files": [{"path": "a", "size": 1}]}, b"x", "signature"),
        ({"signature": "", "files": [{"path": "a", "size": 5}]}, b"ab", "ended"),
        ({"signature": "", "files": [{"path": "a", "size": 1}]}, b"abc", "after the last file"),
        ({"signature": "", "files": [{"path": "a", "size": 1}], "x": 1}, b"a", "expected"),
        ({"signature": "", "files": [{"path": "a", "size": 1 << 50}]}, b"a", "limit"),
    ],
)
def test_malformed_upload_bodies_are_refused(
    world: World, manifest: dict[str, Any], tail: bytes, message: str
) -> None:
    body = json.dumps(manifest).encode() + b"\n" + tail
    response = _raw(world, "olivia", "POST", "/v1/models/llama/versions/v-bad/upload", content=body)
    assert response.status_code in (400, 403), response.text
    assert message in response.json()["error"], response.text
    assert "v-bad" not in _versions(world)


def test_an_upload_without_a_manifest_line_is_refused(world: World) -> None:
    response = _raw(
        world, "olivia", "POST", "/v1/models/llama/versions/v-bad/upload", content=b"x" * (5 << 20)
    )
    assert response.status_code == 400
    assert "first line" in response.json()["error"]
