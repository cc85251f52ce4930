"""The ``weightvault vault`` commands end to end, and where the client finds URL and token."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from tests.custody.helpers import World, make_model, sign_model

from weightvault.cli.app import run
from weightvault.custody.client import resolve_config


def _json(capsys: Any) -> Any:
    """The last JSON document printed."""
    out = capsys.readouterr().out
    decoder = json.JSONDecoder()
    position, last = 0, None
    while position < len(out):
        if out[position] in "{[":
            last, position = decoder.raw_decode(out, position)
        else:
            position += 1
    return last


def _pem_file(world: World, who: str, tmp_path: Path) -> Path:
    key = world.people[who].approval_key
    assert key is not None
    path = tmp_path / f"{who}.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def test_login_writes_a_private_config_and_later_commands_use_it(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("WEIGHTVAULT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WEIGHTVAULT_URL", raising=False)
    monkeypatch.delenv("WEIGHTVAULT_TOKEN", raising=False)
    token = world.people["rita"].token
    assert run(["vault", "login", "--url", world.service.url, "--token", token]) == 0
    config = tmp_path / "home" / "vault.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    capsys.readouterr()
    assert run(["vault", "whoami", "--json"]) == 0
    assert _json(capsys)["name"] == "rita"
    # The environment wins over the file, and flags win over both.
    monkeypatch.setenv("WEIGHTVAULT_TOKEN", world.people["ravi"].token)
    assert resolve_config().token == world.people["ravi"].token
    assert resolve_config(token="explicit").token == "explicit"
    assert run(["vault", "whoami", "--json"]) == 0
    assert _json(capsys)["name"] == "ravi"


def test_missing_configuration_is_a_one_line_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("WEIGHTVAULT_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("WEIGHTVAULT_URL", raising=False)
    monkeypatch.delenv("WEIGHTVAULT_TOKEN", raising=False)
    assert run(["vault", "grants"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no server URL") and err.count("\n") == 1


def test_request_approve_pull_revoke_through_the_cli(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("WEIGHTVAULT_URL", world.service.url)

    def as_(who: str, *args: str) -> int:
        return run([*args[:2], *args[2:], "--token", world.people[who].token])

    assert (
        as_(
            "rita",
            "vault",
            "request",
            "--model",
            "llama",
            "--version",
            "v1",
            "--justification",
            "red-team evaluation, ticket 42",
            "--duration-s",
            "600",
            "--bytes",
            "1G",
            "--json",
        )
        == 0
    )
    request = _json(capsys)
    assert request["byte_budget"] == 1 << 30
    for approver in ("alice", "bob"):
        key = _pem_file(world, approver, tmp_path)
        assert as_(approver, "vault", "approve", request["id"], "--key", str(key), "--json") == 0
    assert _json(capsys)["status"] == "active"
    assert as_("rita", "vault", "grants", "--status", "active", "--json") == 0
    assert request["id"] in {g["id"] for g in _json(capsys)}
    out = tmp_path / "pulled"
    identity = world.people["rita"].identity_path
    assert (
        as_("rita", "vault", "pull", request["id"], "-o", str(out), "--identity", str(identity))
        == 0
    )
    assert world.model_dir is not None
    assert (out / "model.safetensors").read_bytes() == (
        world.model_dir / "model.safetensors"
    ).read_bytes()
    capsys.readouterr()
    assert as_("rita", "vault", "revoke", request["id"]) == 0
    assert as_("rita", "vault", "pull", request["id"], "-o", str(tmp_path / "again")) == 1
    assert "revoked" in capsys.readouterr().err


def test_deny_push_inventory_and_admin_commands(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("WEIGHTVAULT_URL", world.service.url)
    monkeypatch.setenv("WEIGHTVAULT_TOKEN", world.people["olivia"].token)
    assert world.signing_key is not None
    model = make_model(tmp_path / "m2", seed=11)
    signature = sign_model(model, world.signing_key)
    assert (
        run(
            [
                "vault",
                "push",
                str(model),
                "--model",
                "llama",
                "--version",
                "v-cli",
                "--signature",
                str(signature),
            ]
        )
        == 0
    )
    assert "registered llama@v-cli" in capsys.readouterr().out
    monkeypatch.setenv("WEIGHTVAULT_TOKEN", world.people["ravi"].token)
    assert (
        run(
            [
                "vault",
                "request",
                "--model",
                "llama",
                "--version",
                "v-cli",
                "--justification",
                "please, for evaluation",
                "--bytes",
                "5M",
                "--json",
            ]
        )
        == 0
    )
    request = _json(capsys)
    monkeypatch.setenv("WEIGHTVAULT_TOKEN", world.people["carol"].token)
    key = _pem_file(world, "carol", tmp_path)
    assert run(["vault", "deny", request["id"], "--key", str(key), "--json"]) == 0
    assert _json(capsys)["status"] == "denied"
    monkeypatch.setenv("WEIGHTVAULT_TOKEN", world.people["audrey"].token)
    assert run(["vault", "inventory"]) == 0
    assert "llama@v-cli  owner olivia" in capsys.readouterr().out
    monkeypatch.setenv("WEIGHTVAULT_TOKEN", world.service.admin_token)
    assert run(["vault", "principal", "nina", "--role", "reader", "--json"]) == 0
    created = _json(capsys)
    assert created["token"].startswith("wvt_")
    assert (
        run(
            [
                "vault",
                "request",
                "--model",
                "llama",
                "--version",
                "v1",
                "--justification",
                "x",
                "--bytes",
                "lots",
            ]
        )
        == 2
    )
    assert "--bytes" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--database", "mysql://db", "--database takes sqlite:///PATH"),
        ("--blobs", "ftp://host/x", "--blobs takes a folder or s3://"),
        ("--webhook", "file:///etc/passwd", "--webhook takes an http://"),
        ("--principal-budget", "lots", "--principal-budget: expected"),
    ],
)
def test_serve_refuses_bad_options_in_one_line(
    tmp_path: Path, capsys: Any, option: str, value: str, message: str
) -> None:
    code = run(["serve", "--data", str(tmp_path / "data"), "--port", "1", option, value])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
