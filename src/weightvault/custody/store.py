"""The custody service's metadata: SQLAlchemy 2 models on SQLite (default) or PostgreSQL.

Everything the service knows except the ciphertext lives here: principals and their token hashes,
models and versions, grant requests, signed approvals, egress records and alert events. Several
service replicas may share one PostgreSQL database; rows that must not be updated concurrently
(a job's state) are read ``FOR UPDATE``, and byte budgets are spent by one conditional ``UPDATE``
each (:mod:`.budgets`) on the counters kept here. SQLite runs in WAL mode and every transaction
starts ``BEGIN IMMEDIATE``, so concurrent writers queue instead of failing on lock upgrades.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from weightvault.errors import UsageError

__all__ = [
    "Alert",
    "Approval",
    "Base",
    "ConsoleSession",
    "DeliveryHeader",
    "Egress",
    "EgressTotal",
    "EnrolmentCode",
    "FingerprintedFile",
    "GrantRequest",
    "Job",
    "JobApproval",
    "Model",
    "ModelVersion",
    "Principal",
    "SealedFile",
    "SignedDecision",
    "Store",
    "Token",
    "VersionFile",
    "WebAuthnCredential",
    "core_table",
    "create_egress_total",
    "utcnow",
]


def utcnow() -> dt.datetime:
    """Timezone-aware UTC now (the default clock; the service injects its own)."""
    return dt.datetime.now(dt.UTC)


class _UtcDateTime(TypeDecorator[dt.datetime]):
    """Stored naive in UTC (SQLite has no zones), returned aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    """Declarative base of the custody schema."""


class Principal(Base):
    """A person or service with roles; authenticates with tokens, approves with an Ed25519 key."""

    __tablename__ = "principals"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    roles: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    recipient: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The principal's X25519 recipient (pulls are encrypted to it)."""
    approval_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    """Raw 32-byte Ed25519 public key that signs this principal's approvals."""
    approval_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    """Hex SHA-256 of the raw public key; unique, so one key cannot serve two principals."""

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(r for r in self.roles.split(",") if r)


class Token(Base):
    """An API token: only its SHA-256 is stored; the secret is shown once at creation."""

    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    principal: Mapped[str] = mapped_column(ForeignKey("principals.name"), index=True)
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary)
    label: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(_UtcDateTime(), nullable=True)


class Model(Base):
    """A registered model: its owner and its custody policy (JSON, see :mod:`.policy`)."""

    __tablename__ = "models"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner: Mapped[str] = mapped_column(ForeignKey("principals.name"))
    policy_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(_UtcDateTime())


class ModelVersion(Base):
    """A registered, signed, scanned and encrypted version. Inserted in one transaction with its
    files, so a crash never leaves a half-registered version."""

    __tablename__ = "versions"
    model: Mapped[str] = mapped_column(ForeignKey("models.name"), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    file_count: Mapped[int] = mapped_column(Integer)
    signer: Mapped[str] = mapped_column(Text)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    scan_summary: Mapped[str] = mapped_column(Text)
    registered_by: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    blob_prefix: Mapped[str] = mapped_column(String(128))


class SealedFile:
    """The columns of every file stored encrypted (a version's :class:`VersionFile`, a grant's
    :class:`FingerprintedFile`): plaintext size and digest, where its ciphertext lives and how
    that splits into header and body; the same five in both, since a grant's marked copy stands
    in for its original when pulled."""

    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    blob_key: Mapped[str] = mapped_column(String(256))
    header_size: Mapped[int] = mapped_column(Integer)
    body_size: Mapped[int] = mapped_column(BigInteger)


class VersionFile(SealedFile, Base):
    """One file of a version: plaintext size and digest, where its ciphertext lives."""

    __tablename__ = "version_files"
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(1024))


class GrantRequest(Base):
    """A request for time- and byte-limited access; becomes a grant once M approvals arrive."""

    __tablename__ = "grant_requests"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[str] = mapped_column(String(64))
    requester: Mapped[str] = mapped_column(String(64), index=True)
    justification: Mapped[str] = mapped_column(Text)
    duration_s: Mapped[int] = mapped_column(Integer)
    byte_budget: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    request_expires_at: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    status: Mapped[str] = mapped_column(String(16))
    """``pending``, ``active``, ``denied`` or ``revoked`` (expiry is computed, not stored)."""
    approvals_required: Mapped[int] = mapped_column(Integer)
    activated_at: Mapped[dt.datetime | None] = mapped_column(_UtcDateTime(), nullable=True)
    grant_expires_at: Mapped[dt.datetime | None] = mapped_column(_UtcDateTime(), nullable=True)
    bytes_used: Mapped[int] = mapped_column(BigInteger, default=0)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(_UtcDateTime(), nullable=True)
    revoked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)


