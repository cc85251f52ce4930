"""Where a log keeps its entries, stored subtree hashes and signed checkpoints.

One small interface, two backends: SQLite (embedded default: WAL, ``synchronous=FULL``, so a
commit is durable when it returns) and PostgreSQL (``psycopg`` 3). Backends only move rows;
the Merkle math lives in :mod:`weightvault.tlog.log`, so both behave identically.

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
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from weightvault.errors import FormatError, InputError

__all__ = [
    "LogStore",
    "PostgresStore",
    "SQLiteStore",
    "StoreWriter",
    "open_store",
    "redact_dsn",
]

SCHEMA_VERSION = "1"
_BATCH_PARAMS = 500  # ids per "IN (...)" query


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
# SQLite
# --------------------------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE tlog_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tlog_state (id INTEGER PRIMARY KEY CHECK (id = 1), size INTEGER NOT NULL);
CREATE TABLE tlog_entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE tlog_hashes (id INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE tlog_checkpoints (size INTEGER PRIMARY KEY, note BLOB NOT NULL, created REAL NOT NULL);
INSERT INTO tlog_state (id, size) VALUES (1, 0);
"""


class _SQLiteWriter(StoreWriter):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def size(self) -> int:
        row = self._conn.execute("SELECT size FROM tlog_state WHERE id = 1").fetchone()
        return int(row[0])

    def read_hashes(self, ids: Sequence[int]) -> dict[int, bytes]:
        return _sqlite_read_hashes(self._conn, ids)

    def write(
        self, first_index: int, entries: Sequence[bytes], hashes: Sequence[tuple[int, bytes]]
    ) -> None:
        self._conn.executemany(
            "INSERT INTO tlog_entries (idx, data) VALUES (?, ?)",
            ((first_index + i, e) for i, e in enumerate(entries)),
        )
        self._conn.executemany("INSERT INTO tlog_hashes (id, hash) VALUES (?, ?)", hashes)
        self._conn.execute(
            "UPDATE tlog_state SET size = ? WHERE id = 1", (first_index + len(entries),)
        )

    def latest_checkpoint(self) -> tuple[int, bytes] | None:
        row = self._conn.execute(
            "SELECT size, note FROM tlog_checkpoints ORDER BY size DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def put_checkpoint(self, size: int, note: bytes) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO tlog_checkpoints (size, note, created) VALUES (?, ?, ?)",
            (size, note, time.time()),
        )


def _sqlite_read_hashes(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, bytes]:
    if len(ids) <= _BATCH_PARAMS:  # the proof path: one query, no chunking
        marks = ",".join("?" * len(ids))
        query = f"SELECT id, hash FROM tlog_hashes WHERE id IN ({marks})"  # noqa: S608 - only "?"
        return dict(conn.execute(query, list(ids)).fetchall())
    found: dict[int, bytes] = {}
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), _BATCH_PARAMS):
        chunk = unique[start : start + _BATCH_PARAMS]
        marks = ",".join("?" * len(chunk))
        for row_id, value in conn.execute(
            f"SELECT id, hash FROM tlog_hashes WHERE id IN ({marks})",  # noqa: S608 - only "?"
            chunk,
        ):
            found[row_id] = value
    return found


