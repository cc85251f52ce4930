"""Scanning fixtures: the corpus is built once per test session (per xdist worker)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from scan_corpus import Sample, build_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    return build_corpus(tmp_path_factory.mktemp("scan-corpus"))


@pytest.fixture(scope="session")
def corpus_root(corpus: list[Sample]) -> Path:
    return corpus[0].path.parent.parent
