"""Every shell and Python block of README.md and docs/*.md runs and prints what it shows.

Conventions: ``tests/docs/conftest.py``. One test per document (its blocks share one shell
session and run in order); one skipped test per block a document marks as not runnable here,
carrying the document's reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.docs.runner import (
    DOCUMENTS,
    EXECUTED_LANGUAGES,
    OTHER_LANGUAGES,
    fenced_block_languages,
    run_document,
    skipped_blocks,
)
from tests.docs.shell import REPO

_IDS = [path.relative_to(REPO).as_posix() for path in DOCUMENTS]


@pytest.mark.parametrize("path", DOCUMENTS, ids=_IDS)
def test_document_runs(path: Path, tmp_path: Path) -> None:
    run = run_document(path, tmp_path)
    assert run.ran > 0, "no block of this document ran"


@pytest.mark.parametrize("path", DOCUMENTS, ids=_IDS)
def test_every_block_is_classified(path: Path) -> None:
    """No fenced block escapes: each is executed or explicitly marked as not code."""
    allowed = EXECUTED_LANGUAGES | OTHER_LANGUAGES
    wrong = [(line, info) for line, info in fenced_block_languages(path) if info not in allowed]
    assert not wrong, f"fences without a known language (use one of {sorted(allowed)}): {wrong}"


_SKIPPED = skipped_blocks()


@pytest.mark.parametrize(
    ("document", "line", "reason"), _SKIPPED, ids=[f"{d}:{n}" for d, n, _ in _SKIPPED]
)
def test_skipped_block(document: str, line: int, reason: str) -> None:
    pytest.skip(f"{document}: the block after line {line}: {reason}")