class SQLiteStore(LogStore):
    """A log in one SQLite file (WAL mode; every commit fsynced before it returns)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self._local = threading.local()
        self._pid = os.getpid()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._pid != os.getpid():
            if not self.path.parent.is_dir():
                raise InputError(f"{self.path.parent}: folder does not exist")
            self._pid = os.getpid()
            conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=60.0, check_same_thread=True
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=60000")
            # Proofs read ~log2(n) random rows: map the file instead of a pread() per page.
            conn.execute("PRAGMA mmap_size=1073741824")
            conn.execute("PRAGMA cache_size=-32768")
            self._local.conn = conn
        return conn

    def initialize(self, origin: str) -> None:
        if self.path.exists() and self.path.stat().st_size > 0:
            raise InputError(f"{self.path}: already exists; choose a new path for a new log")
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SQLITE_SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.executemany(
                "INSERT INTO tlog_meta (key, value) VALUES (?, ?)",
                [("origin", origin), ("schema", SCHEMA_VERSION)],
            )
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            conn.execute("ROLLBACK")
            if "already exists" in str(exc):  # another process created it first
                raise InputError(f"{self.path}: already holds a log") from exc
            raise
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def meta(self) -> dict[str, str]:
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such log; create it with 'weightvault log init'")
        try:
            rows = self._conn().execute("SELECT key, value FROM tlog_meta").fetchall()
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{self.path}: not a weightvault log ({exc})") from exc
        meta = {str(k): str(v) for k, v in rows}
        if meta.get("schema") != SCHEMA_VERSION:
            raise FormatError(f"{self.path}: unsupported log schema {meta.get('schema')!r}")
        return meta

    def size(self) -> int:
        row = self._conn().execute("SELECT size FROM tlog_state WHERE id = 1").fetchone()
        return int(row[0])

    def read_hashes(self, ids: Sequence[int]) -> dict[int, bytes]:
        return _sqlite_read_hashes(self._conn(), ids)

    def read_hash_ranges(self, ranges: Sequence[tuple[int, int]]) -> dict[int, bytes]:
        conn = self._conn()
        found: dict[int, bytes] = {}
        for lo, hi in ranges:
            found.update(
                conn.execute(
                    "SELECT id, hash FROM tlog_hashes WHERE id >= ? AND id < ?", (lo, hi)
                ).fetchall()
            )
        return found

    def read_entries(self, lo: int, hi: int) -> list[bytes]:
        rows = (
            self._conn()
            .execute(
                "SELECT data FROM tlog_entries WHERE idx >= ? AND idx < ? ORDER BY idx", (lo, hi)
            )
            .fetchall()
        )
        return [bytes(r[0]) for r in rows]

    def checkpoints(self) -> list[tuple[int, bytes]]:
        rows = (
            self._conn().execute("SELECT size, note FROM tlog_checkpoints ORDER BY size").fetchall()
        )
        return [(int(s), bytes(n)) for s, n in rows]

    @contextlib.contextmanager
    def writer(self) -> Iterator[StoreWriter]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")  # takes the write lock now: writers are serialized
        try:
            yield _SQLiteWriter(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------

_PG_SCHEMA = [
    "CREATE TABLE tlog_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE tlog_state (id INTEGER PRIMARY KEY CHECK (id = 1), size BIGINT NOT NULL)",
    "CREATE TABLE tlog_entries (idx BIGINT PRIMARY KEY, data BYTEA NOT NULL)",
    "CREATE TABLE tlog_hashes (id BIGINT PRIMARY KEY, hash BYTEA NOT NULL)",
    "CREATE TABLE tlog_checkpoints (size BIGINT PRIMARY KEY, note BYTEA NOT NULL,"
    " created DOUBLE PRECISION NOT NULL)",
    "INSERT INTO tlog_state (id, size) VALUES (1, 0)",
]


class _PostgresWriter(StoreWriter):
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def size(self) -> int:
        row = self._conn.execute("SELECT size FROM tlog_state WHERE id = 1 FOR UPDATE").fetchone()
        return int(row[0])

    def read_hashes(self, ids: Sequence[int]) -> dict[int, bytes]:
        return _pg_read_hashes(self._conn.cursor(binary=True), ids)

    def write(
        self, first_index: int, entries: Sequence[bytes], hashes: Sequence[tuple[int, bytes]]
    ) -> None:
        with self._conn.cursor() as cur:
            with cur.copy("COPY tlog_entries (idx, data) FROM STDIN") as copy:
                for i, entry in enumerate(entries):
                    copy.write_row((first_index + i, entry))
            with cur.copy("COPY tlog_hashes (id, hash) FROM STDIN") as copy:
                for row in hashes:
                    copy.write_row(row)
            cur.execute(
                "UPDATE tlog_state SET size = %s WHERE id = 1", (first_index + len(entries),)
            )

    def latest_checkpoint(self) -> tuple[int, bytes] | None:
        row = self._conn.execute(
            "SELECT size, note FROM tlog_checkpoints ORDER BY size DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    def put_checkpoint(self, size: int, note: bytes) -> None:
        self._conn.execute(
            "INSERT INTO tlog_checkpoints (size, note, created) VALUES (%s, %s, %s) "
            "ON CONFLICT (size) DO UPDATE SET note = EXCLUDED.note, created = EXCLUDED.created",
            (size, note, time.time()),
        )


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


def _pg_read_hashes(cursor: Any, ids: Sequence[int]) -> dict[int, bytes]:
    # The ids travel as one array literal (ints only, so no quoting issue): adapting a Python
    # list element by element costs more client CPU than the query itself.
    literal = "{" + ",".join(str(int(i)) for i in dict.fromkeys(ids)) + "}"
    rows = cursor.execute(
        "SELECT id, hash FROM tlog_hashes WHERE id = ANY(%s::bigint[])", (literal,)
    ).fetchall()
    return {int(i): bytes(h) for i, h in rows}


class PostgresStore(LogStore):
    """A log in a PostgreSQL database (tables prefixed ``tlog_``); needs ``psycopg`` 3."""

    # Every read is a server round trip (~0.1 ms): proofs keep up to 64 MiB of 256-leaf tiles
    # in the process (a 1,000,000-entry tree's every tile) so most proofs need no query.
    proof_cache_bytes = 64 << 20

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.location = redact_dsn(dsn)  # what messages show: never the password
        self._local = threading.local()
        self._pid = os.getpid()

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or self._pid != os.getpid():
            try:
                import psycopg
            except ImportError as exc:  # pragma: no cover - extra not installed
                raise InputError(
                    "PostgreSQL support needs psycopg", hint="pip install 'weightvault[postgres]'"
                ) from exc
            self._pid = os.getpid()
            try:
                conn = psycopg.connect(self.dsn, autocommit=True)
            except psycopg.Error as exc:
                detail = " ".join(str(exc).split()).replace(self.dsn, self.location)
                raise InputError(
                    f"cannot connect to PostgreSQL at {self.location}: {detail}"
                ) from exc
            self._local.conn = conn
        return conn

    def initialize(self, origin: str) -> None:
        import psycopg

        conn = self._conn()
        try:
            with conn.transaction():
                for statement in _PG_SCHEMA:
                    conn.execute(statement)
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO tlog_meta (key, value) VALUES (%s, %s)",
                        [("origin", origin), ("schema", SCHEMA_VERSION)],
                    )
        except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation) as exc:
            raise InputError("this database already holds a log; use a new database") from exc

    def meta(self) -> dict[str, str]:
        import psycopg

        try:
            rows = self._conn().execute("SELECT key, value FROM tlog_meta").fetchall()
        except psycopg.errors.UndefinedTable as exc:
            raise InputError(
                "this database holds no log; create it with 'weightvault log init'"
            ) from exc
        meta = {str(k): str(v) for k, v in rows}
        if meta.get("schema") != SCHEMA_VERSION:
            raise FormatError(f"unsupported log schema {meta.get('schema')!r}")
        return meta

    def size(self) -> int:
        row = self._conn().execute("SELECT size FROM tlog_state WHERE id = 1").fetchone()
        return int(row[0])

    def read_hashes(self, ids: Sequence[int]) -> dict[int, bytes]:
        conn = self._conn()
        cursor = getattr(self._local, "cursor", None)
        if cursor is None or cursor.connection is not conn or cursor.closed:
            cursor = conn.cursor(binary=True)  # reused: proofs issue one query each
            self._local.cursor = cursor
        return _pg_read_hashes(cursor, ids)

    def read_hash_ranges(self, ranges: Sequence[tuple[int, int]]) -> dict[int, bytes]:
        if not ranges:
            return {}
        conn = self._conn()
        cursor = getattr(self._local, "cursor", None)
        if cursor is None or cursor.connection is not conn or cursor.closed:
            cursor = conn.cursor(binary=True)
            self._local.cursor = cursor
        # One query for all ranges; the bounds are ints, so literals need no quoting.
        where = " OR ".join(f"(id >= {int(lo)} AND id < {int(hi)})" for lo, hi in ranges)
        rows = cursor.execute(f"SELECT id, hash FROM tlog_hashes WHERE {where}").fetchall()  # noqa: S608 - ints only
        return {int(i): bytes(h) for i, h in rows}

    def read_entries(self, lo: int, hi: int) -> list[bytes]:
        rows = (
            self._conn()
            .execute(
                "SELECT data FROM tlog_entries WHERE idx >= %s AND idx < %s ORDER BY idx", (lo, hi)
            )
            .fetchall()
        )
        return [bytes(r[0]) for r in rows]

    def checkpoints(self) -> list[tuple[int, bytes]]:
        rows = (
            self._conn().execute("SELECT size, note FROM tlog_checkpoints ORDER BY size").fetchall()
        )
        return [(int(s), bytes(n)) for s, n in rows]

    @contextlib.contextmanager
    def writer(self) -> Iterator[StoreWriter]:
        conn = self._conn()
        with conn.transaction():
            yield _PostgresWriter(conn)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            self._local.cursor = None
