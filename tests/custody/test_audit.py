"""The audit trail: every request is in the log before its response, secrets are HMACed, the log
fails closed, edits to its database rows are caught offline, and pulls need logged approvals."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.custody.helpers import World, build_world, start_service

from weightvault.cli.app import run
from weightvault.custody.audit import verify_audit
from weightvault.custody.client import VaultHTTPError
from weightvault.errors import VerificationError
from weightvault.tlog.log import LogExport, TransparencyLog


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[World]:
    service = start_service(tmp_path / "data")
    try:
        yield build_world(tmp_path, service)
    finally:
        service.stop()


def _entries(world: World) -> list[dict[str, Any]]:
    with world.client("audrey") as client:
        export = client.audit_export()
    return [json.loads(e) for e in LogExport.from_json(export).entries]


def test_every_request_allowed_or_denied_is_logged_with_the_token_hmaced(world: World) -> None:
    before = len(_entries(world))
    token = world.people["rita"].token
    denied = httpx.get(
        world.service.url + "/v1/inventory", headers={"Authorization": f"Bearer {token}"}
    )
    assert denied.status_code == 403
    unknown = httpx.get(world.service.url + "/v1/no-such-route")
    assert unknown.status_code == 404
    with world.client("rita") as client:
        client.whoami()
    with world.client("audrey") as client:
        export = client.audit_export()
    entries = [json.loads(e) for e in LogExport.from_json(export).entries]
    new = entries[before:]
    by_action = {(e["action"], e["outcome"]) for e in new}
    assert ("inventory", "denied") in by_action
    assert ("whoami", "allowed") in by_action
    assert any(e["path"] == "/v1/no-such-route" and e["outcome"] == "denied" for e in new)
    denied_entry = next(e for e in new if e["action"] == "inventory" and e["principal"] == "rita")
    assert denied_entry["token"].startswith("hmac-sha256:")
    assert token.encode() not in export
    assert token.split("_", 2)[2].encode() not in export  # the secret (may itself hold "_")


def test_audit_verify_accepts_an_honest_export(world: World, tmp_path: Path, capsys: Any) -> None:
    export_path = tmp_path / "audit.json"
    key_path = tmp_path / "log.pub"
    code = run(
        [
            "vault",
            "audit",
            "-o",
            str(export_path),
            "--key-output",
            str(key_path),
            "--url",
            world.service.url,
            "--token",
            world.people["audrey"].token,
        ]
    )
    assert code == 0
    code = run(["audit", "verify", str(export_path), "--log-key", str(key_path), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    doc = json.loads(out[out.index("{") :])
    assert doc["size"] > 10
    assert doc["counts"]["version.upload"] >= 2  # "started" and "allowed"


def test_approvals_and_uploads_are_in_the_log_with_their_evidence(world: World) -> None:
    grant_id = world.granted("rita")
    entries = _entries(world)
    approvals = [
        e
        for e in entries
        if e["action"] == "request.approve" and e["detail"].get("request_id") == grant_id
    ]
    assert {e["principal"] for e in approvals} == {"alice", "bob"}
    assert all("envelope" in e["detail"] for e in approvals)
    upload = next(
        e for e in entries if e["action"] == "version.upload" and e["outcome"] == "allowed"
    )
    assert upload["detail"]["signer"] == "key:release-key"
    assert {f["path"] for f in upload["detail"]["files"]} == {"config.json", "model.safetensors"}


def test_a_direct_edit_of_the_log_rows_is_detected_offline(fresh: World, tmp_path: Path) -> None:
    with fresh.client("audrey") as client:
        client.audit_export()  # signs a checkpoint covering everything so far
        log_key = client.audit_key()["log_key"]
    fresh.service.stop()
    database = fresh.service.data_dir / "audit.tlog"
    with sqlite3.connect(database) as conn:
        (data,) = conn.execute("SELECT data FROM tlog_entries WHERE idx = 3").fetchone()
        doc = json.loads(data)
        doc["principal"] = "nobody"
        conn.execute(
            "UPDATE tlog_entries SET data = ? WHERE idx = 3",
            (json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(),),
        )
    log = TransparencyLog.open(str(database))
    export = log.export().to_json()
    log.close()
    with pytest.raises(VerificationError, match="entry 3"):
        verify_audit(export, log_key)
    export_path = tmp_path / "tampered.json"
    export_path.write_bytes(export)
    assert run(["audit", "verify", str(export_path), "--log-key", log_key]) == 1
    # An export made by the restarted service carries the edited row too, and fails the same way.
    service = start_service(fresh.service.data_dir, init_admin=False, admin_token="")
    try:
        with service.client(fresh.people["audrey"].token) as client:
            served = client.audit_export()
    finally:
        service.stop()
    with pytest.raises(VerificationError, match="entry 3"):
        verify_audit(served, log_key)


def test_the_service_fails_closed_when_the_log_cannot_be_written(fresh: World) -> None:
    database = fresh.service.data_dir / "audit.tlog"
    with sqlite3.connect(database) as conn:
        conn.execute("ALTER TABLE tlog_entries RENAME TO tlog_entries_away")
    try:
        with fresh.service.admin as admin, pytest.raises(VaultHTTPError) as excinfo:
            admin.create_principal("eve", ["reader"])
        assert excinfo.value.status == 503
        with fresh.client("rita") as client, pytest.raises(VaultHTTPError) as excinfo:
            client.whoami()
        assert excinfo.value.status == 503
        response = httpx.get(fresh.service.url + "/v1/healthz")
        assert response.status_code == 503
    finally:
        with sqlite3.connect(database) as conn:
            conn.execute("ALTER TABLE tlog_entries_away RENAME TO tlog_entries")
    with fresh.service.admin as admin:
        admin.create_principal("eve", ["reader"])  # works again, and "eve" was not half-made


def test_an_approval_forged_in_the_database_does_not_release_weights(
    fresh: World, tmp_path: Path
) -> None:
    with fresh.client("rita") as client:
        request = client.request("llama", "v1", "evaluation run for safety", 3600, 1 << 30)
    fresh.approve("alice", request["id"])
    # An insider with database access adds a second approval and activates the grant.
    database = fresh.service.data_dir / "custody.db"
    with sqlite3.connect(database) as conn:
        row = conn.execute(
            "SELECT envelope, expires_at, created_at, log_index, log_entry FROM approvals "
            "WHERE request_id = ?",
            (request["id"],),
        ).fetchone()
        key_id = conn.execute(
            "SELECT approval_key_id FROM principals WHERE name = 'bob'"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO approvals (request_id, approver, key_id, decision, envelope, expires_at, "
            "created_at, log_index, log_entry) VALUES (?, 'bob', ?, 'approve', ?, ?, ?, ?, ?)",
            (request["id"], key_id, row[0], row[1], row[2], row[3] + 1, b"{forged}"),
        )
        conn.execute(
            "UPDATE grant_requests SET status = 'active', activated_at = created_at, "
            "grant_expires_at = '2999-01-01 00:00:00' WHERE id = ?",
            (request["id"],),
        )
    with fresh.client("rita") as client, pytest.raises(VaultHTTPError) as excinfo:
        client.pull(request["id"], tmp_path / "out", fresh.people["rita"].identity)
    assert excinfo.value.status == 403
    assert "not in the signed log" in str(excinfo.value)


def test_tokens_are_stored_only_as_hashes_and_logged_only_as_hmacs(world: World) -> None:
    with world.client("rita") as client:
        client.whoami()
    data = b"".join(
        path.read_bytes()
        for path in world.service.data_dir.iterdir()
        if path.name.startswith(("custody.db", "audit.tlog"))
    )
    assert data
    for person in world.people.values():
        secret = person.token.split("_", 2)[2].encode()  # the secret may itself contain "_"
        assert len(secret) == 43
        assert secret not in data
        assert person.token.encode() not in data
