"""Worker pools of the tree operations: progress per block, stopping, scripts without a
``__main__`` guard, ``encrypt -o`` names."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.crypt.crypt_helpers import all_files, tree_bytes, write_model

from weightvault.cli import run
from weightvault.crypt import KeyringKey, decrypt_path, encrypt_path, rewrap_path
from weightvault.crypt.stream import PLAIN_BLOCK


@pytest.fixture
def key() -> KeyringKey:
    return KeyringKey(os.urandom(32))


@pytest.fixture
def big_model(tmp_path: Path) -> Path:
    """Three files of several 1 MiB blocks each, one of them in a sub-folder."""
    return write_model(
        tmp_path / "big",
        {"a.bin": 3 * PLAIN_BLOCK + 17, "b.bin": 2 * PLAIN_BLOCK, "sub/c.bin": PLAIN_BLOCK + 1},
    )


def test_progress_advances_per_block_not_per_file(
    big_model: Path, tmp_path: Path, key: KeyringKey
) -> None:
    total = sum(p.stat().st_size for p in big_model.rglob("*") if p.is_file())
    steps: list[int] = []
    encrypt_path(big_model, tmp_path / "enc", recipients=[key], workers=2, progress=steps.append)
    assert sum(steps) == total
    assert len(steps) >= 4 + 2 + 2  # one call per (started) 1 MiB block of every file
    assert max(steps) <= PLAIN_BLOCK
    encrypted_total = sum(p.stat().st_size for p in (tmp_path / "enc").rglob("*") if p.is_file())
    steps.clear()
    decrypt_path(tmp_path / "enc", tmp_path / "plain", identities=[key], progress=steps.append)
    assert sum(steps) == encrypted_total  # the bar of decrypt counts the encrypted files
    assert len(steps) >= 4 + 2 + 2


def test_a_progress_callback_that_raises_stops_every_worker_and_leaves_nothing(
    big_model: Path, tmp_path: Path, key: KeyringKey
) -> None:
    calls: list[str] = []

    def stop_after_two(count: int) -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        encrypt_path(
            big_model, tmp_path / "enc", recipients=[key], workers=3, progress=stop_after_two
        )
    assert not (tmp_path / "enc").exists()
    assert all(name.startswith("weightvault-crypt") for name in calls)
    assert not [t for t in threading.enumerate() if t.name.startswith("weightvault-crypt")]
    # Into an existing folder: the sub-folders the run created go too, the folder stays.
    (tmp_path / "kept").mkdir()
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        encrypt_path(big_model, tmp_path / "kept", recipients=[key], progress=stop_after_two)
    assert all_files(tmp_path / "kept") == [] and list((tmp_path / "kept").iterdir()) == []


def test_a_failing_file_stops_the_others_and_removes_their_outputs(
    big_model: Path, tmp_path: Path, key: KeyringKey
) -> None:
    encrypt_path(big_model, tmp_path / "enc", recipients=[key])
    victim = tmp_path / "enc" / "sub" / "c.bin.wvenc"
    data = bytearray(victim.read_bytes())
    data[-100] ^= 1
    victim.write_bytes(bytes(data))
    before = tree_bytes(tmp_path / "enc")
    from weightvault.errors import DecryptionError

    with pytest.raises(DecryptionError):
        decrypt_path(tmp_path / "enc", tmp_path / "plain", identities=[key], workers=3)
    assert not (tmp_path / "plain").exists()
    assert tree_bytes(tmp_path / "enc") == before


def test_in_place_rewrap_that_fails_midway_changes_no_file(
    big_model: Path, tmp_path: Path, key: KeyringKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    import weightvault.crypt.ops as ops

    encrypt_path(big_model, tmp_path / "enc", recipients=[key])
    before = tree_bytes(tmp_path / "enc")
    real = ops.copy_body
    copied: list[str] = []

    def copy_then_fail_on_b(source: str, *args: object, **kwargs: object) -> int:
        if source.endswith("b.bin.wvenc"):
            time.sleep(0.2)  # the other files are re-wrapped (under temporary names) first
            raise OSError(28, "No space left on device", source)
        copied.append(source)
        return real(source, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ops, "copy_body", copy_then_fail_on_b)
    new_key = KeyringKey(os.urandom(32))
    with pytest.raises(OSError, match="No space left"):
        rewrap_path(tmp_path / "enc", identities=[key], recipients=[new_key], workers=3)
    assert len(copied) == 2
    assert tree_bytes(tmp_path / "enc") == before
    assert all_files(tmp_path / "enc") == sorted(before)  # no temporary file left either


SCRIPT = """
import os, sys
from weightvault.crypt import KeyringKey, decrypt_path, encrypt_path
key = KeyringKey(bytes(32))
encrypt_path(sys.argv[1], sys.argv[2], recipients=[key], workers=8)
decrypt_path(sys.argv[2], sys.argv[3], identities=[key], workers=8)
print("ok")
"""


def test_workers_work_in_a_script_without_a_main_guard(big_model: Path, tmp_path: Path) -> None:
    """The old process pool re-imported ``__main__`` in every worker: a script without an
    ``if __name__ == "__main__"`` guard failed with a wrong "out of memory" message."""
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), str(big_model), str(tmp_path / "e"), str(tmp_path / "p")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n" and done.stderr == ""
    assert tree_bytes(tmp_path / "p") == tree_bytes(big_model)


def test_workers_must_be_positive(big_model: Path, tmp_path: Path, key: KeyringKey) -> None:
    from weightvault.errors import UsageError

    for bad in (0, -1):
        with pytest.raises(UsageError, match="at least 1") as info:
            encrypt_path(big_model, tmp_path / "x", recipients=[key], workers=bad)
        assert "--" not in str(info.value)  # library errors name no CLI flag
    assert not (tmp_path / "x").exists()


def test_results_do_not_depend_on_the_number_of_workers(
    big_model: Path, tmp_path: Path, key: KeyringKey
) -> None:
    outputs = []
    for workers in (1, 2, 5):
        encrypted = tmp_path / f"e{workers}"
        encrypt_path(big_model, encrypted, recipients=[key], workers=workers)
        plain = tmp_path / f"p{workers}"
        decrypt_path(encrypted, plain, identities=[key], workers=6 - workers)
        outputs.append(tree_bytes(plain))
    assert outputs[0] == outputs[1] == outputs[2] == tree_bytes(big_model)


def test_encrypt_output_file_name_must_end_in_wvenc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "w.bin"
    source.write_bytes(os.urandom(5000))
    keyring = ["--to", f"keyring:{tmp_path / 'k.kek'}"]
    assert run(["encrypt", str(source), "-o", str(tmp_path / "w.enc"), *keyring]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "must end in .wvenc" in err and f"use -o {tmp_path / 'w.bin.wvenc'}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin"]
    assert run(["encrypt", str(source), "-o", str(tmp_path / "w.bin.wvenc"), *keyring]) == 0
    (tmp_path / "into").mkdir()
    assert run(["encrypt", str(source), "-o", str(tmp_path / "into"), *keyring]) == 0
    assert (tmp_path / "into" / "w.bin.wvenc").is_file()
    assert capsys.readouterr().err == ""


def test_encrypt_help_documents_the_output_name_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["encrypt", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "must end in .wvenc" in text and "warning" in text


def test_worker_threads_are_gone_when_the_call_returns(
    big_model: Path, tmp_path: Path, key: KeyringKey
) -> None:
    encrypt_path(big_model, tmp_path / "enc", recipients=[key], workers=4)
    deadline = time.monotonic() + 2
    while [t for t in threading.enumerate() if t.name.startswith("weightvault-crypt")]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
