"""Encrypted safetensors: load only the tensors asked for, as NumPy arrays or torch tensors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch

from weightvault.crypt import (
    KeyringKey,
    encrypt_path,
    load_encrypted_safetensors,
    open_encrypted,
    read_safetensors_index,
)
from weightvault.crypt.envelope import unlock
from weightvault.crypt.format import CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE
from weightvault.errors import DecryptionError, FormatError, UsageError


@pytest.fixture
def key() -> KeyringKey:
    return KeyringKey(os.urandom(32))


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "embed.weight": rng.standard_normal((300, 64)).astype(np.float32),  # ~75 KiB
        "layer.0.bias": rng.standard_normal(17).astype(np.float16),
        "positions": np.arange(1000, dtype=np.int64),
        "mask": rng.integers(0, 2, 33).astype(bool),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "head.weight": rng.standard_normal((64, 128)).astype(np.float32),
    }


def _encrypted(tmp_path: Path, arrays: dict[str, np.ndarray], key: KeyringKey) -> Path:
    path = tmp_path / "model.safetensors"
    save_numpy(arrays, str(path), metadata={"format": "np"})
    encrypt_path(path, recipients=[key])
    path.unlink()
    return tmp_path / "model.safetensors.wvenc"


def test_numpy_tensors_equal_the_originals(
    tmp_path: Path, arrays: dict[str, np.ndarray], key: KeyringKey
) -> None:
    encrypted = _encrypted(tmp_path, arrays, key)
    loaded = load_encrypted_safetensors(encrypted, [key])
    assert sorted(loaded) == sorted(arrays)
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        assert np.array_equal(loaded[name], array)
    loaded["positions"][0] = 5  # writable, owned copies


def test_only_requested_tensors_are_decrypted(
    tmp_path: Path, arrays: dict[str, np.ndarray], key: KeyringKey
) -> None:
    encrypted = _encrypted(tmp_path, arrays, key)
    with open_encrypted(encrypted, [key]) as reader:
        tensors, metadata = read_safetensors_index(reader)
        assert metadata == {"format": "np"}
        head = tensors["head.weight"]
        before = reader.ciphertext_bytes_read
        reader.read(head.start, head.end - head.start)
        chunks = (head.end - 1) // CHUNK_SIZE - head.start // CHUNK_SIZE + 1
        assert reader.ciphertext_bytes_read - before <= chunks * ENCRYPTED_CHUNK_SIZE
        embed = tensors["embed.weight"]
    # Corrupt a chunk that holds only embed.weight: other tensors still load, it does not.
    middle_chunk = (embed.start + embed.end) // 2 // CHUNK_SIZE
    assert middle_chunk * CHUNK_SIZE > embed.start and (middle_chunk + 1) * CHUNK_SIZE < embed.end
    item = unlock(encrypted, [key])
    data = bytearray(encrypted.read_bytes())
    data[item.body_offset + 56 + middle_chunk * ENCRYPTED_CHUNK_SIZE + 9] ^= 1
    encrypted.write_bytes(bytes(data))
    loaded = load_encrypted_safetensors(encrypted, [key], ["head.weight", "positions"])
    assert np.array_equal(loaded["head.weight"], arrays["head.weight"])
    with pytest.raises(DecryptionError, match="cannot decrypt"):
        load_encrypted_safetensors(encrypted, [key], ["embed.weight"])


def test_torch_tensors_including_bfloat16(tmp_path: Path, key: KeyringKey) -> None:
    tensors = {
        "w": torch.randn(40, 300, dtype=torch.bfloat16),
        "b": torch.randn(7, dtype=torch.float16),
        "i": torch.arange(10, dtype=torch.int32),
        "z": torch.zeros(0, 3),
    }
    path = tmp_path / "t.safetensors"
    save_torch(tensors, str(path))
    reference = load_torch(str(path))
    encrypt_path(path, recipients=[key])
    loaded = load_encrypted_safetensors(tmp_path / "t.safetensors.wvenc", [key], framework="torch")
    for name, tensor in reference.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)
    as_numpy = load_encrypted_safetensors(tmp_path / "t.safetensors.wvenc", [key], ["w"])
    assert str(as_numpy["w"].dtype) == "bfloat16"  # via ml_dtypes
    assert np.array_equal(as_numpy["w"].astype(np.float32), tensors["w"].float().numpy())


def test_unknown_tensor_framework_and_bad_headers(
    tmp_path: Path, arrays: dict[str, np.ndarray], key: KeyringKey
) -> None:
    encrypted = _encrypted(tmp_path, arrays, key)
    with pytest.raises(UsageError, match="no tensor named 'nope'"):
        load_encrypted_safetensors(encrypted, [key], ["nope"])
    with pytest.raises(UsageError, match="framework"):
        load_encrypted_safetensors(encrypted, [key], framework="jax")
    bad = tmp_path / "bad.bin"
    bad.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    encrypt_path(bad, recipients=[key])
    with pytest.raises(FormatError, match="header length"):
        load_encrypted_safetensors(tmp_path / "bad.bin.wvenc", [key])
    header = b'{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}'
    lying = tmp_path / "lying.bin"
    lying.write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    encrypt_path(lying, recipients=[key])
    with pytest.raises(FormatError, match="8 bytes for shape \\[4\\] of F32, which needs 16"):
        load_encrypted_safetensors(tmp_path / "lying.bin.wvenc", [key])
