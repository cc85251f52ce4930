"""The encrypt / decrypt / rewrap / inspect / x25519-keygen commands, in process and as
processes."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.crypt.crypt_helpers import all_files, tree_bytes

from weightvault.cli.app import run


def _one_error_line(err: str) -> str:
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_encrypt_then_decrypt_just_works_with_the_default_keyring(
    model: Path, tmp_path: Path, weightvault_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["encrypt", str(model), "-o", str(tmp_path / "enc")]) == 0
    out = capsys.readouterr().out
    assert "encrypted 5 files of model 'model'" in out
    assert (weightvault_home / "keyring.kek").is_file()
    assert run(["decrypt", str(tmp_path / "enc"), "-o", str(tmp_path / "plain")]) == 0
    assert tree_bytes(tmp_path / "plain") == tree_bytes(model)
    for name in all_files(tmp_path / "plain"):
        assert stat.S_IMODE(os.stat(tmp_path / "plain" / name).st_mode) == 0o600


def test_single_file_default_names(tmp_path: Path) -> None:
    source = tmp_path / "w.safetensors"
    source.write_bytes(os.urandom(20000))
    original = source.read_bytes()
    assert run(["encrypt", str(source)]) == 0
    source.unlink()
    assert run(["decrypt", str(tmp_path / "w.safetensors.wvenc")]) == 0
    assert source.read_bytes() == original


def test_errors_are_one_line_with_exit_codes(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    enc = tmp_path / "enc"
    assert run(["encrypt", str(model), "-o", str(enc)]) == 0
    capsys.readouterr()
    # existing output without --force: usage/input error, exit 2
    assert run(["encrypt", str(model), "-o", str(enc)]) == 2
    assert "pass --force" in _one_error_line(capsys.readouterr().err)
    # wrong identity: decryption failure, exit 1, message names the file
    other = tmp_path / "other.key"
    assert run(["x25519-keygen", "-o", str(other)]) == 0
    capsys.readouterr()
    assert run(["decrypt", str(enc), "-o", str(tmp_path / "p"), "-i", str(other)]) == 1
    err = _one_error_line(capsys.readouterr().err)
    assert "config.json.wvenc: cannot decrypt" in err
    assert not (tmp_path / "p").exists()
    # malformed file: format error, exit 2
    bogus = tmp_path / "bogus.wvenc"
    bogus.write_bytes(b"not encrypted at all")
    assert run(["decrypt", str(bogus), "-o", str(tmp_path / "q")]) == 2
    assert "bad magic" in _one_error_line(capsys.readouterr().err)
    assert run(["inspect", str(tmp_path / "missing")]) == 2
    assert "no such file" in _one_error_line(capsys.readouterr().err)
    assert run(["encrypt", str(model), "-o", str(tmp_path / "r"), "--to", "bob"]) == 2
    assert "not a recipient" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


def test_passphrase_from_environment_never_from_argv(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    enc = tmp_path / "enc"
    args = ["--to", "passphrase", "--passphrase-env", "WV_PASS", "--scrypt-log-n", "10"]
    assert run(["encrypt", str(model), "-o", str(enc), *args]) == 2
    assert "WV_PASS" in _one_error_line(capsys.readouterr().err)
    monkeypatch.setenv("WV_PASS", "tr0ub4dor &3")
    assert run(["encrypt", str(model), "-o", str(enc), *args]) == 0
    # A folder output not ending in .wvenc is accepted, with a warning after the result.
    assert capsys.readouterr().err.startswith(f"warning: {enc}: folder name does not end in")
    plain = tmp_path / "plain"
    ident = ["-i", "passphrase", "--passphrase-env", "WV_PASS"]
    monkeypatch.setenv("WV_PASS", "wrong")
    assert run(["decrypt", str(enc), "-o", str(plain), *ident]) == 1
    _one_error_line(capsys.readouterr().err)
    monkeypatch.setenv("WV_PASS", "tr0ub4dor &3")
    assert run(["decrypt", str(enc), "-o", str(plain), *ident]) == 0
    assert tree_bytes(plain) == tree_bytes(model)
    # without a terminal and without --passphrase-env there is no way to ask: clear error
    assert run(["decrypt", str(enc), "-o", str(tmp_path / "x"), "-i", "passphrase"]) == 2
    assert "--passphrase-env" in _one_error_line(capsys.readouterr().err)


def test_inspect_shows_no_secrets(
    model: Path, tmp_path: Path, weightvault_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    enc = tmp_path / "enc"
    assert run(["encrypt", str(model), "-o", str(enc), "--model-name", "acme/m1"]) == 0
    capsys.readouterr()
    assert run(["inspect", str(enc), "--json"]) == 0
    shown = capsys.readouterr().out
    documents = json.loads(shown)
    assert documents[0]["context"]["path"] == "config.json"
    assert {d["context"]["model"] for d in documents} == {"acme/m1"}
    kek_line = (weightvault_home / "keyring.kek").read_text().strip().splitlines()[-1]
    assert kek_line.split(":", 1)[1] not in shown
    assert "wrapped" not in shown and "nonce" not in shown
    assert run(["inspect", str(enc / "config.json.wvenc")]) == 0
    text = capsys.readouterr().out
    assert "model 'acme/m1', path 'config.json', file 1 of 5" in text
    assert "recipients: keyring " in text


def test_rewrap_cli_rotates_to_an_x25519_recipient(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    enc = tmp_path / "enc"
    assert run(["encrypt", str(model), "-o", str(enc)]) == 0
    ident = tmp_path / "alice.key"
    assert run(["x25519-keygen", "-o", str(ident)]) == 0
    recipient = capsys.readouterr().out.strip().splitlines()[-1]
    assert recipient.startswith("wvx25519:")
    assert stat.S_IMODE(os.stat(ident).st_mode) == 0o600
    # The last 72 bytes lie in the body even for an empty file (56 + one 16-byte tag).
    bodies = {n: (enc / n).read_bytes()[-72:] for n in all_files(enc)}
    assert run(["rewrap", str(enc), "--to", recipient]) == 0
    assert {n: (enc / n).read_bytes()[-72:] for n in all_files(enc)} == bodies
    assert run(["decrypt", str(enc), "-o", str(tmp_path / "p1")]) == 1  # keyring removed
    capsys.readouterr()
    assert run(["decrypt", str(enc), "-o", str(tmp_path / "p2"), "-i", str(ident)]) == 0
    assert tree_bytes(tmp_path / "p2") == tree_bytes(model)
    assert run(["rewrap", str(enc), "-i", str(ident)]) == 2
    assert "--to" in _one_error_line(capsys.readouterr().err)


def _spawn(args: list[str], home: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "WEIGHTVAULT_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "weightvault", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill_while_writing(process: subprocess.Popen[bytes], folder: Path) -> None:
    """SIGKILL ``process`` as soon as it has an output file in ``folder`` with data in it."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "finished before it could be killed; use a bigger file"
        try:
            fds = os.listdir(f"/proc/{process.pid}/fd")
        except FileNotFoundError:
            continue
        for fd in fds:
            link = f"/proc/{process.pid}/fd/{fd}"
            try:
                target = os.readlink(link)
                size = os.stat(link).st_size
            except OSError:
                continue
            if target.startswith(str(folder)) and size > 0 and ".wvenc" not in target[-8:]:
                process.send_signal(signal.SIGKILL)
                process.wait()
                return
    raise AssertionError("never saw the output being written")


