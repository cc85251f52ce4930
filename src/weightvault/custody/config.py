"""Service configuration and first-time setup of a data folder.

A data folder holds what a replica needs besides the database and the blobs: the service KEK
(a keyring file, unless the KEK is on a PKCS#11 token), the audit log's signing key (a C2SP note
key), and the audit HMAC key. Several replicas share these files (or copies of them), the
database and the blob store.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from weightvault.errors import InputError, KeyMaterialError

if TYPE_CHECKING:
    from weightvault.tlog.note import Ed25519NoteSigner

__all__ = ["ServiceConfig"]

LOG_KEY_FILE = "audit-log.key"
HMAC_KEY_FILE = "audit-hmac.key"
KEK_FILE = "service-kek.keyring"


@dataclass(frozen=True)
class ServiceConfig:
    """Everything ``weightvault serve`` needs; defaults give the embedded single-node setup."""

    data_dir: Path
    database: str = ""
    """``sqlite:///PATH`` (default ``DATA_DIR/custody.db``) or ``postgresql://...``."""
    blobs: str = ""
    """A folder (default ``DATA_DIR/blobs``) or ``s3://BUCKET/PREFIX``."""
    kek: str = ""
    """``keyring:PATH`` (default ``DATA_DIR/service-kek.keyring``) or a ``pkcs11:`` URI."""
    log: str = ""
    """Audit log location: a SQLite path (default ``DATA_DIR/audit.tlog``) or ``postgresql://``."""
    log_origin: str = "weightvault.custody/audit"
    webhook_url: str | None = None
    replica: str = ""
    window_s: int = 24 * 3600
    """Egress budgets are counted over this sliding window."""
    principal_egress_bytes_per_window: int = 1 << 40
    debit_slice_bytes: int = 64 * 1024 * 1024
    """Bytes debited from the budgets at a time while a pull streams."""
    max_upload_bytes: int = 1 << 42
    unusual_volume_fraction: float = 0.5
    """Alert when a principal's egress in the window passes this fraction of its budget."""
    budget_alert_fraction: float = 0.8
    """Alert when a grant's bytes, or a model's egress in the window, pass this fraction of its
    budget (an incident signal)."""
    working_hours_utc: tuple[int, int] | None = None
    """``(start, end)`` UTC hours when pulls are expected (end exclusive; may wrap midnight);
    a pull outside them raises an alert. None: no working hours."""
    same_pair_approvals: int = 3
    """Alert when the same two approvers have released this many grants of a model..."""
    same_pair_window_s: int = 30 * 24 * 3600
    """... within this many seconds."""
    repeated_denials: int = 5
    denials_window_s: int = 600
    checkpoint_every: int = 1000
    checkpoint_interval_s: float = 10.0
    max_grant_duration_s: int = 30 * 24 * 3600
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{self.data_dir / 'custody.db'}"

    @property
    def log_location(self) -> str:
        if self.log:
            return self.log
        if self.database.startswith("postgresql://"):
            return self.database
        return str(self.data_dir / "audit.tlog")

    @property
    def kek_spec(self) -> str:
        return self.kek or f"keyring:{self.data_dir / KEK_FILE}"

    @property
    def log_key_path(self) -> Path:
        return self.data_dir / LOG_KEY_FILE

    @property
    def hmac_key_path(self) -> Path:
        return self.data_dir / HMAC_KEY_FILE

    def prepare(self) -> None:
        """Create the data folder and any missing key files (0600)."""
        from weightvault.crypt.recipients.keyring import create_keyring
        from weightvault.keys.files import write_secret_file
        from weightvault.tlog.note import Ed25519NoteSigner

        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self.log_key_path.exists():
            signer = Ed25519NoteSigner.generate(self.log_origin)
            _write_if_absent(self.log_key_path, signer.to_text() + "\n", write_secret_file)
        if not self.hmac_key_path.exists():
            _write_if_absent(self.hmac_key_path, secrets.token_hex(32) + "\n", write_secret_file)
        if not self.kek and not (self.data_dir / KEK_FILE).exists():
            try:
                create_keyring(self.data_dir / KEK_FILE)
            except InputError:
                pass  # another replica created it first

    def load_hmac_key(self) -> bytes:
        from weightvault.keys.files import read_secret_file

        text = read_secret_file(self.hmac_key_path, "audit HMAC key").strip()
        try:
            key = bytes.fromhex(text)
        except ValueError as exc:
            raise KeyMaterialError(f"{self.hmac_key_path}: not a hex key") from exc
        if len(key) < 32:
            raise KeyMaterialError(f"{self.hmac_key_path}: key shorter than 32 bytes")
        return key

    def load_log_signer(self) -> Ed25519NoteSigner:
        from weightvault.keys.files import read_secret_file
        from weightvault.tlog.note import Ed25519NoteSigner

        return Ed25519NoteSigner.from_text(read_secret_file(self.log_key_path, "audit log key"))


def _write_if_absent(path: Path, text: str, writer: object) -> None:
    try:
        writer(path, text)  # type: ignore[operator]
    except InputError:
        if not path.exists():
            raise
    os.chmod(path, 0o600)
