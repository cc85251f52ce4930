"""Fixtures for the signing tests: key pairs, a test PKI, a small realistic model."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, os.path.dirname(__file__))

from _pki import Pki, build_pki, write_private, write_public


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("keys")
    key = ec.generate_private_key(ec.SECP256R1())
    return write_private(folder / "key.pem", key), write_public(
        folder / "key.pub", key.public_key()
    )


@pytest.fixture(scope="session")
def other_keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("other-keys")
    key = ec.generate_private_key(ec.SECP256R1())
    return write_private(folder / "key.pem", key), write_public(
        folder / "key.pub", key.public_key()
    )


def make_model(root: Path, *, weights_size: int = 300_000) -> Path:
    """A small model of realistic shape: weights, config, tokenizer, a nested folder."""
    root.mkdir(parents=True, exist_ok=True)
    rng = __import__("random").Random(1234)
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [weights_size // 4], "data_offsets": [0, weights_size]}}
    ).encode()
    (root / "model.safetensors").write_bytes(
        len(header).to_bytes(8, "little") + header + rng.randbytes(weights_size)
    )
    (root / "config.json").write_text(json.dumps({"hidden_size": 64, "layers": 2}))
    (root / "tokenizer.json").write_text(json.dumps({"vocab": {"a": 0, "b": 1}}))
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "adapter.bin").write_bytes(rng.randbytes(5000))
    return root


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_model(tmp_path / "model")
