"""Fixtures for the transparency-log tests: a fresh log on each backend (SQLite, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.postgres import PostgresServer
from tests.tlog.tlog_helpers import ORIGIN

from weightvault.tlog import Ed25519NoteSigner, TransparencyLog


@pytest.fixture(params=["sqlite", "postgres"])
def log_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, not yet created log location on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "log.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_schema()


@pytest.fixture
def log(log_location: str) -> Iterator[TransparencyLog]:
    created = TransparencyLog.create(log_location, ORIGIN)
    yield created
    created.close()


@pytest.fixture(scope="session")
def log_signer() -> Ed25519NoteSigner:
    return Ed25519NoteSigner.generate(ORIGIN)
