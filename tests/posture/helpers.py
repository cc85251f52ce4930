"""A custody deployment built to SL3, with the real service, a SoftHSM2 KEK, a witness, a TLS
front and a signed attestation; copied per test so each test can break one control.

What ``build_sl3`` makes (once per module; about 5 s):

* a SoftHSM2 token with the KEK (non-extractable AES) and a second, *extractable* AES key made
  by a separate process (for the test that shows an exportable KEK is caught);
* ``weightvault serve --kek pkcs11:...`` with an owner, three approvers and a reader; a model
  whose policy asks 2 approvals, caps grants at 72 h and egress at half the model a day (48 h
  to take a copy), one pushed version and one active grant;
* an audit checkpoint cosigned by one witness (SL3 wants one, SL4 two);
* a loopback HTTPS server with a self-signed certificate for 127.0.0.1 (the "TLS front");
* a signed attestation of the SL3 controls only.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from tests.custody.helpers import make_model, public_pem, sign_model, start_service
from tests.keyfiles import write_self_signed_tls
from tests.softhsm import SoftHsmToken, make_token

from weightvault.crypt.recipients import X25519Identity
from weightvault.custody.approvals import ApprovalSigner
from weightvault.custody.config import ServiceConfig
from weightvault.posture import Deployment, sign_attestation
from weightvault.signing import KeySigner
from weightvault.tlog import Ed25519NoteSigner, TransparencyLog, VerifierKey, cosign_checkpoint
from weightvault.tlog.note import SIG_COSIGNATURE_V1

SL3_ATTESTATION = """\
format: weightvault.dev/posture-attestation@v1
organization: Example Lab
attested_by: Dana Reyes, CISO
attested_at: 2026-01-05
valid_until: 2099-01-05
controls:
  insider-threat-program:
    in_place: true
    evidence: program charter SEC-7, reviewed quarterly
  background-checks:
    in_place: true
    evidence: screening of every approver and reader (vendor report 2026-01)
  red-teaming:
    in_place: true
    evidence: internal red team, last exercise 2025-11
  supply-chain-review:
    in_place: true
    evidence: supplier review of the custody hosts and HSM, 2025-12
  confidential-computing:
    in_place: false
    evidence: planned for 2027
"""

_EXTRACTABLE_KEY_SCRIPT = """
import sys
import pkcs11
lib = pkcs11.lib(sys.argv[1])
token = lib.get_token(token_label=sys.argv[2])
with token.open(rw=True, user_pin=sys.argv[3]) as session:
    session.generate_key(pkcs11.KeyType.AES, 256, label=sys.argv[4], store=True,
                         template={pkcs11.Attribute.EXTRACTABLE: True,
                                   pkcs11.Attribute.SENSITIVE: False,
                                   pkcs11.Attribute.WRAP: True, pkcs11.Attribute.UNWRAP: True})
"""


@dataclass
class Sl3World:
    root: Path
    data: Path
    token: SoftHsmToken
    kek_uri: str
    extractable_kek_uri: str
    witness_keys: tuple[VerifierKey, ...]
    attestation: Path
    attestation_key: Path
    tls_url: str
    ca_file: Path
    model_size: int

    def deployment(self, data: Path, **changes: object) -> Deployment:
        """The SL3 deployment over ``data`` (a copy), with ``changes`` to its fields or config."""
        config = {"data_dir": data, "kek": self.kek_uri}
        for key in ("kek", "window_s", "blobs"):
            if key in changes:
                config[key] = changes.pop(key)
        fields: dict[str, object] = {
            "service_url": self.tls_url,
            "ca_file": self.ca_file,
            "witness_keys": self.witness_keys,
        }
        fields.update(changes)
        return Deployment(ServiceConfig(**config), **fields)  # type: ignore[arg-type]

    def copy(self, target: Path) -> Path:
        shutil.copytree(self.data, target, symlinks=True)
        os.chmod(target, 0o700)
        return target


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """``tls.crt``/``tls.key``: the loopback TLS front's self-signed certificate (30 days)."""
    return write_self_signed_tls(
        folder, "tls", x509.IPAddress(ipaddress.ip_address("127.0.0.1")), days=30
    )


