"""First-time setup of an embedded custody data folder, in one step (``weightvault vault init``).

A new service needs people before it is useful: an admin who manages principals, an owner who
registers models, and approvers with Ed25519 keys whose signatures release weights. This module
makes all of them through the service's own API (so each creation is an audit entry, exactly as
if it came over HTTP), writes each token and each approval key to its own 0600 file under
``DATA/credentials/``, and only then puts the folder in place with one rename: an interrupted or
failed setup leaves nothing behind but what was there before.

The credentials folder is for handing out: each person takes their token (and an approver their
private key) and the files are deleted from the service host. The service itself reads none of
them; it keeps only token hashes and approval public keys.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from weightvault import _interrupt
from weightvault.custody import _names
from weightvault.custody.config import HMAC_KEY_FILE, KEK_FILE, LOG_KEY_FILE, ServiceConfig
from weightvault.errors import InputError

__all__ = [
    "CREDENTIALS_DIR",
    "InitResult",
    "InitializedPrincipal",
    "initialize_data_folder",
    "is_custody_folder",
]

CREDENTIALS_DIR = "credentials"
_MARKERS = ("custody.db", "audit.tlog", KEK_FILE, LOG_KEY_FILE, HMAC_KEY_FILE)
"""Files whose presence means a folder is (or was) a custody data folder."""


@dataclass(frozen=True)
class InitializedPrincipal:
    """One principal made by :func:`initialize_data_folder`, and where its secrets were written."""

    name: str
    role: str
    """``admin``, ``owner`` or ``approver``."""
    token_file: Path
    """The principal's API token (0600), shown nowhere else."""
    approval_key: Path | None = None
    """Ed25519 private key (PKCS#8 PEM, 0600) that signs this approver's decisions."""
    approval_key_id: str | None = None
    """Hex SHA-256 of the raw public key (what approvals and the audit log name)."""

    @property
    def approval_public_key(self) -> Path | None:
        """The matching public key (PEM), as the service registered it: written beside the
        private key under the same name, so derived from it rather than stored twice."""
        return None if self.approval_key is None else _public_key_path(self.approval_key)


def _public_key_path(private_key: Path) -> Path:
    """Where an approver's public key is written: beside ``NAME.pem``, as ``NAME.pub``."""
    return private_key.with_suffix(".pub")


@dataclass(frozen=True)
class InitResult:
    """A data folder made by :func:`initialize_data_folder`."""

    data_dir: Path
    principals: tuple[InitializedPrincipal, ...]
    audit_log_key: str
    """The audit log's verifier key (``name+id+key``), for ``audit verify``."""

    @property
    def credentials_dir(self) -> Path:
        """Tokens and approval keys to hand out, then delete (the service reads none of them):
        always ``CREDENTIALS_DIR`` inside the data folder, so derived rather than stored."""
        return self.data_dir / CREDENTIALS_DIR


def is_custody_folder(path: Path) -> bool:
    """True if ``path`` holds any file a custody data folder has (database, log, keys)."""
    return any((path / marker).exists() for marker in _MARKERS)


