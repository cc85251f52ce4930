"""Fixtures shared by every test folder: a SoftHSM2 token and a PostgreSQL server.

Both start real software (helpers in :mod:`tests.softhsm` and :mod:`tests.postgres`, imported
only when a test asks for the fixture). Paths shared between tests are in :mod:`tests.paths`,
stand-in HTTP servers in :mod:`tests.servers`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.postgres import PostgresServer
    from tests.softhsm import SoftHsmToken


@pytest.fixture
def token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsmToken:
    """A fresh SoftHSM2 token (label ``weightvault-test``, PIN ``1234``) under ``tmp_path``.

    The PIN and module overrides of the environment are cleared, so only the URI decides.
    """
    from tests.softhsm import make_isolated_token

    return make_isolated_token(tmp_path, monkeypatch)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One PostgreSQL server per session (per ``pytest -n`` worker); tests take a fresh
    database (``create_database``) or schema (``create_schema``) each."""
    from tests.postgres import start_postgres

    server = start_postgres(tmp_path_factory)
    yield server
    server.stop()