class TlsFront:
    """A loopback TLS listener that completes handshakes and closes (a stand-in for the proxy
    in front of the service; posture only needs the handshake)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(2)
                    tls.recv(1)
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        self.thread.join(2)
        self.sock.close()


def build_sl3(root: Path) -> tuple[Sl3World, TlsFront]:
    token = make_token(root)
    kek_uri = token.generate_aes_kek("kek")
    subprocess.run(
        [
            sys.executable,
            "-c",
            _EXTRACTABLE_KEY_SCRIPT,
            token.module,
            token.label,
            token.pin,
            "loose-kek",
        ],
        check=True,
        env=token.env(),
    )
    extractable = token.uri_for("loose-kek", type="secret-key")
    data = root / "custody"
    service = start_service(data, args=("--kek", kek_uri), env=token.env())
    try:
        admin = service.admin
        people: dict[str, tuple[str, ed25519.Ed25519PrivateKey]] = {}
        for name in ("alice", "bob", "carol"):
            key = ed25519.Ed25519PrivateKey.generate()
            created = admin.create_principal(name, ["approver"], approval_key_pem=public_pem(key))
            people[name] = (created["token"], key)
        olivia = admin.create_principal("olivia", ["owner"])["token"]
        rita_identity = X25519Identity.generate()
        rita = admin.create_principal(
            "rita", ["reader"], recipient=rita_identity.recipient().to_string()
        )["token"]
        admin.close()
        signing_key = ec.generate_private_key(ec.SECP256R1())
        model_dir = make_model(root / "llama-v1")
        signature = sign_model(model_dir, signing_key)
        size = sum(p.stat().st_size for p in model_dir.iterdir())
        policy = {
            "approvers": ["alice", "bob", "carol"],
            "approvals_required": 2,
            "signers": [{"name": "release-key", "public_key_pem": public_pem(signing_key)}],
            "max_grant_duration_s": 72 * 3600,
            "max_grant_bytes": size * 4,
            "egress_bytes_per_window": size // 2,
        }
        with service.client(olivia) as client:
            client.create_model("llama", policy)
            client.push("llama", "v1", model_dir, signature.read_bytes())
        with service.client(rita) as client:
            request = client.request("llama", "v1", "evaluation run for safety", 3600, size)
        for name in ("alice", "bob"):
            approver_token, key = people[name]
            with service.client(approver_token) as client:
                client.decide(request["id"], ApprovalSigner(private_key=key), approver=name)
    finally:
        service.stop()
    for leftover in data.glob("admin-token-*"):
        leftover.unlink()
    # One witness cosigns the audit log's latest checkpoint.
    config = ServiceConfig(data_dir=data, kek=kek_uri)
    log = TransparencyLog.open(config.log_location)
    log_signer = config.load_log_signer()
    note = log.sign_checkpoint(log_signer)
    witness = Ed25519NoteSigner.generate("witness.example.org/w1", sig_type=SIG_COSIGNATURE_V1)
    cosigned = cosign_checkpoint(
        note, witness=witness, log_key=log_signer.verifier_key, state_path=root / "w1.state"
    )
    log.add_cosignatures(cosigned, log_signer.verifier_key)
    log.close()
    # The attestation, signed by the CISO's key.
    ciso = ec.generate_private_key(ec.SECP256R1())
    attestation_key = root / "ciso.pub"
    attestation_key.write_text(public_pem(ciso))
    attestation = root / "attestation.yaml"
    attestation.write_text(SL3_ATTESTATION)
    (root / "attestation.yaml.sig").write_bytes(
        sign_attestation(attestation.read_bytes(), KeySigner(ciso))
    )
    cert, key = _self_signed(root)
    front = TlsFront(cert, key)
    world = Sl3World(
        root=root,
        data=data,
        token=token,
        kek_uri=kek_uri,
        extractable_kek_uri=extractable,
        witness_keys=(witness.verifier_key,),
        attestation=attestation,
        attestation_key=attestation_key,
        tls_url=f"https://127.0.0.1:{front.port}",
        ca_file=cert,
        model_size=size,
    )
    return world, front
