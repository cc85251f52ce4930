"""Time-of-check / time-of-use: a file swapped while the model loads is never accepted.

Two kinds of evidence: deterministic swaps at the exact moments that matter (between listing
and opening, between reading and building tensors), and a race harness in which a thread keeps
replacing, renaming and rewriting files while the loader runs, many times over.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from tests.load.conftest import Keys

import weightvault.load as load
import weightvault.load._verified as verified_module
from weightvault.errors import WeightvaultError
from weightvault.signing import sign

GOOD = {"w": torch.arange(4096, dtype=torch.float32)}
EVIL = {"w": -torch.arange(4096, dtype=torch.float32)}  # same size, other bytes


def _model(tmp_path: Path, keys: Keys, serialization: str = "files") -> tuple[Path, Path]:
    folder = tmp_path / "model"
    folder.mkdir()
    save_file(GOOD, folder / "model.safetensors")
    sign(folder, keys.signer, serialization=serialization, shard_size=4096)
    evil = tmp_path / "evil.safetensors"
    save_file(EVIL, evil)
    assert evil.stat().st_size == (folder / "model.safetensors").stat().st_size
    return folder, evil


def test_swap_between_listing_and_open_is_refused(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, evil = _model(tmp_path, keys)
    real_open = verified_module.open_inside

    def swap_then_open(path: Path, shown: str, inside: Path) -> tuple[int, int]:
        os.replace(evil, folder / "model.safetensors")  # the file is replaced after listing
        return real_open(path, shown, inside)

    monkeypatch.setattr(verified_module, "open_inside", swap_then_open)
    with pytest.raises(load.DigestMismatchError):
        load.safetensors(folder, verifier=keys.verifier)


def test_swap_to_a_symlink_before_open_is_refused(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = _model(tmp_path, keys)
    real_open = verified_module.open_inside
    good_copy = tmp_path / "good-copy.safetensors"
    good_copy.write_bytes((folder / "model.safetensors").read_bytes())

    def link_then_open(path: Path, shown: str, inside: Path) -> tuple[int, int]:
        (folder / "model.safetensors").unlink()
        (folder / "model.safetensors").symlink_to(good_copy)  # same bytes, outside the model
        return real_open(path, shown, inside)

    monkeypatch.setattr(verified_module, "open_inside", link_then_open)
    with pytest.raises(load.LoadRefusedError):
        load.safetensors(folder, verifier=keys.verifier)


def test_swap_after_the_read_changes_nothing_loaded(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes parsed are the bytes hashed: a swap once a file has been read is harmless,
    because the loader never goes back to the file."""
    folder, evil = _model(tmp_path, keys)
    real_read = verified_module.read_hashed

    def read_then_swap(*args: Any, **kwargs: Any) -> Any:
        result = real_read(*args, **kwargs)
        os.replace(evil, folder / "model.safetensors")
        return result

    monkeypatch.setattr(verified_module, "read_hashed", read_then_swap)
    tensors = load.safetensors(folder, verifier=keys.verifier)
    assert torch.equal(tensors["w"], GOOD["w"])
    assert not evil.exists()  # the swap did happen


@pytest.mark.parametrize("serialization", ["files", "shards"])
def test_race_harness_never_accepts_a_swapped_file(
    tmp_path: Path, keys: Keys, serialization: str
) -> None:
    """A thread flips the model file between the signed and a tampered version (atomic
    replace, rename, and in-place rewrite) while the loader runs 300 times."""
    folder, evil = _model(tmp_path, keys, serialization)
    target = folder / "model.safetensors"
    good_bytes, evil_bytes = target.read_bytes(), evil.read_bytes()
    stop = threading.Event()
    swaps = 0

    def attacker() -> None:
        nonlocal swaps
        spare = tmp_path / "spare"
        while not stop.is_set():
            for data in (evil_bytes, good_bytes):
                spare.write_bytes(data)
                os.replace(spare, target)  # atomic replace
                with open(target, "r+b") as handle:  # in-place rewrite of the same inode
                    handle.write(data[: len(data) // 2])
                    handle.write(
                        evil_bytes[len(data) // 2 :]
                        if data is good_bytes
                        else good_bytes[len(data) // 2 :]
                    )
                try:  # a moment with the file gone
                    os.rename(target, spare)
                    os.rename(spare, target)
                except FileNotFoundError:
                    pass
                swaps += 1

    thread = threading.Thread(target=attacker, daemon=True)
    thread.start()
    accepted = refused = 0
    try:
        for _ in range(300):
            try:
                tensors = load.safetensors(folder, verifier=keys.verifier, max_workers=1)
            except WeightvaultError:
                refused += 1
                continue
            accepted += 1
            assert torch.equal(tensors["w"], GOOD["w"])  # never the tampered weights
    finally:
        stop.set()
        thread.join()
    assert swaps > 10 and refused > 0
    print(f"accepted {accepted}, refused {refused}, swaps {swaps}")
