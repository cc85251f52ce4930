"""kill -9 of the service during an upload and during a pull: no half-registered version, no lost
audit entry, and the interrupted pull resumes where it stopped."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from tests.custody.helpers import World, build_world, make_model, sign_model, start_service

from weightvault.custody.audit import verify_audit
from weightvault.custody.client import ClientConfig, VaultClient
from weightvault.tlog.log import LogExport


def _audit(world: World, url: str) -> tuple[list[dict[str, object]], bytes, str]:
    with VaultClient(ClientConfig(url, world.people["audrey"].token)) as client:
        export = client.audit_export()
        key = client.audit_key()["log_key"]
    return [json.loads(e) for e in LogExport.from_json(export).entries], export, key


def test_kill_during_upload_leaves_no_half_registered_version(tmp_path: Path) -> None:
    service = start_service(tmp_path / "data")
    world = build_world(tmp_path, service)
    assert world.signing_key is not None
    model = make_model(tmp_path / "big", seed=9, megabytes=24)
    signature = sign_model(model, world.signing_key).read_bytes()
    files = sorted(p for p in model.iterdir())
    manifest = {
        "signature": base64.b64encode(signature).decode(),
        "files": [{"path": p.name, "size": p.stat().st_size} for p in files],
        "single_file": False,
    }
    halfway = threading.Event()

    def body() -> Iterator[bytes]:
        yield json.dumps(manifest).encode() + b"\n"
        sent = 0
        for path in files:
            data = path.read_bytes()
            for start in range(0, len(data), 1 << 20):
                yield data[start : start + (1 << 20)]
                sent += 1 << 20
                if sent >= 8 << 20:
                    halfway.set()
                    time.sleep(30)

    errors: list[BaseException] = []

    def upload() -> None:
        try:
            httpx.post(
                f"{service.url}/v1/models/llama/versions/v-crash/upload",
                content=body(),
                headers={"Authorization": f"Bearer {world.people['olivia'].token}"},
                timeout=60,
            )
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=upload, daemon=True)
    thread.start()
    assert halfway.wait(30)
    time.sleep(0.5)
    service.kill()
    staging = service.data_dir / "staging"
    assert any(staging.rglob("*"))  # the killed upload left staged data behind
    restarted = start_service(service.data_dir, init_admin=False, admin_token="")
    try:
        assert not any(staging.rglob("*"))  # removed at startup: no plaintext left
        entries, export, key = _audit(world, restarted.url)
        verify_audit(export, key)
        started = [
            e
            for e in entries
            if e["action"] == "version.upload"
            and isinstance(e["detail"], dict)
            and e["detail"].get("version") == "v-crash"
        ]
        assert [e["outcome"] for e in started] == ["started"]
        with restarted.client(world.people["audrey"].token) as client:
            llama = next(m for m in client.inventory() if m["model"] == "llama")
        assert {v["version"] for v in llama["versions"]} == {"v1"}
        with restarted.client(world.people["olivia"].token) as client:
            result = client.push("llama", "v-crash", model, signature)
        assert result["version"] == "v-crash"
    finally:
        restarted.stop()


def test_kill_during_pull_loses_no_audit_entry_and_the_pull_resumes(tmp_path: Path) -> None:
    service = start_service(tmp_path / "data")
    world = build_world(tmp_path, service)
    assert world.signing_key is not None
    model = make_model(tmp_path / "big", seed=10, megabytes=24)
    signature = sign_model(model, world.signing_key).read_bytes()
    with world.client("olivia") as client:
        client.push("llama", "v-big", model, signature)
    grant_id = world.granted("rita", version="v-big")
    with world.client("rita") as client:
        listing = client.grant_files(grant_id)
    big = next(f for f in listing["files"] if f["path"] == "model.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    part = out / "model.safetensors.wvenc.part"
    got = 0
    with (
        httpx.stream(
            "GET",
            f"{service.url}/v1/grants/{grant_id}/files/{big['index']}",
            headers={"Authorization": f"Bearer {world.people['rita'].token}"},
            timeout=60,
        ) as response,
        part.open("wb") as handle,
    ):
        assert response.status_code == 200
        try:
            for piece in response.iter_raw(1 << 16):
                handle.write(piece)
                got += len(piece)
                if got >= 1 << 20:
                    service.kill()
        except httpx.HTTPError:
            pass
    resumed_from = part.stat().st_size
    assert 0 < resumed_from < big["delivered_size"]
    restarted = start_service(service.data_dir, init_admin=False, admin_token="")
    try:
        entries, export, key = _audit(world, restarted.url)
        verify_audit(export, key)
        pulls = [
            e
            for e in entries
            if e["action"] == "pull"
            and isinstance(e["detail"], dict)
            and e["detail"].get("grant_id") == grant_id
        ]
        assert pulls and pulls[0]["outcome"] == "allowed"
        with restarted.client(world.people["rita"].token) as client:
            grants = {g["id"]: g for g in client.list_requests("active")}
            assert grants[grant_id]["bytes_used"] >= big["delivered_size"]
            client.pull(grant_id, out, world.people["rita"].identity)
        assert (out / "model.safetensors").read_bytes() == (
            model / "model.safetensors"
        ).read_bytes()
        entries, _, _ = _audit(world, restarted.url)
        ranges = [
            e["detail"]["range"]
            for e in entries
            if e["action"] == "pull"
            and isinstance(e["detail"], dict)
            and e["detail"].get("grant_id") == grant_id
            and e["detail"].get("file") == "model.safetensors"
        ]
        assert ranges[-1] == [resumed_from, big["delivered_size"]]
    finally:
        restarted.stop()
