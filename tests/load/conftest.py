"""Fixtures for verified loading: key pairs (objects and PEM files) and a small model folder."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from safetensors.torch import save_file

from weightvault.signing import KeySigner, KeyVerifier


@dataclass(frozen=True)
class Keys:
    private: ec.EllipticCurvePrivateKey
    private_pem: Path
    public_pem: Path

    @property
    def signer(self) -> KeySigner:
        return KeySigner(self.private)

    @property
    def verifier(self) -> KeyVerifier:
        return KeyVerifier(self.private.public_key())


def _keys(folder: Path) -> Keys:
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = folder / "key.pem"
    private_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_pem = folder / "key.pub"
    public_pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Keys(key, private_pem, public_pem)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return _keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return _keys(tmp_path_factory.mktemp("other-keys"))


def weights() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return {
        "embed.weight": torch.randn(64, 32, generator=generator),
        "layer.bias": torch.randn(32, generator=generator).to(torch.bfloat16),
        "layer.count": torch.arange(12, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 4),
    }


def make_model(root: Path) -> Path:
    """A model folder: safetensors weights, a weights-only torch checkpoint, a config, a
    nested file."""
    root.mkdir(parents=True)
    save_file(weights(), root / "model.safetensors")
    torch.save({"head.weight": torch.ones(4, 4)}, root / "head.bin")
    (root / "config.json").write_text(json.dumps({"hidden_size": 32}))
    (root / "extra").mkdir()
    (root / "extra" / "notes.txt").write_text("tokenizer stand-in\n")
    return root


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return make_model(tmp_path / "model")


def assert_same(loaded: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert loaded.keys() == expected.keys()
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert torch.equal(loaded[name], tensor), name


def tiny_gpt2() -> Any:
    """A randomly initialised GPT-2 with one small layer (built here: no hub download)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=1,
        n_head=2,
        n_embd=16,
        vocab_size=64,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def same_parameters(a: Any, b: Any) -> bool:
    mine, theirs = a.state_dict(), b.state_dict()
    return mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


@contextmanager
def rewriting(target: Path, good: bytes, evil: bytes) -> Iterator[None]:
    """A thread that rewrites ``target`` in place, tampered then signed bytes, until the block
    ends: the race a verified load must never lose."""
    stop = threading.Event()

    def attacker() -> None:
        while not stop.is_set():
            for data in (evil, good):
                with open(target, "r+b") as handle:
                    handle.write(data)

    thread = threading.Thread(target=attacker, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
