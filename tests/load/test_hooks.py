"""The opt-in hooks: unchanged loading code verifies, and everything is put back afterwards."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import safetensors.torch
import torch
from tests.load.conftest import Keys, assert_same, same_parameters, tiny_gpt2, weights
from tests.load.test_hf_cache import make_cache
from transformers import AutoModelForCausalLM, GPT2LMHeadModel, PreTrainedModel

import weightvault
import weightvault.load as load
from weightvault.errors import PolicyError, UsageError
from weightvault.signing import sign


def _originals() -> tuple[object, ...]:
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    return (
        safetensors.torch.load_file,
        torch.load,
        torch.serialization.load,
        PreTrainedModel.__dict__["from_pretrained"],
        _BaseAutoModelClass.__dict__["from_pretrained"],
        AutoModelForCausalLM.__dict__["from_pretrained"],  # each Auto class has its own copy
    )


def test_hooks_verify_and_uninstall(model: Path, keys: Keys) -> None:
    sign(model, keys.signer)
    before = _originals()
    with weightvault.install_hooks(weightvault.LoadPolicy(keys.verifier)):
        assert all(a is not b for a, b in zip(_originals(), before, strict=True))
        assert_same(safetensors.torch.load_file(model / "model.safetensors"), weights())
        assert torch.equal(torch.load(model / "head.bin")["head.weight"], torch.ones(4, 4))
        (model / "config.json").write_text('{"hidden_size": 33}')  # another file: not read
        assert_same(safetensors.torch.load_file(str(model / "model.safetensors")), weights())
        data = bytearray((model / "model.safetensors").read_bytes())
        data[-1] ^= 1
        (model / "model.safetensors").write_bytes(bytes(data))
        with pytest.raises(load.DigestMismatchError):
            safetensors.torch.load_file(model / "model.safetensors")
    assert _originals() == before
    # unhooked, the tampered file loads as the library always did
    assert "mask" in safetensors.torch.load_file(model / "model.safetensors")


def test_hooked_from_pretrained_folder_auto_class_and_cache(tmp_path: Path, keys: Keys) -> None:
    original = tiny_gpt2()
    folder = tmp_path / "tiny"
    original.save_pretrained(folder)
    sign(folder, keys.signer)
    snapshot = make_cache(tmp_path / "hub", folder)
    handle = weightvault.install_hooks(weightvault.LoadPolicy(keys.verifier))
    try:
        assert same_parameters(GPT2LMHeadModel.from_pretrained(folder), original)
        assert same_parameters(AutoModelForCausalLM.from_pretrained(folder), original)
        auto = AutoModelForCausalLM.from_pretrained("org/tiny", cache_dir=tmp_path / "hub")
        assert same_parameters(auto, original)
        overridden = AutoModelForCausalLM.from_pretrained(folder, output_attentions=True)
        assert overridden.config.output_attentions is True
        (snapshot / "generation_config.json").unlink()
        with pytest.raises(load.MissingFileError):
            AutoModelForCausalLM.from_pretrained("org/tiny", cache_dir=tmp_path / "hub")
        with pytest.raises(weightvault.WeightvaultError, match="never download"):
            AutoModelForCausalLM.from_pretrained("org/absent", cache_dir=tmp_path / "hub")
    finally:
        handle.uninstall()
    assert "from_pretrained" not in GPT2LMHeadModel.__dict__


def test_policy_refuses_unsigned_models_and_streams(tmp_path: Path, keys: Keys) -> None:
    folder = tmp_path / "unsigned"
    folder.mkdir()
    torch.save({"w": torch.zeros(2)}, folder / "w.pt")
    buffer = io.BytesIO((folder / "w.pt").read_bytes())
    with weightvault.install_hooks(weightvault.LoadPolicy(keys.verifier)):
        with pytest.raises(PolicyError, match="no signature beside the model"):
            torch.load(folder / "w.pt")
        with pytest.raises(PolicyError, match="open file or buffer"):
            torch.load(buffer)
    lenient = weightvault.LoadPolicy(
        keys.verifier, unsafe_allow_unsigned=True, unsafe_allow_streams=True
    )
    with weightvault.install_hooks(lenient):
        assert torch.equal(torch.load(folder / "w.pt")["w"], torch.zeros(2))
        assert torch.equal(torch.load(buffer)["w"], torch.zeros(2))
        sign(folder, keys.signer)  # a signed model is checked even under a lenient policy
        (folder / "w.pt").write_bytes((folder / "w.pt").read_bytes() + b"\0")
        with pytest.raises(load.DigestMismatchError):
            torch.load(folder / "w.pt")


def test_hooks_install_once(keys: Keys) -> None:
    policy = weightvault.LoadPolicy(keys.verifier)
    with weightvault.install_hooks(policy):
        with pytest.raises(UsageError, match="already installed"):
            weightvault.install_hooks(policy)
    weightvault.uninstall_hooks()  # uninstalling twice is harmless
    with pytest.raises(TypeError):
        weightvault.install_hooks(keys.verifier)  # type: ignore[arg-type]
