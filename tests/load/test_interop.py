"""Signatures made by the real model-signing package verify through the loaders."""

from __future__ import annotations

from pathlib import Path

import model_signing
import pytest
import torch
from tests.load.conftest import Keys, assert_same, same_parameters, tiny_gpt2, weights

import weightvault.load as load
from weightvault.signing import KeyVerifier


def _peer_signs(folder: Path, keys: Keys, serialization: str, hash_type: str) -> None:
    hashing = model_signing.hashing.Config().set_ignored_paths(paths=["model.sig"])
    if serialization == "shards":
        hashing.use_shard_serialization(hashing_algorithm=hash_type, shard_size=1000)
    else:
        hashing.use_file_serialization(hashing_algorithm=hash_type)
    config = model_signing.signing.Config().use_elliptic_key_signer(private_key=keys.private_pem)
    config.set_hashing_config(hashing)
    config.sign(folder, folder / "model.sig")


@pytest.mark.parametrize(
    ("serialization", "hash_type"),
    [
        ("files", "sha256"),
        ("shards", "sha256"),
        ("files", "blake2"),
        ("shards", "blake2"),
        ("files", "blake3"),
    ],
)
def test_model_signing_signature_verifies_through_the_loaders(
    model: Path, keys: Keys, serialization: str, hash_type: str
) -> None:
    _peer_signs(model, keys, serialization, hash_type)
    verifier = KeyVerifier.from_file(keys.public_pem)
    assert_same(load.safetensors(model, verifier=verifier), weights())
    assert_same(load.safetensors(model / "model.safetensors", verifier=verifier), weights())
    assert torch.equal(
        load.torch(model / "head.bin", verifier=verifier)["head.weight"], torch.ones(4, 4)
    )
    (model / "config.json").write_text('{"hidden_size": 31}')
    with pytest.raises(load.DigestMismatchError):
        load.safetensors(model, verifier=verifier)


def test_model_signing_signed_transformers_folder(tmp_path: Path, keys: Keys) -> None:
    original = tiny_gpt2()
    folder = tmp_path / "tiny"
    original.save_pretrained(folder)
    _peer_signs(folder, keys, "shards", "sha256")
    from transformers import AutoModelForCausalLM

    loaded = load.from_pretrained(AutoModelForCausalLM, folder, verifier=keys.verifier)
    assert same_parameters(loaded, original)
