"""Helpers for the custody tests: the real service as a uvicorn process on loopback.

``start_service`` runs ``python -m weightvault serve`` on a free port with its own data folder and
waits for ``/v1/healthz``. ``world`` (module-scoped) adds the cast every test uses: an admin, an
owner, three approvers with Ed25519 approval keys, two readers with X25519 identities, an
auditor, and a model ``llama`` with a signed, scanned, encrypted version ``v1`` (a real
safetensors file and a config).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from safetensors.numpy import save_file

from weightvault.crypt.recipients import X25519Identity
from weightvault.custody.approvals import ApprovalSigner
from weightvault.custody.client import ClientConfig, VaultClient

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    admin_token: str
    log_path: Path

    def client(self, token: str) -> VaultClient:
        return VaultClient(ClientConfig(self.url, token))

    @property
    def admin(self) -> VaultClient:
        return self.client(self.admin_token)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def start_service(
    data_dir: Path,
    *,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    init_admin: bool = True,
    admin_token: str | None = None,
    timeout: float = 60.0,
) -> Service:
    """Start ``weightvault serve`` on a free port; return once it answers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    token_file = data_dir / f"admin-token-{port}"
    log_path = data_dir / f"serve-{port}.log"
    command = [
        sys.executable,
        "-m",
        "weightvault",
        "serve",
        "--data",
        str(data_dir),
        "--port",
        str(port),
        *args,
    ]
    if init_admin:
        command += ["--init-admin", "admin", "--admin-token-file", str(token_file)]
    log = log_path.open("wb")
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"service exited early: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/v1/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"service did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.1)
    if admin_token is None:
        admin_token = token_file.read_text().strip() if token_file.exists() else ""
    return Service(url, data_dir, process, admin_token, log_path)


@dataclass
class Person:
    name: str
    token: str
    approval_key: ed25519.Ed25519PrivateKey | None = None
    identity: X25519Identity | None = None
    identity_path: Path | None = None

    @property
    def signer(self) -> ApprovalSigner:
        assert self.approval_key is not None
        return ApprovalSigner(private_key=self.approval_key)


@dataclass
class World:
    service: Service
    root: Path
    people: dict[str, Person] = field(default_factory=dict)
    signing_key: ec.EllipticCurvePrivateKey | None = None
    model_dir: Path | None = None

    def client(self, who: str) -> VaultClient:
        return self.service.client(self.people[who].token)

    def approve(self, who: str, request_id: str, decision: str = "approve") -> dict[str, Any]:
        person = self.people[who]
        with self.client(who) as client:
            return client.decide(request_id, person.signer, approver=who, decision=decision)

    def granted(self, who: str = "rita", budget: int = 1 << 30, version: str = "v1") -> str:
        """A request by ``who`` approved by alice and bob; returns its id."""
        with self.client(who) as client:
            request = client.request("llama", version, "evaluation run for safety", 3600, budget)
        self.approve("alice", request["id"])
        result = self.approve("bob", request["id"])
        assert result["status"] == "active"
        return str(request["id"])


def public_pem(key: Any) -> str:
    return str(
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def make_model(folder: Path, *, seed: int = 0, megabytes: float = 0.25) -> Path:
    """A small but real model folder: a safetensors file and a JSON config."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    count = int(megabytes * (1 << 20) / 4)
    save_file(
        {
            "embed.weight": rng.standard_normal((count // 64, 64), dtype=np.float32),
            "head.bias": rng.standard_normal((64,), dtype=np.float32),
        },
        str(folder / "model.safetensors"),
    )
    (folder / "config.json").write_text(json.dumps({"hidden": 64, "seed": seed}))
    return folder


def sign_model(folder: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    from weightvault.signing import KeySigner, sign

    signature = folder.parent / f"{folder.name}.sig"
    sign(folder, KeySigner(key), signature_path=signature)
    return signature


@dataclass
class Enrolled:
    """Principals made by :func:`enroll`: tokens by name (the admin's too), the approvers'
    Ed25519 approval keys and the readers' X25519 identities."""

    tokens: dict[str, str]
    approval_keys: dict[str, ed25519.Ed25519PrivateKey]
    identities: dict[str, X25519Identity]


def enroll(service: Service, people: dict[str, list[str]]) -> Enrolled:
    """Create each principal with its roles, as an admin does: an approver registers a fresh
    approval key, a reader the recipient of a fresh identity."""
    enrolled = Enrolled({"admin": service.admin_token}, {}, {})
    with service.admin as admin:
        for name, roles in people.items():
            if "approver" in roles:
                enrolled.approval_keys[name] = ed25519.Ed25519PrivateKey.generate()
            if "reader" in roles:
                enrolled.identities[name] = X25519Identity.generate()
            key, identity = enrolled.approval_keys.get(name), enrolled.identities.get(name)
            made = admin.create_principal(
                name,
                roles,
                recipient=identity.recipient().to_string() if identity else None,
                approval_key_pem=public_pem(key) if key else None,
            )
            enrolled.tokens[name] = made["token"]
    return enrolled


def build_world(root: Path, service: Service) -> World:
    world = World(service=service, root=root)
    enrolled = enroll(
        service,
        {
            "olivia": ["owner"],
            "alice": ["approver"],
            "bob": ["approver"],
            "carol": ["approver", "reader"],
            "rita": ["reader"],
            "ravi": ["reader"],
            "audrey": ["auditor"],
        },
    )
    for name, token in enrolled.tokens.items():
        identity = enrolled.identities.get(name)
        identity_path = None
        if identity is not None:
            identity_path = root / f"{name}.identity"
            identity_path.write_text(identity.to_file_text())
            identity_path.chmod(0o600)
        approval_key = enrolled.approval_keys.get(name)
        world.people[name] = Person(name, token, approval_key, identity, identity_path)
    world.signing_key = ec.generate_private_key(ec.SECP256R1())
    policy = {
        "approvers": ["alice", "bob", "carol"],
        "approvals_required": 2,
        "signers": [{"name": "release-key", "public_key_pem": public_pem(world.signing_key)}],
        "max_grant_bytes": 1 << 40,
        "approval_validity_s": 7200,
    }
    with world.client("olivia") as olivia:
        olivia.create_model("llama", policy)
        world.model_dir = make_model(root / "llama-v1")
        signature = sign_model(world.model_dir, world.signing_key)
        olivia.push("llama", "v1", world.model_dir, signature.read_bytes())
    return world


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
