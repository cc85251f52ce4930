"""What differs between the SQL databases a log can live in: the store's SQL is shared.

A dialect holds only the differences: how to connect (and when a connection is stale), the
parameter placeholder, column types, the row lock a writer takes (``BEGIN IMMEDIATE`` locks the
whole SQLite file; PostgreSQL locks the size row with ``FOR UPDATE``), the checkpoint upsert,
bulk inserts (``executemany`` / ``COPY``), how many ids one query can carry (``IN`` lists /
an array literal), and how a missing or foreign database shows itself.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from weightvault.errors import InputError, Reason

_BATCH_PARAMS = 500  # ids per "IN (...)" query


class ColumnTypes(NamedTuple):
    """Column types by role (``{int64}`` etc. in the shared schema)."""

    int64: str
    blob: str
    real: str


class SqlDialect(Protocol):
    """The parts of a SQL log store that depend on the database."""

    param: str
    """The driver's parameter placeholder (``?`` or ``%s``)."""
    types: ColumnTypes
    lock_size: str
    """Appended to the writer's size query: takes the writer lock where a transaction did not."""
    upsert_checkpoint: str
    """Insert a checkpoint row or replace the one of the same size (parameters: size, note,
    created)."""
    proof_cache_bytes: int
    message_prefix: str
    """Put before messages about the database itself (its path, or nothing)."""

    def connect(self) -> Any:
        """A new autocommit connection (transactions are begun by :meth:`transaction`)."""

    def usable(self, conn: Any) -> bool:
        """Whether a thread's cached connection can still be used."""

    def transaction(self, conn: Any) -> contextlib.AbstractContextManager[None]:
        """A write transaction: committed on a clean exit, rolled back otherwise."""

    def reader(self, conn: Any) -> Any:
        """What hash reads execute on (the connection, or a cursor made for them)."""

    def reader_usable(self, reader: Any) -> bool:
        """Whether a thread's cached reader can still be used."""

    def insert_rows(
        self, conn: Any, table: str, columns: tuple[str, str], rows: Iterable[tuple[int, bytes]]
    ) -> None:
        """Insert many ``(int, bytes)`` rows inside the current transaction."""

    def read_ids(self, reader: Any, ids: Sequence[int]) -> dict[int, bytes]:
        """``tlog_hashes`` rows by id."""

    def read_ranges(self, reader: Any, ranges: Sequence[tuple[int, int]]) -> dict[int, bytes]:
        """``tlog_hashes`` rows for every id in the half-open ranges ``[lo, hi)``."""

    def check_new(self) -> None:
        """Refuse to create a log where one obviously exists already (before connecting)."""

    def already_exists(self, exc: Exception) -> InputError | None:
        """The error to raise when creating the schema failed because a log is there."""

    def check_exists(self) -> None:
        """Refuse to open a log that obviously does not exist (before connecting)."""

    def not_a_log(self, exc: Exception) -> InputError | None:
        """The error to raise when reading ``tlog_meta`` failed because this is not a log."""


class SQLiteDialect:
    """SQLite: WAL mode, every commit fsynced (``synchronous=FULL``) before it returns."""

    param = "?"
    types = ColumnTypes(int64="INTEGER", blob="BLOB", real="REAL")
    lock_size = ""  # BEGIN IMMEDIATE already holds the write lock
    upsert_checkpoint = (
        "INSERT OR REPLACE INTO tlog_checkpoints (size, note, created) VALUES (?, ?, ?)"
    )
    proof_cache_bytes = 0

    def __init__(self, path: Path) -> None:
        self.path = path
        self.message_prefix = f"{path}: "

    def connect(self) -> sqlite3.Connection:
        if not self.path.parent.is_dir():
            raise InputError(f"{self.path.parent}: folder does not exist")
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=60.0, check_same_thread=True
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=60000")
        # Proofs read ~log2(n) random rows: map the file instead of a pread() per page.
        conn.execute("PRAGMA mmap_size=1073741824")
        conn.execute("PRAGMA cache_size=-32768")
        return conn

    def usable(self, conn: Any) -> bool:
        return True

    @contextlib.contextmanager
    def transaction(self, conn: Any) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")  # takes the write lock now: writers are serialized
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT can leave the transaction open, holding the write lock.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise

    def reader(self, conn: Any) -> Any:
        return conn

    def reader_usable(self, reader: Any) -> bool:
        return True

    def insert_rows(
        self, conn: Any, table: str, columns: tuple[str, str], rows: Iterable[tuple[int, bytes]]
    ) -> None:
        conn.executemany(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES (?, ?)",  # noqa: S608 - constants
            rows,
        )

    def read_ids(self, reader: Any, ids: Sequence[int]) -> dict[int, bytes]:
        if len(ids) <= _BATCH_PARAMS:  # the proof path: one query, no chunking
            marks = ",".join("?" * len(ids))
            query = f"SELECT id, hash FROM tlog_hashes WHERE id IN ({marks})"  # noqa: S608 - "?"
            return dict(reader.execute(query, list(ids)).fetchall())
        found: dict[int, bytes] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _BATCH_PARAMS):
            chunk = unique[start : start + _BATCH_PARAMS]
            marks = ",".join("?" * len(chunk))
            for row_id, value in reader.execute(
                f"SELECT id, hash FROM tlog_hashes WHERE id IN ({marks})",  # noqa: S608 - only "?"
                chunk,
            ):
                found[row_id] = value
        return found

    def read_ranges(self, reader: Any, ranges: Sequence[tuple[int, int]]) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        for lo, hi in ranges:  # indexed range scans cost nothing without a round trip
            found.update(
                reader.execute(
                    "SELECT id, hash FROM tlog_hashes WHERE id >= ? AND id < ?", (lo, hi)
                ).fetchall()
            )
        return found

    def check_new(self) -> None:
        if self.path.exists() and self.path.stat().st_size > 0:
            raise InputError(
                f"{self.path}: already exists; choose a new path for a new log",
                reason=Reason.EXISTS,
            )

    def already_exists(self, exc: Exception) -> InputError | None:
        if isinstance(exc, sqlite3.OperationalError) and "already exists" in str(exc):
            # another process was first (SQLite says so only in words: no code of its own)
            return InputError(f"{self.path}: already holds a log", reason=Reason.EXISTS)
        return None

    def check_exists(self) -> None:
        if not self.path.is_file():
            raise InputError(
                f"{self.path}: no such log; create it with 'weightvault log init'",
                reason=Reason.NOT_FOUND,
            )

    def not_a_log(self, exc: Exception) -> InputError | None:
        if isinstance(exc, sqlite3.DatabaseError):
            return InputError(f"{self.path}: not a weightvault log ({exc})")
        return None


