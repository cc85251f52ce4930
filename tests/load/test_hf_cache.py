"""Hugging Face cache snapshots: entries are symlinks into the repository's blobs/; they are
followed inside the cache repository only."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch
from tests.load.conftest import Keys, same_parameters, tiny_gpt2
from transformers import AutoModelForCausalLM

import weightvault.load as load
from weightvault.errors import Reason
from weightvault.signing import sign

REVISION = "0123456789abcdef0123456789abcdef01234567"


def make_cache(hub: Path, source: Path, repo: str = "models--org--tiny") -> Path:
    """Lay ``source``'s files out as huggingface_hub does; returns the snapshot folder."""
    repository = hub / repo
    blobs = repository / "blobs"
    snapshot = repository / "snapshots" / REVISION
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text(REVISION)
    for path in sorted(source.rglob("*")):
        if path.is_dir():
            continue
        name = path.relative_to(source)
        blob = blobs / hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copyfile(path, blob)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


@pytest.fixture(scope="module")
def signed_source(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> tuple[Path, object]:
    source = tmp_path_factory.mktemp("source") / "tiny"
    model = tiny_gpt2()
    model.save_pretrained(source)
    sign(source, keys.signer)
    return source, model


def test_snapshot_loads_verified(tmp_path: Path, keys: Keys, signed_source: tuple) -> None:
    source, model = signed_source
    snapshot = make_cache(tmp_path / "hub", source)
    assert (snapshot / "model.safetensors").is_symlink()
    loaded = load.from_pretrained(AutoModelForCausalLM, snapshot, verifier=keys.verifier)
    assert same_parameters(loaded, model)
    tensors = load.safetensors(snapshot, verifier=keys.verifier)
    assert torch.equal(tensors["transformer.wte.weight"], model.transformer.wte.weight)


def test_link_leaving_the_cache_is_refused(
    tmp_path: Path, keys: Keys, signed_source: tuple
) -> None:
    source, _ = signed_source
    snapshot = make_cache(tmp_path / "hub", source)
    outside = tmp_path / "elsewhere" / "config.json"
    outside.parent.mkdir()
    shutil.copyfile(source / "config.json", outside)  # identical bytes: only the place is wrong
    (snapshot / "config.json").unlink()
    (snapshot / "config.json").symlink_to(outside)
    with pytest.raises(load.SymlinkEscapeError) as caught:
        load.from_pretrained(AutoModelForCausalLM, snapshot, verifier=keys.verifier)
    assert caught.value.reason is Reason.SYMLINK_ESCAPE
    assert caught.value.names == ("config.json",)


def test_link_into_another_cache_repository_is_refused(
    tmp_path: Path, keys: Keys, signed_source: tuple
) -> None:
    source, _ = signed_source
    snapshot = make_cache(tmp_path / "hub", source)
    other = make_cache(tmp_path / "hub", source, repo="models--org--other")
    (snapshot / "model.safetensors").unlink()
    (snapshot / "model.safetensors").symlink_to(os.path.realpath(other / "model.safetensors"))
    with pytest.raises(load.SymlinkEscapeError):
        load.safetensors(snapshot, verifier=keys.verifier)


def test_signature_link_leaving_the_cache_is_refused(
    tmp_path: Path, keys: Keys, signed_source: tuple
) -> None:
    source, _ = signed_source
    snapshot = make_cache(tmp_path / "hub", source)
    outside = tmp_path / "model.sig"
    shutil.copyfile(source / "model.sig", outside)
    (snapshot / "model.sig").unlink()
    (snapshot / "model.sig").symlink_to(outside)
    with pytest.raises(load.SymlinkEscapeError):
        load.safetensors(snapshot, verifier=keys.verifier)


def test_tampered_blob_is_refused(tmp_path: Path, keys: Keys, signed_source: tuple) -> None:
    source, _ = signed_source
    snapshot = make_cache(tmp_path / "hub", source)
    blob = Path(os.path.realpath(snapshot / "model.safetensors"))
    data = bytearray(blob.read_bytes())
    data[-5] ^= 0x40
    blob.write_bytes(bytes(data))
    with pytest.raises(load.DigestMismatchError):
        load.from_pretrained(AutoModelForCausalLM, snapshot, verifier=keys.verifier)


def test_one_file_of_a_snapshot(tmp_path: Path, keys: Keys, signed_source: tuple) -> None:
    source, model = signed_source
    snapshot = make_cache(tmp_path / "hub", source)
    tensors = load.safetensors(snapshot / "model.safetensors", verifier=keys.verifier)
    assert torch.equal(tensors["transformer.wte.weight"], model.transformer.wte.weight)
    import safetensors.torch

    import weightvault

    with weightvault.install_hooks(weightvault.LoadPolicy(keys.verifier)):
        hooked = safetensors.torch.load_file(snapshot / "model.safetensors")
    assert torch.equal(hooked["transformer.wte.weight"], model.transformer.wte.weight)
    outside = tmp_path / "copy.safetensors"
    shutil.copyfile(source / "model.safetensors", outside)
    (snapshot / "model.safetensors").unlink()
    (snapshot / "model.safetensors").symlink_to(outside)
    with pytest.raises(load.SymlinkEscapeError):
        load.safetensors(snapshot / "model.safetensors", verifier=keys.verifier)
