"""Verified loaders: happy paths for every layout and serialization, and every refusal raised
before a single tensor is built."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.load.conftest import Keys, assert_same, weights

import weightvault.load as load
from weightvault.errors import Reason, UnsafeFileError
from weightvault.load import (
    BadSignatureError,
    DigestMismatchError,
    ExtraFileError,
    LoadRefusedError,
    MissingFileError,
    SymlinkEscapeError,
)
from weightvault.signing import check, sign

SHARD = 1000  # several shards per weight file


@pytest.mark.parametrize("serialization", ["files", "shards"])
@pytest.mark.parametrize("hash_type", ["sha256", "blake2", "blake3"])
def test_folder_loads_after_verification(
    model: Path, keys: Keys, serialization: str, hash_type: str
) -> None:
    sign(model, keys.signer, serialization=serialization, hash_type=hash_type, shard_size=SHARD)
    assert_same(load.safetensors(model, verifier=keys.verifier), weights())
    state = load.torch(model / "head.bin", verifier=keys.verifier)
    assert torch.equal(state["head.weight"], torch.ones(4, 4))


def test_verified_model_holds_every_file_read_once(model: Path, keys: Keys) -> None:
    sign(model, keys.signer)
    verified = load.read_verified(model, verifier=keys.verifier)
    assert verified.names() == ["config.json", "extra/notes.txt", "head.bin", "model.safetensors"]
    assert bytes(verified.files["config.json"]) == (model / "config.json").read_bytes()
    assert verified.signer.method == "key"


def test_single_file_model(tmp_path: Path, keys: Keys) -> None:
    folder = tmp_path / "single"
    folder.mkdir()
    from safetensors.torch import save_file

    save_file(weights(), folder / "w.safetensors")
    sign(folder / "w.safetensors", keys.signer)  # signature beside it covers "."
    assert_same(load.safetensors(folder / "w.safetensors", verifier=keys.verifier), weights())


def test_one_file_of_a_signed_folder_reads_only_that_file(
    model: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    sign(model, keys.signer, serialization="shards", shard_size=SHARD)
    (model / "config.json").write_text("changed, but not read")
    assert_same(load.safetensors(model / "model.safetensors", verifier=keys.verifier), weights())
    unsigned = model / "unsigned.safetensors"
    shutil.copy(model / "model.safetensors", unsigned)
    with pytest.raises(ExtraFileError) as caught:
        load.safetensors(unsigned, verifier=keys.verifier)
    assert caught.value.reason is Reason.EXTRA_FILE


def _no_tensors_built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Spy on the step that turns bytes into tensors: a refusal must come before it."""
    built: list[str] = []
    import weightvault.load.loaders as loaders

    real_safetensors = loaders.safetensors_from_buffer
    real_torch = loaders.torch_from_buffer

    def spy_safetensors(buffer: memoryview, name: str, *args: Any) -> Any:
        built.append(name)
        return real_safetensors(buffer, name, *args)

    def spy_torch(buffer: memoryview, name: str, *args: Any) -> Any:
        built.append(name)
        return real_torch(buffer, name, *args)

    monkeypatch.setattr(loaders, "safetensors_from_buffer", spy_safetensors)
    monkeypatch.setattr(loaders, "torch_from_buffer", spy_torch)
    return built


def _flip_bit(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) - 1)


def _swap(a: Path, b: Path) -> None:
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)


TAMPERING = {
    "flipped bit in weights": (
        lambda m: _flip_bit(m / "model.safetensors", 600),
        DigestMismatchError,
    ),
    "flipped bit in config": (lambda m: _flip_bit(m / "config.json", 3), DigestMismatchError),
    "truncated weights": (lambda m: _truncate(m / "model.safetensors"), DigestMismatchError),
    "extra file": (lambda m: (m / "extra" / "new.bin").write_bytes(b"x"), ExtraFileError),
    "missing file": (lambda m: (m / "extra" / "notes.txt").unlink(), MissingFileError),
    "swapped files": (
        lambda m: _swap(m / "config.json", m / "extra" / "notes.txt"),
        DigestMismatchError,
    ),
    "renamed file": (lambda m: (m / "head.bin").rename(m / "head2.bin"), MissingFileError),
}


@pytest.mark.parametrize("serialization", ["files", "shards"])
@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampered_model_is_refused_before_any_tensor(
    model: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch, serialization: str, case: str
) -> None:
    sign(model, keys.signer, serialization=serialization, shard_size=SHARD)
    tamper, refusal = TAMPERING[case]
    tamper(model)
    built = _no_tensors_built(monkeypatch)
    with pytest.raises(refusal) as caught:
        load.safetensors(model, verifier=keys.verifier)
    assert isinstance(caught.value, LoadRefusedError)
    assert caught.value.exit_code == 1
    assert caught.value.names
    assert built == []
    # weightvault verify agrees that the model is not intact
    assert not check(model, None, keys.verifier).ok