class PostgresDialect:
    """PostgreSQL through ``psycopg`` 3 (imported only when a PostgreSQL log is used)."""

    param = "%s"
    types = ColumnTypes(int64="BIGINT", blob="BYTEA", real="DOUBLE PRECISION")
    lock_size = " FOR UPDATE"
    upsert_checkpoint = (
        "INSERT INTO tlog_checkpoints (size, note, created) VALUES (%s, %s, %s) "
        "ON CONFLICT (size) DO UPDATE SET note = EXCLUDED.note, created = EXCLUDED.created"
    )
    # Every read is a server round trip (~0.1 ms): proofs keep up to 64 MiB of 256-leaf tiles
    # in the process (a 1,000,000-entry tree's every tile) so most proofs need no query.
    proof_cache_bytes = 64 << 20
    message_prefix = ""

    def __init__(self, dsn: str, location: str) -> None:
        self.dsn = dsn
        self.location = location  # what messages show: never the password

    def connect(self) -> Any:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - extra not installed
            raise InputError(
                "PostgreSQL support needs psycopg", hint="pip install 'weightvault[postgres]'"
            ) from exc
        try:
            return psycopg.connect(self.dsn, autocommit=True)
        except psycopg.Error as exc:
            detail = " ".join(str(exc).split()).replace(self.dsn, self.location)
            raise InputError(f"cannot connect to PostgreSQL at {self.location}: {detail}") from exc

    def usable(self, conn: Any) -> bool:
        return not conn.closed

    def transaction(self, conn: Any) -> contextlib.AbstractContextManager[None]:
        transaction: contextlib.AbstractContextManager[None] = conn.transaction()
        return transaction

    def reader(self, conn: Any) -> Any:
        return conn.cursor(binary=True)  # kept per thread: proofs issue one query each

    def reader_usable(self, reader: Any) -> bool:
        return not reader.closed

    def insert_rows(
        self, conn: Any, table: str, columns: tuple[str, str], rows: Iterable[tuple[int, bytes]]
    ) -> None:
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def read_ids(self, reader: Any, ids: Sequence[int]) -> dict[int, bytes]:
        # The ids travel as one array literal (ints only, so no quoting issue): adapting a Python
        # list element by element costs more client CPU than the query itself.
        literal = "{" + ",".join(str(int(i)) for i in dict.fromkeys(ids)) + "}"
        rows = reader.execute(
            "SELECT id, hash FROM tlog_hashes WHERE id = ANY(%s::bigint[])", (literal,)
        ).fetchall()
        return {int(i): bytes(h) for i, h in rows}

    def read_ranges(self, reader: Any, ranges: Sequence[tuple[int, int]]) -> dict[int, bytes]:
        if not ranges:
            return {}
        # One query for all ranges; the bounds are ints, so literals need no quoting.
        where = " OR ".join(f"(id >= {int(lo)} AND id < {int(hi)})" for lo, hi in ranges)
        rows = reader.execute(f"SELECT id, hash FROM tlog_hashes WHERE {where}").fetchall()  # noqa: S608 - ints only
        return {int(i): bytes(h) for i, h in rows}

    def check_new(self) -> None:
        return None

    def already_exists(self, exc: Exception) -> InputError | None:
        import psycopg

        if isinstance(exc, psycopg.errors.DuplicateTable | psycopg.errors.UniqueViolation):
            return InputError(
                "this database already holds a log; use a new database", reason=Reason.EXISTS
            )
        return None

    def check_exists(self) -> None:
        return None

    def not_a_log(self, exc: Exception) -> InputError | None:
        import psycopg

        if isinstance(exc, psycopg.errors.UndefinedTable):
            return InputError("this database holds no log; create it with 'weightvault log init'")
        return None
