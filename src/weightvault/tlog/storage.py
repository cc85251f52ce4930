"""Where a log keeps its entries, stored subtree hashes and signed checkpoints.

One small interface, one SQL implementation (:class:`SqlStore`), two dialects: SQLite (embedded
default: WAL, ``synchronous=FULL``, so a commit is durable when it returns) and PostgreSQL
(``psycopg`` 3); :mod:`weightvault.tlog._dialects` holds what differs between them. Stores only
move rows; the Merkle math lives in :mod:`weightvault.tlog.log`, so both behave identically.

Rows (the same in both backends):

* ``tlog_meta(key, value)``: ``origin`` and ``schema`` version;
* ``tlog_state(id=1, size)``: the tree size, locked by every writer (no gaps, no duplicates);
* ``tlog_entries(idx, data)``: the entries;
* ``tlog_hashes(id, hash)``: every complete subtree's hash, keyed by
  :func:`~weightvault.tlog.merkle.stored_hash_id` (append order, so inserts are sequential);
* ``tlog_checkpoints(size, note, created)``: every checkpoint the log signed.
"""

from __future__ import annotations

import abc
import contextlib
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from weightvault.errors import FormatError
from weightvault.tlog._dialects import PostgresDialect, SqlDialect, SQLiteDialect

__all__ = [
    "LogStore",
    "PostgresStore",
    "SQLiteStore",
    "SqlStore",
    "StoreWriter",
    "open_store",
    "redact_dsn",
]

SCHEMA_VERSION = "1"


class StoreWriter(abc.ABC):
    """One write transaction; the tree size row is locked for its whole life."""

    @abc.abstractmethod
    def size(self) -> int:
        """The committed tree size (read under the writer lock)."""

    @abc.abstractmethod
    def read_hashes(self, ids: Sequence[int]) -> dict[int, bytes]:
        """Stored hashes by id, inside this transaction."""

    @abc.abstractmethod
    def write(
        self, first_index: int, entries: Sequence[bytes], hashes: Sequence[tuple[int, bytes]]
    ) -> None:
        """Insert entries from ``first_index`` on, their new hashes, and bump the size."""

    @abc.abstractmethod
    def latest_checkpoint(self) -> tuple[int, bytes] | None:
        """The largest signed checkpoint as ``(size, note bytes)``."""

    @abc.abstractmethod
    def put_checkpoint(self, size: int, note: bytes) -> None:
        """Record a signed checkpoint (replaces one of the same size)."""


class LogStore(abc.ABC):
    """Storage for one log. Safe to share between threads; each thread gets its connection."""

    location: str
    proof_cache_bytes: int = 0
    """Default bound on a log's proof-tile cache over this store (see ``TransparencyLog``)."""

    @abc.abstractmethod
    def initialize(self, origin: str) -> None:
        """Create the tables for a new, empty log; refuses an existing log."""

    @abc.abstractmethod
    def meta(self) -> dict[str, str]:
        """The ``tlog_meta`` rows (raises :class:`InputError` when this is not a log)."""

    @abc.abstractmethod
    def size(self) -> int:
        """The committed tree size."""

    @abc.abstractmethod
    def read_hashes(self, ids: Sequence[int]) -> dict[int, bytes]:
        """Stored hashes by id (only ids below the committed size's count are meaningful)."""

    def read_hash_ranges(self, ranges: Sequence[tuple[int, int]]) -> dict[int, bytes]:
        """Stored hashes for every id in the half-open id ranges ``[lo, hi)``, in one read.

        Used to fetch whole proof tiles (a complete subtree's hashes have consecutive ids).
        Backends override this with range scans; this fallback lists the ids.
        """
        return self.read_hashes([i for lo, hi in ranges for i in range(lo, hi)])

    @abc.abstractmethod
    def read_entries(self, lo: int, hi: int) -> list[bytes]:
        """Entries ``[lo, hi)`` in order."""

    @abc.abstractmethod
    def checkpoints(self) -> list[tuple[int, bytes]]:
        """Every signed checkpoint, by size."""

    @abc.abstractmethod
    def writer(self) -> contextlib.AbstractContextManager[StoreWriter]:
        """A write transaction, committed durably on a clean exit, rolled back otherwise."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close this thread's connection."""


