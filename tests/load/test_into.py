"""``weightvault.load.safetensors(..., into=model)`` and ``weightvault.load.torch(...,
into=model)``: the bytes are read straight into the model's own tensors and hashed there; every
refusal of the buffered load still holds, and a refused load leaves nothing it wrote in the
model (the tensors it wrote are zeroed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from tests.load.conftest import Keys, rewriting

import weightvault.load as load
import weightvault.load._read as read_module
import weightvault.load.loaders as loaders_module
from weightvault.errors import FormatError, WeightvaultError
from weightvault.load import DigestMismatchError
from weightvault.signing import sign


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(60, 40), torch.nn.ReLU(), torch.nn.Linear(40, 7))


def _blank() -> torch.nn.Module:
    net = torch.nn.Sequential(torch.nn.Linear(60, 40), torch.nn.ReLU(), torch.nn.Linear(40, 7))
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.fill_(3.0)  # neither the signed values nor zero
    return net


FILES = {"safetensors": "model.safetensors", "torch": "model.bin"}


def _signed(
    tmp_path: Path, keys: Keys, serialization: str = "files", kind: str = "safetensors"
) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    if kind == "safetensors":
        save_file(_net().state_dict(), folder / FILES[kind])
    else:
        torch.save(_net().state_dict(), folder / FILES[kind])
    (folder / "config.json").write_text("{}")
    sign(folder, keys.signer, serialization=serialization, shard_size=1000)
    return folder


def _load(kind: str, folder: Path, keys: Keys, **options: Any) -> dict[str, torch.Tensor]:
    loader = load.safetensors if kind == "safetensors" else load.torch
    loaded: dict[str, torch.Tensor] = loader(folder, verifier=keys.verifier, **options)
    return loaded


@pytest.fixture
def placed_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if a file is parsed from a buffer instead of placed."""

    def no_buffer(*args: object, **kwargs: object) -> None:
        raise AssertionError("read into a buffer, not into the model")

    monkeypatch.setattr(loaders_module, "safetensors_from_buffer", no_buffer)
    monkeypatch.setattr(loaders_module, "torch_from_buffer", no_buffer)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pipelined reads of 1000-byte pieces: pieces, shards and tensors cross each other."""
    monkeypatch.setattr(read_module, "_PIPELINE_FROM", 0)
    monkeypatch.setattr(read_module, "_PIPELINE_CHUNK", 1000)


@pytest.mark.usefixtures("placed_only")
@pytest.mark.parametrize("kind", ["safetensors", "torch"])
@pytest.mark.parametrize("serialization", ["files", "shards"])
@pytest.mark.parametrize("pieces", ["whole", "small"])
def test_loads_into_the_model_own_tensors(
    tmp_path: Path,
    keys: Keys,
    kind: str,
    serialization: str,
    pieces: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if pieces == "small":
        monkeypatch.setattr(read_module, "_PIPELINE_FROM", 0)
        monkeypatch.setattr(read_module, "_PIPELINE_CHUNK", 1000)
    folder = _signed(tmp_path, keys, serialization, kind)
    net = _blank()
    loaded = _load(kind, folder, keys, into=net)
    assert _same(net, _net())
    state = net.state_dict()
    assert sorted(loaded) == sorted(state)
    for key, tensor in loaded.items():  # the model's own memory, not a copy of it
        assert tensor.data_ptr() == state[key].data_ptr()


@pytest.mark.usefixtures("small_pieces")
@pytest.mark.parametrize("serialization", ["files", "shards"])
def test_a_tampered_byte_anywhere_is_refused_and_erased(
    tmp_path: Path, keys: Keys, serialization: str
) -> None:
    folder = _signed(tmp_path, keys, serialization)
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    data_start = 8 + int.from_bytes(weights.read_bytes()[:8], "little")
    for offset in (3, 30, size // 2, size - 1):  # length, header, a middle and the last tensor
        _flip(weights, offset)
        net = _blank()
        with pytest.raises(DigestMismatchError):
            load.safetensors(folder, verifier=keys.verifier, into=net)
        placed = offset >= data_start  # a damaged header is not placed: nothing is written
        for tensor in net.state_dict().values():  # nothing unverified left in the model
            assert torch.all(tensor == (0.0 if placed else 3.0))
        _flip(weights, offset)
    net = _blank()
    load.safetensors(folder, verifier=keys.verifier, into=net)
    assert _same(net, _net())


@pytest.mark.usefixtures("small_pieces")
def test_every_tampered_region_of_a_checkpoint_is_refused(tmp_path: Path, keys: Keys) -> None:
    """A byte flipped in each 512-byte stretch of a zip checkpoint (headers, pickle, storages,
    directory): refused every time, and no byte of the model is left neither signed nor zero."""
    folder = _signed(tmp_path, keys, kind="torch")
    weights = folder / "model.bin"
    expected = _net().state_dict()
    for offset in range(7, weights.stat().st_size, 512):
        _flip(weights, offset)
        net = _blank()
        with pytest.raises(WeightvaultError):
            load.torch(folder, verifier=keys.verifier, into=net)
        for key, tensor in net.state_dict().items():
            assert torch.all(tensor == 0.0) or torch.all(tensor == 3.0), (offset, key)
            assert not torch.equal(tensor, expected[key])
        _flip(weights, offset)
    net = _blank()
    load.torch(folder, verifier=keys.verifier, into=net)
    assert _same(net, _net())


@pytest.mark.parametrize("kind", ["safetensors", "torch"])
def test_a_destination_of_another_shape_is_refused_after_verifying(
    tmp_path: Path, keys: Keys, kind: str
) -> None:
    folder = _signed(tmp_path, keys, kind=kind)
    other = torch.nn.Sequential(torch.nn.Linear(60, 41), torch.nn.ReLU(), torch.nn.Linear(41, 7))
    with pytest.raises(FormatError, match="no place of that dtype and shape"):
        _load(kind, folder, keys, into=other)
    weights = folder / FILES[kind]
    _flip(weights, weights.stat().st_size // 2)
    with pytest.raises(DigestMismatchError):  # the signature is checked first
        _load(kind, folder, keys, into=other)


def test_a_checkpoint_that_is_not_a_state_dict_is_refused(tmp_path: Path, keys: Keys) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    torch.save({"step": 3, "model": _net().state_dict()}, folder / "model.bin")
    sign(folder, keys.signer)
    with pytest.raises(FormatError, match="not a state dict"):
        load.torch(folder, verifier=keys.verifier, into=_blank())


def test_a_legacy_checkpoint_is_copied_in(tmp_path: Path, keys: Keys) -> None:
    """A pre-zip checkpoint cannot be placed: it is verified in a buffer and copied."""
    folder = tmp_path / "model"
    folder.mkdir()
    torch.save(_net().state_dict(), folder / "model.bin", _use_new_zipfile_serialization=False)
    sign(folder, keys.signer)
    net = _blank()
    load.torch(folder, verifier=keys.verifier, into=net)
    assert _same(net, _net())


def test_strict_wants_every_destination_tensor_filled(tmp_path: Path, keys: Keys) -> None:
    folder = _signed(tmp_path, keys)
    bigger = {**_blank().state_dict(), "extra": torch.ones(3)}
    with pytest.raises(FormatError, match="no tensor for extra"):
        load.safetensors(folder, verifier=keys.verifier, into=bigger)
    assert torch.equal(bigger["0.weight"], torch.zeros(40, 60))  # erased, as any failed load
    loaded = load.safetensors(folder, verifier=keys.verifier, into=bigger, strict=False)
    assert "extra" not in loaded
    assert torch.equal(bigger["extra"], torch.ones(3))
    assert torch.equal(bigger["2.bias"], _net().state_dict()["2.bias"])


def test_tied_destination_tensors_count_as_filled(tmp_path: Path, keys: Keys) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({"embed": torch.arange(12.0).reshape(3, 4)}, folder / "model.safetensors")
    sign(folder, keys.signer)
    shared = torch.zeros(3, 4)
    destination = {"embed": shared, "head": shared}  # tied weights: one storage, two names
    loaded = load.safetensors(folder, verifier=keys.verifier, into=destination)
    assert list(loaded) == ["embed"]
    assert torch.equal(shared, torch.arange(12.0).reshape(3, 4))


def test_destinations_sharing_memory_are_copied_not_placed(tmp_path: Path, keys: Keys) -> None:
    """Two file tensors into one storage cannot both be read in place; the load still works,
    through the verified buffer."""
    folder = tmp_path / "model"
    folder.mkdir()
    same = torch.full((5,), 2.0)
    save_file({"a": same, "b": same.clone()}, folder / "model.safetensors")
    sign(folder, keys.signer)
    storage = torch.zeros(5)
    loaded = load.safetensors(folder, verifier=keys.verifier, into={"a": storage, "b": storage[:]})
    assert sorted(loaded) == ["a", "b"]
    assert torch.equal(storage, same)


def test_device_and_into_do_not_mix(tmp_path: Path, keys: Keys) -> None:
    folder = _signed(tmp_path, keys)
    with pytest.raises(ValueError, match="into="):
        load.safetensors(folder, verifier=keys.verifier, into=_blank(), device="meta")
    with pytest.raises(ValueError, match="into="):
        load.torch(folder, verifier=keys.verifier, into=_blank(), map_location="cpu")


@pytest.mark.usefixtures("small_pieces")
@pytest.mark.parametrize("kind", ["safetensors", "torch"])
def test_race_harness_against_the_read_into_the_model(
    tmp_path: Path, keys: Keys, kind: str
) -> None:
    """A thread rewrites the file in place, half good half tampered, while the loader reads it
    into the model: an accepted load always holds exactly the signed tensors, a refused one
    leaves none of its bytes in the model."""
    folder = _signed(tmp_path, keys, kind=kind)
    target = folder / FILES[kind]
    good = target.read_bytes()
    evil = bytes(b ^ 0x55 if i > 300 else b for i, b in enumerate(good))
    accepted = refused = 0
    expected = _net()
    with rewriting(target, good, evil):
        for _ in range(100):
            net = _blank()
            try:
                _load(kind, folder, keys, into=net, max_workers=1)
            except WeightvaultError:
                refused += 1
                for tensor in net.state_dict().values():
                    assert torch.equal(tensor, torch.zeros_like(tensor)) or torch.all(tensor == 3.0)
                continue
            accepted += 1
            assert _same(net, expected)
    assert refused > 0
