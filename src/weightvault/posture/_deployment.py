"""What the posture checks read: a deployment, its facts opened once, and a check's outcome.

Apart from the checks (:mod:`weightvault.posture.checks`) so that each check is a function of
:class:`Facts` alone, and so the opening rules live in one place: the data folder must be a
custody folder and the database must exist (posture never creates one), and everything is
opened read-only and lazily (a check that does not need the log never opens it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightvault.errors import InputError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from weightvault.custody.config import ServiceConfig
    from weightvault.custody.policy import ModelPolicy
    from weightvault.tlog import TransparencyLog, VerifierKey

__all__ = ["CheckResult", "Deployment", "Facts", "Status"]


class Status(StrEnum):
    """The outcome of a check or a measure."""

    PASS = "pass"  # noqa: S105 - an outcome, not a password
    FAIL = "fail"
    NOT_APPLICABLE = "not-applicable"
    ATTESTED = "attested"
    """A person vouches for it in the signed attestation; weightvault did not verify it."""

    @property
    def met(self) -> bool:
        return self is not Status.FAIL


@dataclass(frozen=True)
class CheckResult:
    """A check's outcome and the facts it rests on."""

    status: Status
    evidence: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "evidence": list(self.evidence)}


@dataclass(frozen=True)
class Deployment:
    """What posture looks at: the service's configuration (the same settings ``serve`` takes)
    plus what lives outside the data folder (the service's address, witness keys, a break-glass
    share, the scan policy the organisation uses)."""

    config: ServiceConfig
    service_url: str | None = None
    """The address clients use (``https://...``)."""
    ca_file: Path | None = None
    """Certificates to verify the service's TLS certificate with (default: the system's)."""
    witness_keys: tuple[VerifierKey, ...] = ()
    """Cosignature keys of the witnesses that watch the audit log."""
    breakglass_share: Path | None = None
    """One share file of the KEK's break-glass split (it names the KEK and the k of n)."""
    scan_policy: Path | None = None
    """The scan policy file used when models are signed or converted, if any."""
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("Deployment.now must be timezone-aware")


class Facts:
    """Lazily opened views of the deployment, shared by the checks and closed once."""

    def __init__(self, deployment: Deployment) -> None:
        from weightvault.custody.bootstrap import is_custody_folder

        self.deployment = deployment
        self.config = deployment.config
        data = self.config.data_dir
        if not data.is_dir() or not is_custody_folder(data):
            raise InputError(f"{data}: not a custody data folder")
        if self.config.database_url.startswith("sqlite:///"):
            db_file = Path(self.config.database_url[len("sqlite:///") :])
            if not db_file.is_file():
                raise InputError(f"{db_file}: no custody database there")
        from weightvault.custody.store import Store

        self.store = Store(self.config.database_url)
        self._log: TransparencyLog | None = None

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.store.session(read_only=True) as session:
            yield session

    def log(self) -> TransparencyLog:
        if self._log is None:
            from weightvault.tlog import TransparencyLog

            self._log = TransparencyLog.open(self.config.log_location)
        return self._log

    def log_key(self) -> VerifierKey:
        return self.config.load_log_signer().verifier_key

    def models(self) -> list[tuple[str, ModelPolicy]]:
        from sqlalchemy import select

        from weightvault.custody.policy import ModelPolicy
        from weightvault.custody.store import Model

        with self.session() as session:
            rows = session.scalars(select(Model).order_by(Model.name)).all()
            return [(m.name, ModelPolicy.from_json(m.policy_json)) for m in rows]

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
        self.store.dispose()