def open_store(location: str | Path) -> LogStore:
    """A store for ``location``: a ``postgresql://`` URL, or a SQLite file path."""
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")) or text.startswith("host="):
        return PostgresStore(text)
    return SQLiteStore(Path(text))


# --------------------------------------------------------------------------------------------
# One SQL implementation for both databases
# --------------------------------------------------------------------------------------------

_SCHEMA = (
    "CREATE TABLE tlog_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE tlog_state (id INTEGER PRIMARY KEY CHECK (id = 1), size {int64} NOT NULL)",
    "CREATE TABLE tlog_entries (idx {int64} PRIMARY KEY, data {blob} NOT NULL)",
    "CREATE TABLE tlog_hashes (id {int64} PRIMARY KEY, hash {blob} NOT NULL)",
    "CREATE TABLE tlog_checkpoints (size {int64} PRIMARY KEY, note {blob} NOT NULL,"
    " created {real} NOT NULL)",
    "INSERT INTO tlog_state (id, size) VALUES (1, 0)",
)
_SELECT_SIZE = "SELECT size FROM tlog_state WHERE id = 1"
_SELECT_LATEST_CHECKPOINT = "SELECT size, note FROM tlog_checkpoints ORDER BY size DESC LIMIT 1"
_SELECT_CHECKPOINTS = "SELECT size, note FROM tlog_checkpoints ORDER BY size"


def _bind(statement: str, dialect: SqlDialect) -> str:
    """``statement`` written with ``?`` placeholders, in the dialect's placeholder style."""
    return statement.replace("?", dialect.param)


class _SqlWriter(StoreWriter):
    def __init__(self, conn: Any, dialect: SqlDialect) -> None:
        self._conn = conn
        self._dialect = dialect
        # Fencing: the new size is written only over the size this writer read under the
        # lock, so a writer that lost its lock (or a store that took none) cannot commit.
        self._update_size = _bind(
            "UPDATE tlog_state SET size = ? WHERE id = 1 AND size = ?", dialect
        )

    def size(self) -> int:
        row = self._conn.execute(_SELECT_SIZE + self._dialect.lock_size).fetchone()
        return int(row[0])

    def read_hashes(self, ids: Sequence[int]) -> dict[int, bytes]:
        return self._dialect.read_ids(self._dialect.reader(self._conn), ids)

    def write(
        self, first_index: int, entries: Sequence[bytes], hashes: Sequence[tuple[int, bytes]]
    ) -> None:
        self._dialect.insert_rows(
            self._conn,
            "tlog_entries",
            ("idx", "data"),
            ((first_index + i, e) for i, e in enumerate(entries)),
        )
        self._dialect.insert_rows(self._conn, "tlog_hashes", ("id", "hash"), hashes)
        updated = self._conn.execute(self._update_size, (first_index + len(entries), first_index))
        if updated.rowcount != 1:
            raise FormatError("the log's size moved under its sequencer; nothing was appended")

    def latest_checkpoint(self) -> tuple[int, bytes] | None:
        row = self._conn.execute(_SELECT_LATEST_CHECKPOINT).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def put_checkpoint(self, size: int, note: bytes) -> None:
        self._conn.execute(self._dialect.upsert_checkpoint, (size, note, time.time()))


