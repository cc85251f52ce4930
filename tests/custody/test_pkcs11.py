"""Keys in a real SoftHSM2 token: the service KEK (non-extractable AES) and an approver's Ed25519
approval key, used through the ``vault approve --pkcs11-uri`` command."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.custody.helpers import build_world, start_service
from tests.softhsm import make_token

from weightvault.cli.app import run
from weightvault.custody.client import VaultHTTPError


def test_kek_and_approval_key_on_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = make_token(tmp_path, monkeypatch=monkeypatch)
    kek_uri = token.generate_aes_kek("service-kek")
    approval_uri = token.generate_ed25519_key("alice-approval")
    service = start_service(
        tmp_path / "data",
        args=("--kek", kek_uri),
        env={"SOFTHSM2_CONF": os.environ["SOFTHSM2_CONF"]},
    )
    try:
        assert not (tmp_path / "data" / "service-kek.keyring").exists()
        world = build_world(tmp_path, service)  # the upload wraps every DEK on the token
        with service.admin as admin:
            admin.update_principal(
                "alice", approval_key_pem=token.public_key_pem("alice-approval").decode()
            )
        with world.client("rita") as client:
            request = client.request("llama", "v1", "evaluation run for safety", 3600, 1 << 30)
        # The in-memory key alice had before no longer counts ...
        with pytest.raises(VaultHTTPError) as excinfo:
            world.approve("alice", request["id"])
        assert excinfo.value.status == 403
        # ... the token's key does, through the CLI.
        code = run(
            [
                "vault",
                "approve",
                request["id"],
                "--pkcs11-uri",
                approval_uri,
                "--url",
                service.url,
                "--token",
                world.people["alice"].token,
            ]
        )
        assert code == 0
        assert world.approve("bob", request["id"])["status"] == "active"
        with world.client("rita") as client:
            client.pull(request["id"], tmp_path / "out", world.people["rita"].identity)
        assert world.model_dir is not None
        assert (tmp_path / "out" / "model.safetensors").read_bytes() == (
            world.model_dir / "model.safetensors"
        ).read_bytes()
    finally:
        service.stop()
