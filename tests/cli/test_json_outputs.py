"""``--json`` on every command that prints a result, and ``convert`` naming what it left out.

Each JSON document is parsed and checked against the files the command wrote or read, so a field
that says the wrong thing fails, not only a missing ``--json``.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from weightvault.cli.app import run


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> Any:
    capsys.readouterr()
    assert run([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_transparency_log_and_witness_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, db = tmp_path / "log.key", str(tmp_path / "audit.db")
    doc = _json(capsys, ["log", "keygen", "--name", "example.com/log", "--out", str(key)])
    assert doc["public_key_file"] == f"{key}.pub"
    vkey = doc["vkey"]
    assert _json(capsys, ["log", "vkey", "--key", str(key)]) == {"vkey": vkey}
    assert _json(capsys, ["log", "init", db, "--origin", "example.com/log"]) == {
        "log": db,
        "origin": "example.com/log",
        "size": 0,
    }
    assert run(["log", "append", db, "--text", "a", "--text", "b"]) == 0
    checkpoint = tmp_path / "cp"
    doc = _json(capsys, ["log", "checkpoint", db, "--key", str(key), "--out", str(checkpoint)])
    assert (doc["origin"], doc["size"], doc["file"]) == ("example.com/log", 2, str(checkpoint))
    assert doc["text"] == checkpoint.read_text()
    assert len(base64.b64decode(doc["root"])) == 32
    printed = _json(capsys, ["log", "checkpoint", db, "--key", str(key)])
    assert printed["file"] is None and printed["text"].startswith("example.com/log\n2\n")
    proof = _json(capsys, ["log", "prove", db, "--index", "1"])
    assert (proof["kind"], proof["index"], proof["size"]) == ("inclusion", 1, 2)
    assert proof["text"].startswith("c2sp.org/tlog-proof@v1\n")
    prove = ["log", "prove", db, "--from-size", "1", "--out", str(tmp_path / "c")]
    consistency = _json(capsys, prove)
    assert (consistency["from_size"], consistency["to_size"]) == (1, 2)
    assert (tmp_path / "c").read_text() == consistency["text"]
    export = tmp_path / "export.json"
    doc = _json(capsys, ["log", "export", db, "--out", str(export)])
    assert doc == {"file": str(export), "origin": "example.com/log", "entries": 2}
    doc = _json(capsys, ["log", "import", str(export), str(tmp_path / "copy.db"), "--key", vkey])
    assert doc == {"log": str(tmp_path / "copy.db"), "origin": "example.com/log", "entries": 2}

    witness = tmp_path / "w.key"
    wvkey = _json(capsys, ["witness", "keygen", "--name", "w.example.com/w", "--out", f"{witness}"])
    cosigned = _json(
        capsys,
        ["witness", "cosign", str(checkpoint), "--key", str(witness), "--log-key", vkey,
         "--state", str(tmp_path / "state"), "--out", str(tmp_path / "cosigned")],
    )
    assert cosigned["size"] == 2 and cosigned["text"] == (tmp_path / "cosigned").read_text()
    verified = _json(
        capsys,
        ["witness", "verify", str(tmp_path / "cosigned"), "--log-key", vkey,
         "--witness-key", wvkey["vkey"]],
    )
    assert verified["ok"] and verified["witnesses"] == ["w.example.com/w"]
    stored = _json(
        capsys, ["log", "add-cosignatures", db, str(tmp_path / "cosigned"), "--key", vkey]
    )
    assert stored["signatures"] == 2 and stored["size"] == 2


def test_keys_and_break_glass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = _json(capsys, ["x25519-keygen", "-o", str(tmp_path / "id")])
    assert doc["recipient"].startswith("wvx25519:")
    assert doc["identity_file"] == str(tmp_path / "id") and (tmp_path / "id").is_file()
    os.environ["WEIGHTVAULT_HOME"] = str(tmp_path / "home")
    try:
        model = tmp_path / "m"
        model.mkdir()
        (model / "w.bin").write_bytes(b"\x01" * 100)
        enc = _json(capsys, ["encrypt", str(model), "-o", str(tmp_path / "m.wvenc")])
        assert enc["files"][0]["plaintext_size"] == 100
    finally:
        os.environ.pop("WEIGHTVAULT_HOME")
    kek = tmp_path / "home" / "keyring.kek"
    shares = _json(capsys, ["breakglass", "split", "--kek", str(kek), "-k", "2", "-n", "3",
                            "-o", str(tmp_path / "shares")])
    assert shares["threshold"] == 2 and len(shares["shares"]) == 3
    recovered = _json(capsys, ["breakglass", "recover", *shares["shares"][:2], "-o",
                               str(tmp_path / "back.kek")])
    assert recovered["file"] == str(tmp_path / "back.kek")
    def key_lines(path: Path) -> list[str]:
        return [line for line in path.read_text().splitlines() if not line.startswith("#")]

    assert key_lines(tmp_path / "back.kek") == key_lines(kek)


def test_convert_lists_what_it_left_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    checkpoint = tmp_path / "ck.pt"
    torch.save(
        {"w": torch.zeros(3), "epoch": 7, "nested": {"b": torch.ones(2), "lr": 0.1}}, checkpoint
    )
    out = tmp_path / "ck.safetensors"
    assert run(["convert", str(checkpoint), "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"wrote {out}: 2 tensors, 20 bytes of data",
        "skipped (not a tensor): epoch",
        "skipped (not a tensor): nested.lr",
    ]
    doc = _json(capsys, ["convert", str(checkpoint), "-o", str(out), "--force"])
    assert doc["skipped"] == ["epoch", "nested.lr"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.custody.helpers import build_world, start_service

    root = tmp_path_factory.mktemp("json-custody")
    service = start_service(root / "data")
    try:
        yield build_world(root, service)
    finally:
        service.stop()


def test_vault_login_and_audit_export(
    world: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEIGHTVAULT_HOME", str(tmp_path / "home"))
    token = world.people["audrey"].token
    login = _json(capsys, ["vault", "login", "--url", world.service.url, "--token", token])
    assert login["name"] == "audrey" and login["roles"] == ["auditor"]
    assert Path(login["config"]).is_file()
    out, key_out = tmp_path / "audit.json", tmp_path / "audit.pub"
    doc = _json(capsys, ["vault", "audit", "-o", str(out), "--key-output", str(key_out)])
    assert doc["file"] == str(out) and doc["bytes"] == out.stat().st_size
    assert key_out.read_text().strip() == doc["log_key"]
    verified = _json(capsys, ["audit", "verify", str(out), "--log-key", str(key_out)])
    assert verified["size"] >= 1
    # A second export into the same files needs --force, and leaves both untouched.
    before = out.read_bytes()
    assert run(["vault", "audit", "-o", str(out), "--key-output", str(key_out)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert out.read_bytes() == before