class SqlStore(LogStore):
    """A log in a SQL database; ``dialect`` says which. Each thread gets its own connection
    (opened again after a fork), and hash reads reuse one reader per thread."""

    def __init__(self, dialect: SqlDialect, location: str) -> None:
        self.location = location
        self.proof_cache_bytes = dialect.proof_cache_bytes
        self._dialect = dialect
        self._local = threading.local()
        self._pid = os.getpid()
        self._insert_meta = _bind("INSERT INTO tlog_meta (key, value) VALUES (?, ?)", dialect)
        self._select_entries = _bind(
            "SELECT data FROM tlog_entries WHERE idx >= ? AND idx < ? ORDER BY idx", dialect
        )

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or not self._dialect.usable(conn) or self._pid != os.getpid():
            self._pid = os.getpid()
            conn = self._dialect.connect()
            self._local.conn = conn
        return conn

    def _reader(self) -> Any:
        conn = self._conn()
        cached = getattr(self._local, "reader", None)
        if cached is None or cached[0] is not conn or not self._dialect.reader_usable(cached[1]):
            cached = (conn, self._dialect.reader(conn))
            self._local.reader = cached
        return cached[1]

    def initialize(self, origin: str) -> None:
        self._dialect.check_new()
        conn = self._conn()
        try:
            with self._dialect.transaction(conn):
                for statement in _SCHEMA:
                    conn.execute(statement.format(**self._dialect.types._asdict()))
                conn.execute(self._insert_meta, ("origin", origin))
                conn.execute(self._insert_meta, ("schema", SCHEMA_VERSION))
        except Exception as exc:
            error = self._dialect.already_exists(exc)
            if error is None:
                raise
            raise error from exc

    def meta(self) -> dict[str, str]:
        self._dialect.check_exists()
        try:
            rows = self._conn().execute("SELECT key, value FROM tlog_meta").fetchall()
        except Exception as exc:
            error = self._dialect.not_a_log(exc)
            if error is None:
                raise
            raise error from exc
        meta = {str(k): str(v) for k, v in rows}
        if meta.get("schema") != SCHEMA_VERSION:
            raise FormatError(
                f"{self._dialect.message_prefix}unsupported log schema {meta.get('schema')!r}"
            )
        return meta

    def size(self) -> int:
        row = self._conn().execute(_SELECT_SIZE).fetchone()
        return int(row[0])

    def read_hashes(self, ids: Sequence[int]) -> dict[int, bytes]:
        return self._dialect.read_ids(self._reader(), ids)

    def read_hash_ranges(self, ranges: Sequence[tuple[int, int]]) -> dict[int, bytes]:
        return self._dialect.read_ranges(self._reader(), ranges)

    def read_entries(self, lo: int, hi: int) -> list[bytes]:
        rows = self._conn().execute(self._select_entries, (lo, hi)).fetchall()
        return [bytes(r[0]) for r in rows]

    def checkpoints(self) -> list[tuple[int, bytes]]:
        rows = self._conn().execute(_SELECT_CHECKPOINTS).fetchall()
        return [(int(s), bytes(n)) for s, n in rows]

    @contextlib.contextmanager
    def writer(self) -> Iterator[StoreWriter]:
        conn = self._conn()
        with self._dialect.transaction(conn):
            yield _SqlWriter(conn, self._dialect)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            self._local.reader = None


class SQLiteStore(SqlStore):
    """A log in one SQLite file (WAL mode; every commit fsynced before it returns)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        super().__init__(SQLiteDialect(self.path), str(self.path))


class PostgresStore(SqlStore):
    """A log in a PostgreSQL database (tables prefixed ``tlog_``); needs ``psycopg`` 3."""

    proof_cache_bytes = PostgresDialect.proof_cache_bytes

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        location = redact_dsn(dsn)  # what messages show: never the password
        super().__init__(PostgresDialect(dsn, location), location)


def redact_dsn(dsn: str) -> str:
    """The DSN without its password (URL or key=value form), for messages."""
    import re
    import urllib.parse

    if "://" in dsn:
        parts = urllib.parse.urlsplit(dsn)
        if parts.password is not None:
            host = parts.hostname or ""
            if parts.port is not None:
                host = f"{host}:{parts.port}"
            user = urllib.parse.quote(parts.username or "", safe="")
            parts = parts._replace(netloc=f"{user}:***@{host}")
        query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
        return urllib.parse.urlunsplit(parts._replace(query=query))
    return re.sub(r"(?i)(password\s*=\s*)('[^']*'|\S+)", r"\1***", dsn)
