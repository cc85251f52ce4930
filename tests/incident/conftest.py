"""A custody history made with the real service over loopback, for the incident tests.

One service (uvicorn on 127.0.0.1, SQLite, blob folder, keyring KEK), ``--working-hours`` set so
that now is outside them, and the cast of :func:`tests.custody.helpers.build_world`. What happens,
in order (each step is recorded in :class:`History` so tests can check the timeline against it):

1. olivia pushes llama@v1 (in ``build_world``); she pushes llama@v3 later;
2. rita's request A (300,000-byte budget) is approved by alice and bob; rita pulls it all
   (past 80% of the grant's budget; off hours; her first pull);
3. ravi's request B is denied by carol;
4. ravi tries to list rita's grant A (denied: not his), then asks for more bytes than the
   policy allows (denied);
5. ravi's request C is approved by alice and bob; ravi pulls it;
6. the admin revokes grant A; rita's next pull is denied;
7. rita's request D is approved by alice and bob (their third release together: an alert);
8. olivia uploads v2 with config.json changed after signing (refused: signature);
9. olivia uploads v4 with a dangerous pickle (refused: scan);
10. olivia pushes v3 (safetensors) and v5 (a PyTorch ``.bin``);
11. the response: the admin revokes rita's token, rotates alice's approval key and disables
    ravi; the auditor exports the log.
"""

from __future__ import annotations

import datetime as dt
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric import ed25519
from tests.custody.helpers import (
    World,
    build_world,
    make_model,
    public_pem,
    sign_model,
    start_service,
)

from weightvault.custody.client import VaultHTTPError

PWNED = Path("/tmp/weightvault-incident-pwned")


class Payload:
    """A pickle that would run a command if anything unpickled it."""

    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.system, (f"touch {PWNED}",))


@dataclass
class History:
    world: World
    root: Path
    export: Path
    log_key: Path
    grants: dict[str, str] = field(default_factory=dict)
    delivered: dict[str, int] = field(default_factory=dict)
    """Bytes the pulls under each grant received (delivered sizes, as the service sent them)."""
    steps: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    """(kind, principal, version, grant letter) in the order they happened."""
    rotated_key: ed25519.Ed25519PrivateKey | None = None
    """alice's new approval key (the old one is retired in step 11)."""

    @property
    def data_dir(self) -> Path:
        return self.world.service.data_dir


def _off_hours() -> str:
    start = (dt.datetime.now(dt.UTC).hour + 2) % 24
    return f"{start}-{start + 1}"


def _request(world: World, who: str, version: str, budget: int) -> str:
    with world.client(who) as client:
        request = client.request("llama", version, f"incident test for {who}", 3600, budget)
    return str(request["id"])


def _pull(history: History, who: str, letter: str) -> None:
    world = history.world
    grant_id = history.grants[letter]
    with world.client(who) as client:
        listing = client.grant_files(grant_id)
        client.pull(grant_id, history.root / f"pulled-{letter}", world.people[who].identity)
    history.delivered[letter] = sum(f["delivered_size"] for f in listing["files"])