def test_swapped_weight_files_of_same_size_are_refused(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import save_file

    folder = tmp_path / "two"
    folder.mkdir()
    save_file({"w": torch.zeros(16)}, folder / "a.safetensors")
    save_file({"w": torch.ones(16)}, folder / "b.safetensors")
    sign(folder, keys.signer)
    _swap(folder / "a.safetensors", folder / "b.safetensors")
    built = _no_tensors_built(monkeypatch)
    with pytest.raises(DigestMismatchError) as caught:
        load.safetensors(folder / "a.safetensors", verifier=keys.verifier)
    assert caught.value.reason is Reason.DIGEST_MISMATCH
    assert built == []


def test_wrong_key_is_refused(
    model: Path, keys: Keys, other_keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    sign(model, keys.signer)
    built = _no_tensors_built(monkeypatch)
    with pytest.raises(BadSignatureError) as caught:
        load.safetensors(model, verifier=other_keys.verifier)
    assert caught.value.reason is Reason.BAD_SIGNATURE
    with pytest.raises(BadSignatureError):
        load.torch(model / "head.bin", verifier=other_keys.verifier)
    assert built == []


def test_altered_signature_is_refused(model: Path, keys: Keys) -> None:
    sign(model, keys.signer)
    signature = model / "model.sig"
    signature.write_bytes(signature.read_bytes().replace(b'"mediaType"', b'"mediatype"', 1))
    with pytest.raises(BadSignatureError):
        load.safetensors(model, verifier=keys.verifier)


def test_symlink_out_of_the_model_is_refused(tmp_path: Path, model: Path, keys: Keys) -> None:
    sign(model, keys.signer, allow_symlinks=True)
    outside = tmp_path / "outside.txt"
    outside.write_text("tokenizer stand-in\n")  # the same bytes as the signed file
    (model / "extra" / "notes.txt").unlink()
    (model / "extra" / "notes.txt").symlink_to(outside)
    with pytest.raises(SymlinkEscapeError) as caught:
        load.safetensors(model, verifier=keys.verifier)
    assert caught.value.reason is Reason.SYMLINK_ESCAPE
    assert caught.value.names == ("extra/notes.txt",)


def test_torch_checkpoint_with_code_is_refused(tmp_path: Path, keys: Keys) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save(
        {"w": torch.ones(2), "when": __import__("datetime").date(2024, 1, 1)}, folder / "model.bin"
    )
    sign(folder, keys.signer)
    with pytest.raises(UnsafeFileError):
        load.torch(folder / "model.bin", verifier=keys.verifier)


def test_malformed_safetensors_header_is_a_format_error(tmp_path: Path, keys: Keys) -> None:
    from weightvault.errors import FormatError

    folder = tmp_path / "bad"
    folder.mkdir()
    header = b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,20]}}'
    (folder / "w.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)
    sign(folder, keys.signer)
    with pytest.raises(FormatError, match="data_offsets"):
        load.safetensors(folder, verifier=keys.verifier)


def test_tensors_share_the_verified_buffer(model: Path, keys: Keys) -> None:
    sign(model, keys.signer)
    verified = load.read_verified(model / "model.safetensors", verifier=keys.verifier)
    from weightvault.load._formats import safetensors_from_buffer

    buffer = verified.files["model.safetensors"]
    tensors = safetensors_from_buffer(buffer, "model.safetensors")
    before = {name: tensor.clone() for name, tensor in tensors.items()}
    buffer[-1] ^= 0x01  # the tensors are views: no copy was made after the verified read
    assert any(not torch.equal(tensors[n], before[n]) for n in tensors)


@pytest.mark.parametrize("serialization", ["files", "shards"])
def test_workers_do_not_change_the_outcome(model: Path, keys: Keys, serialization: str) -> None:
    sign(model, keys.signer, serialization=serialization, shard_size=SHARD)
    one = load.read_verified(model, verifier=keys.verifier, max_workers=1)
    many = load.read_verified(model, verifier=keys.verifier, max_workers=8)
    assert {n: bytes(b) for n, b in one.files.items()} == {
        n: bytes(b) for n, b in many.files.items()
    }
    _flip_bit(model / "model.safetensors", 2500)  # inside a middle shard
    for workers in (1, 8):
        with pytest.raises(DigestMismatchError):
            load.read_verified(
                model / "model.safetensors", verifier=keys.verifier, max_workers=workers
            )