MARKER = b"PLAINTEXT-WEIGHTS-MARKER-0123456789\n"


def _contains_marker(path: Path) -> bool:
    with open(path, "rb") as handle:
        tail = b""
        while block := handle.read(1 << 22):
            if MARKER in tail + block:
                return True
            tail = block[-len(MARKER) :]
    return False


@pytest.mark.slow
def test_sigkill_during_decryption_leaves_no_plaintext_on_disk(tmp_path: Path) -> None:
    home = tmp_path / "home"
    source = tmp_path / "big.bin"
    with open(source, "wb") as handle:
        block = MARKER * ((4 << 20) // len(MARKER))
        for _ in range(64):  # 256 MiB
            handle.write(block)
    assert run(["encrypt", str(source), "--to", f"keyring:{home / 'k.kek'}"]) == 0
    source.unlink()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    process = _spawn(
        [
            "decrypt",
            str(tmp_path / "big.bin.wvenc"),
            "-o",
            str(out_dir / "big.bin"),
            "-i",
            f"keyring:{home / 'k.kek'}",
        ],
        home,
    )
    _kill_while_writing(process, out_dir)
    assert process.returncode == -signal.SIGKILL
    assert os.listdir(out_dir) == []
    for name in all_files(tmp_path):
        assert not _contains_marker(tmp_path / name), name


@pytest.mark.slow
def test_sigkill_during_encryption_leaves_nothing_under_the_final_name(tmp_path: Path) -> None:
    home = tmp_path / "home"
    source = tmp_path / "big.bin"
    with open(source, "wb") as handle:
        for _ in range(64):
            handle.write(os.urandom(4 << 20))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    process = _spawn(
        [
            "encrypt",
            str(source),
            "-o",
            str(out_dir / "big.bin.wvenc"),
            "--to",
            f"keyring:{home / 'k.kek'}",
        ],
        home,
    )
    _kill_while_writing(process, out_dir)
    assert not (out_dir / "big.bin.wvenc").exists()


def test_rewrap_rotates_a_passphrase(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    enc = tmp_path / "enc"
    monkeypatch.setenv("OLD_PASS", "old secret")
    monkeypatch.setenv("NEW_PASS", "new secret")
    low = ["--scrypt-log-n", "10"]
    assert run(["encrypt", str(model), "-o", str(enc), "--to", "passphrase",
                "--passphrase-env", "OLD_PASS", *low]) == 0  # fmt: skip
    assert run(["rewrap", str(enc), "-i", "passphrase", "--passphrase-env", "OLD_PASS",
                "--to", "passphrase", "--new-passphrase-env", "NEW_PASS", *low]) == 0  # fmt: skip
    capsys.readouterr()
    for env, code in (("OLD_PASS", 1), ("NEW_PASS", 0)):
        out = tmp_path / f"plain-{env}"
        args = ["decrypt", str(enc), "-o", str(out), "-i", "passphrase", "--passphrase-env", env]
        assert run(args) == code
    assert tree_bytes(tmp_path / "plain-NEW_PASS") == tree_bytes(model)
    assert not (tmp_path / "plain-OLD_PASS").exists()


def test_missing_input_is_named_before_any_key_is_needed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEIGHTVAULT_HOME", str(tmp_path / "empty-home"))  # no keyring there
    assert run(["decrypt", str(tmp_path / "nope.wvenc"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nope.wvenc: no such file or directory" in err
    assert "keyring" not in err
    assert not (tmp_path / "out").exists()
