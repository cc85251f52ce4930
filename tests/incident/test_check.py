"""Suspect files found in the wild, identified by root, file and tensor digest."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tests.incident.conftest import PWNED, History, Payload

from weightvault.incident import build_timeline, load_evidence, read_log_key
from weightvault.incident.check import check_files, tensor_digests


def _timeline(history: History):  # type: ignore[no-untyped-def]
    evidence = load_evidence(audit=history.export, log_key=read_log_key(str(history.log_key)))
    return build_timeline(evidence, "llama")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weightvault", "incident", "check", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_exact_copy_is_identified_with_the_grants_that_pulled_it(history: History) -> None:
    pulled = history.root / "pulled-A" / "model.safetensors"
    result = check_files([pulled], _timeline(history))
    (match,) = result.matches
    assert (match.match, match.version, match.version_file) == ("file", "v1", "model.safetensors")
    assert {g["grant_id"] for g in match.grants} == {history.grants["A"], history.grants["C"]}
    assert {g["grantee"] for g in match.grants} == {"rita", "ravi"}


def test_a_whole_folder_is_identified_by_its_root_digest(history: History, tmp_path: Path) -> None:
    folder = tmp_path / "leak"
    shutil.copytree(history.root / "pulled-C", folder)
    result = check_files([folder], _timeline(history))
    assert result.matches[0].match == "root" and result.matches[0].version == "v1"
    assert {m.match for m in result.matches[1:]} == {"file"}


def test_resaved_copies_are_identified_by_their_tensors(history: History, tmp_path: Path) -> None:
    tensors = load_file(str(history.root / "pulled-A" / "model.safetensors"))
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    save_file(
        {f"model.{name}": value for name, value in tensors.items()},
        str(tmp_path / "renamed.safetensors"),
        metadata={"format": "pt", "source": "somewhere"},
    )
    partial = dict(tensors)
    partial["head.bias"] = torch.zeros_like(partial["head.bias"])  # a fine-tune of one tensor
    save_file(partial, str(tmp_path / "tuned.safetensors"))
    suspects = [
        tmp_path / n for n in ("pytorch_model.bin", "renamed.safetensors", "tuned.safetensors")
    ]
    result = check_files(suspects, _timeline(history), data_dir=history.data_dir)
    assert result.tensor_reference
    for match in result.matches:
        assert (match.match, match.version, match.version_file) == (
            "tensors",
            "v1",
            "model.safetensors",
        ), match
        assert {g["grant_id"] for g in match.grants} == {history.grants["A"], history.grants["C"]}
    assert result.matches[0].bytes_fraction == 1.0
    assert result.matches[2].tensors_matched == 1 and 0.99 < result.matches[2].bytes_fraction < 1


def test_a_stored_pytorch_checkpoint_is_found_in_its_safetensors_copy(
    history: History, tmp_path: Path
) -> None:
    """The other direction: custody holds a ``.bin`` (decrypted only into a private temporary
    folder, read through the scanner's converter); the suspect is a safetensors re-save."""
    original = torch.load(history.root / "llama-v5" / "pytorch_model.bin", weights_only=True)
    save_file({"w": original["layer.weight"]}, str(tmp_path / "model.safetensors"))
    result = check_files([tmp_path / "model.safetensors"], _timeline(history),
                         data_dir=history.data_dir)  # fmt: skip
    (match,) = result.matches
    assert (match.match, match.version, match.version_file) == (
        "tensors",
        "v5",
        "pytorch_model.bin",
    )
    assert match.grants == ()  # nobody pulled v5


def test_other_weights_and_other_files_match_nothing(history: History, tmp_path: Path) -> None:
    torch.save({"w": torch.randn(64, 64)}, tmp_path / "other.bin")
    (tmp_path / "notes.txt").write_text("nothing to see")
    result = check_files(
        [tmp_path / "other.bin", tmp_path / "notes.txt"],
        _timeline(history),
        data_dir=history.data_dir,
    )
    assert [m.match for m in result.matches] == ["none", "none"]
    assert not result.identified


def test_a_dangerous_pickle_is_never_unpickled(history: History, tmp_path: Path) -> None:
    PWNED.unlink(missing_ok=True)
    bad = tmp_path / "pytorch_model.bin"
    bad.write_bytes(pickle.dumps({"w": Payload()}))
    result = check_files([bad], _timeline(history), data_dir=history.data_dir)
    (match,) = result.matches
    assert match.match == "none" and "refused" in match.note
    assert not PWNED.exists()


def test_tensor_digests_ignore_names_and_container(tmp_path: Path) -> None:
    tensors = {"a": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.ones(5)}
    save_file(tensors, str(tmp_path / "x.safetensors"))
    torch.save({"renamed": tensors["a"], "other": tensors["b"]}, tmp_path / "x.bin")
    reshaped = {"a": tensors["a"].reshape(4, 3), "b": tensors["b"]}
    save_file(reshaped, str(tmp_path / "y.safetensors"))
    first = tensor_digests(tmp_path / "x.safetensors")
    assert first is not None and len(first) == 2
    assert set(first) == set(tensor_digests(tmp_path / "x.bin") or {})
    assert len(set(first) & set(tensor_digests(tmp_path / "y.safetensors") or {})) == 1  # shape


def test_cli_check_exit_codes(history: History, tmp_path: Path) -> None:
    source = ["--model", "llama", "--data", str(history.data_dir)]
    copy = history.root / "pulled-A" / "model.safetensors"
    found = _cli(str(copy), *source)
    assert found.returncode == 0, found.stderr
    assert f"llama@v1, file model.safetensors (SHA-256); pulled under {history.grants['A']}" in (
        found.stdout
    )
    (tmp_path / "x.txt").write_text("x")
    mixed = _cli(str(copy), str(tmp_path / "x.txt"), *source, "--json")
    assert mixed.returncode == 1
    assert [m["match"] for m in json.loads(mixed.stdout)["matches"]] == ["file", "none"]
    missing = _cli(str(tmp_path / "absent"), *source)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
