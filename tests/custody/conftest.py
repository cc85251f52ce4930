"""Fixtures for the custody tests (helpers in :mod:`tests.custody.helpers`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.custody.helpers import World, build_world, start_service


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("custody")
    service = start_service(root / "data")
    try:
        yield build_world(root, service)
    finally:
        service.stop()