def _one_decision_each(parent: str, prefix: str) -> tuple[UniqueConstraint, ...]:
    """One decision per approver and one per key on each request or job (``parent``): a second
    or replayed decision is refused by the database too, whatever the checks before missed."""
    return (
        UniqueConstraint(parent, "approver", name=f"{prefix}_per_approver"),
        UniqueConstraint(parent, "key_id", name=f"{prefix}_per_key"),
    )


class SignedDecision:
    """The columns of every signed decision (a request's :class:`Approval`, a job's
    :class:`JobApproval`): the envelope exactly as the approver's key signed it, what it
    decided until when, and the audit entry that logged it."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True, sort_order=-1)
    approver: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(64))
    decision: Mapped[str] = mapped_column(String(16))
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    log_index: Mapped[int] = mapped_column(BigInteger)
    log_entry: Mapped[bytes] = mapped_column(LargeBinary)


class Approval(SignedDecision, Base):
    """A signed approval (or denial) statement, exactly as the approver's key signed it."""

    __tablename__ = "approvals"
    __table_args__ = _one_decision_each("request_id", "one_approval")
    request_id: Mapped[str] = mapped_column(ForeignKey("grant_requests.id"), index=True)


class Egress(Base):
    """Bytes released under a grant, debited before they are sent (sliding-window budgets)."""

    __tablename__ = "egress"
    __table_args__ = (
        Index("egress_principal_time", "principal", "time"),
        Index("egress_model_time", "model", "time"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    principal: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    grant_id: Mapped[str] = mapped_column(String(32))
    nbytes: Mapped[int] = mapped_column(BigInteger)


class EgressTotal(Base):
    """Every byte ever released to a principal (``kind`` ``principal``) or of a model
    (``model``): the counter a debit raises with one conditional ``UPDATE``.

    Bytes in a sliding window are this total less the egress rows older than the window (rows
    that no longer change), so the budget check needs no sum over rows other writers are adding.
    """

    __tablename__ = "egress_totals"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    subject: Mapped[str] = mapped_column(String(128), primary_key=True)
    total: Mapped[int] = mapped_column(BigInteger)


def core_table(model: type[Base]) -> Table:
    """The table of an ORM class, for Core statements (single conditional updates)."""
    return cast(Table, model.__table__)


def egress_subject(kind: str) -> Any:
    """The egress column a counter of ``kind`` sums."""
    return {"principal": Egress.principal, "model": Egress.model}[kind]


def create_egress_total(connection: Connection, kind: str, subject: str) -> bool:
    """Create the counter of ``kind``/``subject`` from the egress rows, unless it exists; whether
    this call created it.

    ``INSERT ... ON CONFLICT DO NOTHING``: replicas creating it at once agree (the loser waits
    for the winner's row, then does nothing), and a database made before the counters existed
    starts from its own history.
    """
    table = core_table(EgressTotal)
    column = egress_subject(kind)
    history = select(func.coalesce(func.sum(Egress.nbytes), 0)).where(column == subject)
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(table)
        .values(kind=kind, subject=subject, total=history.scalar_subquery())
        .on_conflict_do_nothing(index_elements=["kind", "subject"])
        .returning(table.c.total)
    )
    return connection.execute(statement).first() is not None


@event.listens_for(Egress, "after_insert")
def _count_egress(_mapper: Any, connection: Connection, target: Egress) -> None:
    """Egress recorded through the ORM (a job's released result) is counted too; pulls insert
    their rows with Core after raising the counters themselves, so they do not pass here."""
    table = core_table(EgressTotal)
    for kind, subject in (("principal", target.principal), ("model", target.model)):
        if not create_egress_total(connection, kind, subject):  # else: counted from the rows
            connection.execute(
                update(table)
                .where(table.c.kind == kind, table.c.subject == subject)
                .values(total=table.c.total + target.nbytes)
            )


class DeliveryHeader(Base):
    """The header re-wrapped for a grantee, kept so resumed byte ranges see the same bytes."""

    __tablename__ = "delivery_headers"
    grant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    file_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    header: Mapped[bytes] = mapped_column(LargeBinary)


class FingerprintedFile(SealedFile, Base):
    """A grant's own marked copy of one file (``policy.fingerprint``), stored encrypted like
    the original and made once, so every pull and resumed range of the grant sees the same
    bytes."""

    __tablename__ = "fingerprinted_files"
    grant_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    file_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint_id: Mapped[str] = mapped_column(String(64))


class Alert(Base):
    """An alert event (also written to the audit log and sent to the webhook)."""

    __tablename__ = "alerts"
    __table_args__ = (Index("alerts_kind_principal", "kind", "principal", "time"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    kind: Mapped[str] = mapped_column(String(64))
    principal: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str | None] = mapped_column(String(128), nullable=True)
    detail: Mapped[str] = mapped_column(Text)


class Denial(Base):
    """A refused request, counted for the "repeated denials" alert."""

    __tablename__ = "denials"
    __table_args__ = (Index("denials_subject_time", "subject", "time"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    subject: Mapped[str] = mapped_column(String(128))


class WebAuthnCredential(Base):
    """An approver's passkey, registered in the approver console (its public key is also in the
    audit log, so approvals it signs can be checked offline)."""

    __tablename__ = "webauthn_credentials"
    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """Hex SHA-256 of the public key (SubjectPublicKeyInfo DER); an approval's ``key_id``."""
    credential_id: Mapped[str] = mapped_column(String(1400), unique=True)
    """The authenticator's credential id, base64url."""
    principal: Mapped[str] = mapped_column(ForeignKey("principals.name"), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    """SubjectPublicKeyInfo DER (what ``audit verify`` checks assertions with)."""
    cose_key: Mapped[bytes] = mapped_column(LargeBinary)
    """The same key as the authenticator gave it (COSE_Key)."""
    algorithm: Mapped[int] = mapped_column(Integer)
    """COSE algorithm identifier (-7 ES256, -8 EdDSA, -257 RS256)."""
    sign_count: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(_UtcDateTime(), nullable=True)


class ConsoleSession(Base):
    """A console session (``kind`` ``session``) or a sign-in or registration page's state before
    there is one (``ceremony``): found by the SHA-256 of its cookie, with its CSRF token and the
    WebAuthn ceremony under way."""

    __tablename__ = "console_sessions"
    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    principal: Mapped[str | None] = mapped_column(String(64), nullable=True)
    csrf: Mapped[str] = mapped_column(String(64))
    ceremony: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(_UtcDateTime(), index=True)


class EnrolmentCode(Base):
    """A one-time code that lets an approver register a passkey (only its SHA-256 is kept)."""

    __tablename__ = "console_enrolments"
    code_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal: Mapped[str] = mapped_column(ForeignKey("principals.name"))
    issued_by: Mapped[str] = mapped_column(String(64))
    proof_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    """SHA-256 of the signed enrolment request that asked for it (each is accepted once)."""
    created_at: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    used_at: Mapped[dt.datetime | None] = mapped_column(_UtcDateTime(), nullable=True)


class Job(Base):
    """A structured-access job (:mod:`.jobs`): the request as it will run, its state, and what
    it produced (kept here until released once)."""

    __tablename__ = "jobs"
    __table_args__ = (Index("jobs_requester_model_time", "requester", "model", "created_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[str] = mapped_column(String(64))
    requester: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    justification: Mapped[str] = mapped_column(Text)
    request_json: Mapped[bytes] = mapped_column(LargeBinary)
    request_digest: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(16))
    approvals_required: Mapped[int] = mapped_column(Integer)
    wall_s: Mapped[int] = mapped_column(Integer)
    output_limit: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(_UtcDateTime())
    started_at: Mapped[dt.datetime | None] = mapped_column(_UtcDateTime(), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(_UtcDateTime(), nullable=True)
    outputs: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    outputs_digest: Mapped[str | None] = mapped_column(String(80), nullable=True)
    environment: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    derived_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    released_at: Mapped[dt.datetime | None] = mapped_column(_UtcDateTime(), nullable=True)
    released_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    release_log_index: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class JobApproval(SignedDecision, Base):
    """A signed approval (or denial) of a job, exactly as the approver's key signed it."""

    __tablename__ = "job_approvals"
    __table_args__ = _one_decision_each("job_id", "one_job_approval")
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)


def _sqlite_setup(engine: Engine, *, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)


class Store:
    """Engine + session factory for one database URL (``sqlite:///...`` or ``postgresql://...``)."""

    def __init__(self, url: str) -> None:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        self.url = url
        if url.startswith("sqlite"):
            args = {"check_same_thread": False, "timeout": 30}
            self.engine = create_engine(url, connect_args=args, pool_size=20, max_overflow=40)
            _sqlite_setup(self.engine, begin="BEGIN IMMEDIATE")
            # Readers take no write lock (WAL lets them run beside the one writer).
            self.read_engine = create_engine(url, connect_args=args, pool_size=20, max_overflow=40)
            _sqlite_setup(self.read_engine, begin="BEGIN")
            self.dialect = "sqlite"
        elif url.startswith("postgresql+psycopg://"):
            self.engine = create_engine(url, pool_size=20, max_overflow=40, pool_pre_ping=True)
            self.read_engine = self.engine
            self.dialect = "postgresql"
        else:
            raise UsageError(
                f"database location {url!r}: not a database URL",
                hint="expected sqlite:///PATH or postgresql://USER@HOST/DB",
                remedy="database",
            )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)

    def create_schema(self) -> None:
        """Create missing tables (idempotent; replicas may race, so errors on exists are fine)."""
        Base.metadata.create_all(self.engine, checkfirst=True)

    @contextmanager
    def session(self, *, read_only: bool = False) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any exception.

        Writing sessions start ``BEGIN IMMEDIATE`` on SQLite (writers queue for the lock up
        front instead of failing on an upgrade); ``read_only`` ones take no lock.
        """
        factory = self._read_sessions if read_only else self._sessions
        with factory() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()
