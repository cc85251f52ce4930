"""Fixtures for the encryption tests: a private WEIGHTVAULT_HOME and small realistic models."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.crypt.crypt_helpers import write_model


@pytest.fixture(autouse=True)
def weightvault_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own keyring home, so the default keyring never touches ~/.config."""
    home = tmp_path / "wv-home"
    monkeypatch.setenv("WEIGHTVAULT_HOME", str(home))
    return home


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A small model tree: a config, two weight shards (one spans several chunks), an empty file."""
    return write_model(
        tmp_path / "model",
        {
            "config.json": 611,
            "model-00001-of-00002.safetensors": 3 * 16384 + 123,
            "model-00002-of-00002.safetensors": 16384,
            "tokenizer/vocab.txt": 5000,
            "tokenizer/empty.txt": 0,
        },
    )
