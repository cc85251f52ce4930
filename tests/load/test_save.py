"""Sign on save: the hashing writer's digests are the bytes written, the signature verifies with
weightvault and with model-signing, and a Trainer's checkpoints are signed without a second pass
over their weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import model_signing
import pytest
import torch
from safetensors.torch import load_file
from tests.load.conftest import Keys, assert_same, same_parameters, tiny_gpt2, weights

import weightvault.load as load
import weightvault.load.save as save_module
from weightvault.hashing import HashJob
from weightvault.signing import check, digest


def _peer_verifies(folder: Path, keys: Keys, serialization: str, hash_type: str) -> None:
    hashing = model_signing.hashing.Config().set_ignored_paths(paths=["model.sig"])
    if serialization == "shards":
        hashing.use_shard_serialization(hashing_algorithm=hash_type, shard_size=1000)
    else:
        hashing.use_file_serialization(hashing_algorithm=hash_type)
    config = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=keys.public_pem)
    config.set_hashing_config(hashing)
    config.verify(folder, folder / "model.sig")  # raises on any mismatch


def _hashed_names(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files sign_written hashes by reading them (not from the writer)."""
    names: list[str] = []
    real = save_module.hash_jobs

    def spy(jobs: list[HashJob], *args: Any, **kwargs: Any) -> list[bytes]:
        names.extend(job.name for job in jobs)
        return real(jobs, *args, **kwargs)

    monkeypatch.setattr(save_module, "hash_jobs", spy)
    return names


@pytest.mark.parametrize("serialization", ["files", "shards"])
@pytest.mark.parametrize("hash_type", ["sha256", "blake2"])
def test_writer_digests_equal_a_fresh_hash(
    tmp_path: Path, keys: Keys, serialization: str, hash_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "saved"
    (folder).mkdir()
    (folder / "config.json").write_text("{}")
    hashed = _hashed_names(monkeypatch)
    result = load.sign_on_save(
        weights(),
        folder,
        keys.signer,
        serialization=serialization,
        hash_type=hash_type,
        shard_size=1000,
    )
    assert hashed and set(hashed) == {"config.json"}  # the weights came from the writer
    assert_same(load_file(folder / "model.safetensors"), weights())  # safetensors reads it
    fresh = digest(folder, serialization=serialization, hash_type=hash_type, shard_size=1000)
    assert result.manifest.root_digest == fresh.root_digest
    assert check(folder, None, keys.verifier).ok
    _peer_verifies(folder, keys, serialization, hash_type)
    assert_same(load.safetensors(folder, verifier=keys.verifier), weights())


def test_a_changed_written_file_is_hashed_again(tmp_path: Path, keys: Keys) -> None:
    folder = tmp_path / "saved"
    folder.mkdir()
    record = load.save_safetensors(weights(), folder / "model.safetensors")
    torch.manual_seed(1)
    from safetensors.torch import save_file

    save_file({"other": torch.randn(3)}, folder / "model.safetensors")  # replaced after writing
    result = load.sign_written(folder, keys.signer, [record])
    assert result.manifest.root_digest == digest(folder).root_digest
    assert check(folder, None, keys.verifier).ok


def test_transformers_model_signed_on_save(tmp_path: Path, keys: Keys) -> None:
    model = tiny_gpt2()
    folder = tmp_path / "tiny"
    load.sign_on_save(model, folder, keys.signer)
    assert check(folder, None, keys.verifier).ok
    _peer_verifies(folder, keys, "files", "sha256")
    from transformers import AutoModelForCausalLM

    loaded = load.from_pretrained(AutoModelForCausalLM, folder, verifier=keys.verifier)
    assert same_parameters(loaded, model)


def test_trainer_checkpoints_are_signed_as_written(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import Trainer, TrainingArguments

    hashed = _hashed_names(monkeypatch)
    model = tiny_gpt2()
    generator = torch.Generator().manual_seed(3)
    rows = [torch.randint(0, 64, (16,), generator=generator) for _ in range(8)]
    dataset = [{"input_ids": row, "labels": row} for row in rows]
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=4,
        save_steps=2,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        logging_steps=100,
        disable_tqdm=True,
    )
    callback = load.SigningCallback(keys.signer)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[callback])
    trainer.train()
    folders = sorted((tmp_path / "run").glob("checkpoint-*"))
    assert [f.name for f in folders] == ["checkpoint-2", "checkpoint-4"]
    assert len(callback.results) == 2
    assert "model.safetensors" not in hashed  # weights digested by the writer, not reread
    for folder in folders:
        assert (folder / "model.sig").is_file()
        assert check(folder, None, keys.verifier).ok, folder
        _peer_verifies(folder, keys, "files", "sha256")
    from transformers import GPT2LMHeadModel

    last = load.from_pretrained(GPT2LMHeadModel, folders[-1], verifier=keys.verifier)
    assert same_parameters(last, trainer.model)
    import transformers.modeling_utils as modeling_utils
    from safetensors.torch import save_file

    assert modeling_utils.__dict__["safe_save_file"] is save_file  # writer put back


def test_interrupted_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "saved"
    folder.mkdir()
    real = save_module._tensor_bytes
    calls = 0

    def interrupted(tensor: torch.Tensor) -> memoryview:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the weights
        return real(tensor)

    monkeypatch.setattr(save_module, "_tensor_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load.save_safetensors(weights(), folder / "model.safetensors")
    assert list(folder.iterdir()) == []  # neither the file nor its temporary