@pytest.fixture(scope="session")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    root = tmp_path_factory.mktemp("incident")
    service = start_service(root / "data", args=("--working-hours", _off_hours()))
    try:
        world = build_world(root, service)
        h = History(world, root, root / "audit.json", root / "audit.pub")
        steps = h.steps
        steps += [("model", "olivia", None, None), ("push.started", "olivia", "v1", None)]
        steps += [("push", "olivia", "v1", None)]
        # 2
        h.grants["A"] = _request(world, "rita", "v1", 300_000)
        world.approve("alice", h.grants["A"])
        world.approve("bob", h.grants["A"])
        steps += [("request", "rita", "v1", "A"), ("approval", "alice", "v1", "A")]
        steps += [("approval", "bob", "v1", "A")]
        _pull(h, "rita", "A")
        steps += [("files.listed", "rita", "v1", "A"), ("files.listed", "rita", "v1", "A")]
        steps += [("pull", "rita", "v1", "A"), ("pull", "rita", "v1", "A")]
        # 3
        h.grants["B"] = _request(world, "ravi", "v1", 1 << 20)
        world.approve("carol", h.grants["B"], decision="deny")
        steps += [("request", "ravi", "v1", "B"), ("denial", "carol", "v1", "B")]
        # 4
        with world.client("ravi") as ravi, pytest.raises(VaultHTTPError):
            ravi.grant_files(h.grants["A"])
        steps += [("denied", "ravi", "v1", "A")]
        with world.client("ravi") as ravi, pytest.raises(VaultHTTPError):
            ravi.request("llama", "v1", "everything, forever", 3600, 2 << 40)  # over the policy
        steps += [("denied", "ravi", "v1", None)]
        # 5
        h.grants["C"] = _request(world, "ravi", "v1", 1 << 20)
        world.approve("alice", h.grants["C"])
        world.approve("bob", h.grants["C"])
        steps += [("request", "ravi", "v1", "C"), ("approval", "alice", "v1", "C")]
        steps += [("approval", "bob", "v1", "C")]
        _pull(h, "ravi", "C")
        steps += [("files.listed", "ravi", "v1", "C"), ("files.listed", "ravi", "v1", "C")]
        steps += [("pull", "ravi", "v1", "C"), ("pull", "ravi", "v1", "C")]
        # 6
        with world.service.admin as admin:
            admin.revoke(h.grants["A"])
        steps += [("revocation", "admin", "v1", "A")]
        with world.client("rita") as rita, pytest.raises(VaultHTTPError):
            rita.grant_files(h.grants["A"])
        steps += [("denied", "rita", "v1", "A")]
        # 7
        h.grants["D"] = _request(world, "rita", "v1", 1 << 20)
        world.approve("alice", h.grants["D"])
        world.approve("bob", h.grants["D"])
        steps += [("request", "rita", "v1", "D"), ("approval", "alice", "v1", "D")]
        steps += [("approval", "bob", "v1", "D")]
        # 8, 9
        assert world.signing_key is not None
        changed = make_model(root / "llama-v2", seed=2)
        signature = sign_model(changed, world.signing_key)
        (changed / "config.json").write_text('{"hidden": 64, "backdoor": true}')
        dangerous = make_model(root / "llama-v4", seed=4)
        (dangerous / "extra.bin").write_bytes(pickle.dumps({"w": Payload()}))
        dangerous_signature = sign_model(dangerous, world.signing_key)
        with world.client("olivia") as olivia:
            with pytest.raises(VaultHTTPError):
                olivia.push("llama", "v2", changed, signature.read_bytes())
            with pytest.raises(VaultHTTPError):
                olivia.push("llama", "v4", dangerous, dangerous_signature.read_bytes())
            for refused in ("v2", "v4"):
                steps += [("push.started", "olivia", refused, None)]
                steps += [("push.refused", "olivia", refused, None)]
            # 10
            v3 = make_model(root / "llama-v3", seed=3)
            olivia.push("llama", "v3", v3, sign_model(v3, world.signing_key).read_bytes())
            steps += [("push.started", "olivia", "v3", None), ("push", "olivia", "v3", None)]
            v5 = root / "llama-v5"  # a PyTorch checkpoint, as some labs still store them
            v5.mkdir()
            torch.manual_seed(5)
            torch.save({"layer.weight": torch.randn(128, 64)}, v5 / "pytorch_model.bin")
            olivia.push("llama", "v5", v5, sign_model(v5, world.signing_key).read_bytes())
            steps += [("push.started", "olivia", "v5", None), ("push", "olivia", "v5", None)]
        # 11: the response: rita's token revoked, alice's approval key rotated, ravi disabled
        new_key = ed25519.Ed25519PrivateKey.generate()
        with world.service.admin as admin:
            admin.revoke_token(world.people["rita"].token.split("_")[1])
            admin.update_principal("alice", approval_key_pem=public_pem(new_key))
            admin.update_principal("ravi", disabled=True)
        h.rotated_key = new_key
        with world.client("audrey") as auditor:
            h.export.write_bytes(auditor.audit_export())
            h.log_key.write_text(auditor.audit_key()["log_key"] + "\n")
        yield h
    finally:
        service.stop()
