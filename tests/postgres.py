"""A real PostgreSQL server for tests: a reusable helper (import it explicitly; not a conftest).

Usage::

    import pytest
    from tests.postgres import PostgresServer, start_postgres

    @pytest.fixture(scope="session")
    def postgres(tmp_path_factory) -> Iterator[PostgresServer]:
        server = start_postgres(tmp_path_factory)
        yield server
        server.stop()

    def test_something(postgres):
        dsn = postgres.create_database()   # a fresh, empty database per test
        dsn = postgres.create_schema()     # cheaper: a fresh schema (search_path in the DSN)
        ...                                # or postgres.dsn for the default "postgres" database

What :func:`start_postgres` does: runs Debian's ``initdb`` (``/usr/lib/postgresql/*/bin``) into a
fresh folder, starts ``postgres`` listening on a random free port on 127.0.0.1 and on a unix
socket in that folder, and waits until it accepts connections. PostgreSQL refuses to run as root,
so when the tests run as root the folder is owned by, and the server runs as, the ``postgres``
system user (``runuser -u postgres --``). :meth:`PostgresServer.stop_server` and
:meth:`PostgresServer.start_server` stop and start the same server on the same data folder and
port (a fault test restarts the database under live clients). The folder lives in the system
temp dir (pytest's ``tmp_path`` is private to root), and :meth:`PostgresServer.stop` stops the
server (immediate shutdown: nothing is kept, so no final checkpoint) and deletes it. Each call
gives an independent server, so ``pytest -n`` workers never share one. Authentication is
``trust`` on the loopback and the socket only.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PostgresServer", "find_postgres_bin", "postgres_available", "start_postgres"]


def find_postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has initdb and postgres."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    for candidate in reversed(candidates):
        path = Path(candidate)
        if (path / "initdb").exists() and (path / "postgres").exists():
            return path
    return None


def postgres_available() -> bool:
    return find_postgres_bin() is not None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A running server; ``dsn`` connects to its ``postgres`` database as ``user``."""

    root: Path
    port: int
    user: str
    process: subprocess.Popen[bytes]
    log_path: Path
    bin_dir: Path
    prefix: list[str]
    max_connections: int = 100
    _databases: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def socket_dir(self) -> Path:
        return self.root

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (random name by default) and return its DSN."""
        import psycopg

        name = name or f"db_{secrets.token_hex(6)}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._databases.append(name)
        return self.dsn_for(name)

    def create_schema(self, name: str | None = None) -> str:
        """Create an empty schema in the default database; its DSN sets ``search_path``.

        Much cheaper than :meth:`create_database` (no template copy), so use it for
        one-per-test isolation of code that uses unqualified table names.
        """
        import psycopg

        name = name or f"s_{secrets.token_hex(6)}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.dsn}?options=-csearch_path%3D{name}"

    def stop_server(self, mode: str = "immediate") -> None:
        """Stop the server, keeping its data folder: ``immediate`` is a crash (no checkpoint; the
        next start replays the WAL, so committed transactions survive), ``fast`` a clean stop.
        Returns once the server process has exited and clients are refused."""
        if self.process.poll() is None:
            subprocess.run(
                [
                    *self.prefix,
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.root / "data"),
                    "stop",
                    "-m",
                    mode,
                    "-w",
                    "-t",
                    "30",
                ],
                capture_output=True,
                check=False,
            )
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def start_server(self, timeout: float = 60.0) -> None:
        """Start the server again on its data folder and port (after :meth:`stop_server`);
        returns once it accepts connections."""
        if self.process.poll() is None:
            raise RuntimeError("postgres is already running")
        self.process = _launch(
            self.bin_dir, self.root, self.port, self.prefix, self.log_path, self.max_connections
        )
        _wait_ready(self, timeout)

    def stop(self) -> None:
        """Immediate shutdown (the data is thrown away: no checkpoint), then delete the folder."""
        self.stop_server("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_postgres(
    tmp_path_factory: Any = None, *, timeout: float = 60.0, max_connections: int = 100
) -> PostgresServer:
    """Initialise and start a private PostgreSQL server; the caller must :meth:`stop` it.

    ``tmp_path_factory`` is accepted for a pytest-friendly signature; the server's files live in
    a folder of their own in the system temp dir (the ``postgres`` user must be able to reach
    them) and are removed by :meth:`PostgresServer.stop`.
    """
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        raise RuntimeError(
            "PostgreSQL is not installed (apt-get install postgresql): these tests need it"
        )
    as_root = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="wv-pg-"))
    data = root / "data"
    log_path = root / "server.log"
    user = "postgres" if as_root else (os.environ.get("USER") or "postgres")
    prefix: list[str] = []
    if as_root:
        import pwd

        entry = pwd.getpwnam("postgres")
        os.chown(root, entry.pw_uid, entry.pw_gid)
        os.chmod(root, 0o700)
        prefix = ["runuser", "-u", "postgres", "--"]
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    init = subprocess.run(
        [
            *prefix,
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            user,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr.strip() or init.stdout.strip()}")
    port = _free_port()
    log_path.touch()
    if as_root:
        os.chown(log_path, entry.pw_uid, entry.pw_gid)
    process = _launch(bin_dir, root, port, prefix, log_path, max_connections)
    server = PostgresServer(
        root=root,
        port=port,
        user=user,
        process=process,
        log_path=log_path,
        bin_dir=bin_dir,
        prefix=prefix,
        max_connections=max_connections,
    )
    _wait_ready(server, timeout)
    return server


def _launch(
    bin_dir: Path, root: Path, port: int, prefix: list[str], log_path: Path, max_connections: int
) -> subprocess.Popen[bytes]:
    """Start ``postgres`` on ``root/data`` (the server log appended to ``log_path``)."""
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    with open(log_path, "ab") as log_handle:
        return subprocess.Popen(
            [
                *prefix,
                str(bin_dir / "postgres"),
                "-D",
                str(root / "data"),
                "-p",
                str(port),
                "-h",
                "127.0.0.1",
                "-k",
                str(root),
                "-c",
                "fsync=on",
                "-c",
                f"max_connections={max_connections}",
                "-c",
                "shared_buffers=64MB",
            ],
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _wait_ready(server: PostgresServer, timeout: float) -> None:
    """Wait until ``server`` accepts connections; stop it and raise if it exits or times out."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            text = server.log_path.read_text(errors="replace")[-2000:]
            server.stop()
            raise RuntimeError(f"postgres exited during start-up: {text}")
        try:
            with psycopg.connect(server.dsn, connect_timeout=2):
                return
        except Exception:  # not accepting connections yet
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError("postgres did not accept connections in time") from None
            time.sleep(0.1)
