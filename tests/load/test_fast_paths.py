"""The fast paths of verified loading keep every refusal: the pipelined read (one thread reads
into the private buffer, another hashes it) and PyTorch checkpoints whose storages are views of
the verified buffer instead of copies.

The pipeline normally starts at 16 MiB; these tests lower the threshold and the piece size so
that small files cross many pieces (and the race harness runs against it).
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tests.load.conftest import Keys, rewriting

import weightvault.load as load
import weightvault.load._read as read_module
from weightvault.errors import UnsafeFileError, WeightvaultError
from weightvault.load import DigestMismatchError
from weightvault.signing import sign

WEIGHTS = {"a": torch.arange(20_000, dtype=torch.float32), "b": torch.ones(3, 5000)}


@pytest.fixture
def pipelined(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(read_module, "_PIPELINE_FROM", 0)
    monkeypatch.setattr(read_module, "_PIPELINE_CHUNK", 4096)  # ~35 pieces per file


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("hash_type", ["sha256", "blake3"])
@pytest.mark.usefixtures("pipelined")
def test_pipelined_read_loads_and_refuses(tmp_path: Path, keys: Keys, hash_type: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    save_file(WEIGHTS, folder / "model.safetensors")
    sign(folder, keys.signer, hash_type=hash_type)
    tensors = load.safetensors(folder, verifier=keys.verifier)
    assert all(torch.equal(tensors[n], WEIGHTS[n]) for n in WEIGHTS)
    size = (folder / "model.safetensors").stat().st_size
    for offset in (10, size // 2, size - 1):  # first, a middle and the last piece
        _flip(folder / "model.safetensors", offset)
        with pytest.raises(DigestMismatchError):
            load.safetensors(folder, verifier=keys.verifier)
        _flip(folder / "model.safetensors", offset)
    assert load.safetensors(folder, verifier=keys.verifier).keys() == WEIGHTS.keys()


@pytest.mark.usefixtures("pipelined")
def test_pipelined_read_refuses_a_file_that_grows_or_shrinks(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    save_file(WEIGHTS, folder / "model.safetensors")
    sign(folder, keys.signer)
    target = folder / "model.safetensors"
    real_piece = read_module._read_piece
    calls = 0

    def truncate_midway(fd: int, *args: object) -> int:
        nonlocal calls
        calls += 1
        if calls == 5:
            os.truncate(target, 4096 * 3)  # the file shrinks while it is read
        return real_piece(fd, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(read_module, "_read_piece", truncate_midway)
    with pytest.raises(DigestMismatchError, match="shorter"):
        load.safetensors(folder, verifier=keys.verifier)


@pytest.mark.usefixtures("pipelined")
def test_race_harness_against_the_pipelined_read(tmp_path: Path, keys: Keys) -> None:
    """A thread rewrites the file in place, half good half tampered, while the pipelined
    loader runs: what is accepted is always exactly the signed tensors."""
    folder = tmp_path / "model"
    folder.mkdir()
    target = folder / "model.safetensors"
    save_file(WEIGHTS, target)
    sign(folder, keys.signer)
    good = target.read_bytes()
    evil = bytes(b ^ 0x55 if i > 200 else b for i, b in enumerate(good))
    accepted = refused = 0
    with rewriting(target, good, evil):
        for _ in range(100):
            try:
                tensors = load.safetensors(folder, verifier=keys.verifier, max_workers=1)
            except WeightvaultError:
                refused += 1
                continue
            accepted += 1
            assert all(torch.equal(tensors[n], WEIGHTS[n]) for n in WEIGHTS)
    assert refused > 0


def test_torch_storages_are_views_of_the_verified_buffer(tmp_path: Path, keys: Keys) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    torch.save(WEIGHTS, folder / "model.bin")
    sign(folder, keys.signer)
    verified = load.read_verified(folder / "model.bin", verifier=keys.verifier)
    from weightvault.load._formats import torch_from_buffer

    buffer = verified.files["model.bin"]
    state = torch_from_buffer(buffer, "model.bin", torch.load)
    assert all(torch.equal(state[n], WEIGHTS[n]) for n in WEIGHTS)
    address = torch.frombuffer(buffer, dtype=torch.uint8).data_ptr()
    for tensor in state.values():  # inside the buffer: no copy was made after the read
        assert address <= tensor.data_ptr() < address + len(buffer)
    assert torch.equal(load.torch(folder / "model.bin", verifier=keys.verifier)["b"], WEIGHTS["b"])


def test_torchscript_archive_is_refused(tmp_path: Path, keys: Keys) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(folder / "model.pt"))
    sign(folder, keys.signer)
    with pytest.raises(UnsafeFileError, match="TorchScript"):
        load.torch(folder / "model.pt", verifier=keys.verifier)


def test_legacy_torch_checkpoint_still_loads(tmp_path: Path, keys: Keys) -> None:
    """A pre-zip checkpoint has no storages to view: it is copied out of the buffer."""
    folder = tmp_path / "model"
    folder.mkdir()
    torch.save(WEIGHTS, folder / "model.bin", _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(io.BytesIO((folder / "model.bin").read_bytes()))
    sign(folder, keys.signer)
    state = load.torch(folder / "model.bin", verifier=keys.verifier)
    assert all(torch.equal(state[n], WEIGHTS[n]) for n in WEIGHTS)