def initialize_data_folder(
    data_dir: Path,
    *,
    admin: str = "admin",
    owner: str = "owner",
    approvers: Sequence[str] = (),
    replace: bool = False,
) -> InitResult:
    """Create ``data_dir`` as a ready embedded custody data folder (SQLite, local blobs, keyring
    KEK) with an admin, an owner and the given approvers.

    Refuses a folder that is already a custody data folder unless ``replace`` (which deletes the
    old one, its database, audit log, keys and stored weights, once the new one is complete),
    and refuses a non-empty folder that is not one. Names are checked first; nothing is written
    before they pass.
    """
    names = [admin, owner, *approvers]
    for name in names:
        _names.check_principal_name(name, "name")
    if len(set(names)) != len(names):
        raise InputError("every principal needs its own name (admin, owner and approvers)")
    data_dir = Path(data_dir)
    existing = _check_target(data_dir, replace)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.init-", dir=data_dir.parent))
    try:
        # A signal waits until the database and the log are closed (so their drivers are not
        # cut mid-close), then stops the build here; the staging folder goes with it.
        with _interrupt.deferred():
            result = _relocate(_build(staging, admin, owner, approvers), staging, data_dir)
        with _interrupt.finishing():  # the commit: a signal during it is too late to matter
            _move_into_place(staging, data_dir, existing)
    except BaseException:  # an interrupt (SIGINT, or SIGTERM under the CLI) included
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _check_target(data_dir: Path, replace: bool) -> bool:
    """Whether ``data_dir`` exists and will be replaced; raises if it must not be."""
    if not data_dir.exists() and not data_dir.is_symlink():
        return False
    if not data_dir.is_dir() or data_dir.is_symlink():
        raise InputError(f"{data_dir}: exists and is not a folder")
    if is_custody_folder(data_dir):
        if not replace:
            raise InputError(
                f"{data_dir}: already a custody data folder",
                hint="replace it only if its database, audit log, keys and stored weights may go",
                remedy="overwrite",
            )
        return True
    if any(data_dir.iterdir()):
        raise InputError(
            f"{data_dir}: not empty and not a custody data folder",
            hint="choose a new or empty folder",
        )
    return True


def _build(folder: Path, admin: str, owner: str, approvers: Sequence[str]) -> InitResult:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from weightvault.custody.approvals import key_id_of
    from weightvault.custody.context import RequestContext
    from weightvault.custody.service import Custody
    from weightvault.keys.files import write_secret_file

    credentials = folder / CREDENTIALS_DIR
    credentials.mkdir(mode=0o700)
    custody = Custody(ServiceConfig(data_dir=folder))
    try:
        admin_token = custody.bootstrap_admin(admin, via="vault init")
        assert admin_token is not None  # the database is new
        write_secret_file(credentials / f"{admin}.token", admin_token + "\n")
        made = [InitializedPrincipal(admin, "admin", credentials / f"{admin}.token")]
        people = [(owner, "owner", None)] + [
            (name, "approver", ed25519.Ed25519PrivateKey.generate()) for name in approvers
        ]
        for name, role, key in people:
            ctx = RequestContext(secrets.token_hex(16), "CLI", "vault init", "local")
            ctx.action = "principal.create"
            custody.identities.authenticate(ctx, f"Bearer {admin_token}")
            public_pem = None
            if key is not None:
                public_pem = key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            created = custody.identities.create_principal(
                ctx, name, [role], None, public_pem.decode("ascii") if public_pem else None
            )
            token_file = credentials / f"{name}.token"
            write_secret_file(token_file, created["token"] + "\n")
            if key is None or public_pem is None:
                made.append(InitializedPrincipal(name, role, token_file))
                continue
            private = credentials / f"{name}.pem"
            write_secret_file(
                private,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ).decode("ascii"),
            )
            _public_key_path(private).write_bytes(public_pem)
            made.append(
                InitializedPrincipal(
                    name, role, token_file, private, key_id_of(key.public_key().public_bytes_raw())
                )
            )
        log_key = custody.trail.verifier_key.to_text()
    finally:
        custody.close()
    return InitResult(folder, tuple(made), log_key)


def _move_into_place(staging: Path, data_dir: Path, existing: bool) -> None:
    """One rename publishes the new folder; an old one is moved aside first, then deleted."""
    if not existing:
        os.rename(staging, data_dir)  # fails if something appeared there meanwhile
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.old-", dir=data_dir.parent))
    os.rename(data_dir, aside / "old")
    try:
        os.rename(staging, data_dir)
    except BaseException:
        os.rename(aside / "old", data_dir)
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _relocate(result: InitResult, staging: Path, data_dir: Path) -> InitResult:
    """The result with paths under the staging folder moved to the final folder."""

    def moved(path: Path | None) -> Path | None:
        return None if path is None else data_dir / path.relative_to(staging)

    principals = tuple(
        InitializedPrincipal(
            p.name,
            p.role,
            data_dir / p.token_file.relative_to(staging),
            moved(p.approval_key),
            p.approval_key_id,
        )
        for p in result.principals
    )
    return InitResult(data_dir, principals, result.audit_log_key)
