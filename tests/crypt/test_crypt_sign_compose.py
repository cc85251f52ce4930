"""Sign, then encrypt: after decryption ``weightvault verify`` passes; ciphertexts moved to
another model or path fail on their context before any plaintext is written."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from tests.crypt.crypt_helpers import tree_bytes, write_model
from tests.keyfiles import write_ec_key_pair

from weightvault.cli.app import run
from weightvault.crypt import inspect_path


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return write_ec_key_pair(tmp_path, "signing")


def test_sign_encrypt_decrypt_verify(
    model: Path, tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    key, pub = keys
    assert run(["sign", str(model), "--key", str(key)]) == 0
    signature = model / "model.sig"
    assert signature.is_file()
    enc = tmp_path / "enc"
    args = ["encrypt", str(model), "-o", str(enc), "--manifest-digest", str(signature)]
    assert run(args) == 0
    expected = "sha256:" + hashlib.sha256(signature.read_bytes()).hexdigest()
    assert {i.header.context.manifest_digest for i in inspect_path(enc)} == {expected}
    plain = tmp_path / "plain"
    assert run(["decrypt", str(enc), "-o", str(plain)]) == 0
    assert tree_bytes(plain) == tree_bytes(model)
    capsys.readouterr()
    assert run(["verify", str(plain), "--key", str(pub)]) == 0
    assert "signature OK" in capsys.readouterr().out


def test_ciphertext_moved_to_another_model_or_path_fails(
    model: Path, tmp_path: Path, keys: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    key, _pub = keys
    other = write_model(tmp_path / "other", {"config.json": 611, "weights.bin": 70000}, seed=9)
    for folder in (model, other):
        assert run(["sign", str(folder), "--key", str(key)]) == 0
        assert run(["encrypt", str(folder), "-o", str(tmp_path / f"{folder.name}.wvenc")]) == 0
    capsys.readouterr()
    enc = tmp_path / "model.wvenc"
    # another model's file under the same name
    original = (enc / "config.json.wvenc").read_bytes()
    shutil.copy(tmp_path / "other.wvenc" / "config.json.wvenc", enc / "config.json.wvenc")
    assert run(["decrypt", str(enc), "-o", str(tmp_path / "p1")]) == 1
    assert "do not mix" in capsys.readouterr().err
    assert not (tmp_path / "p1").exists()
    # the same model's file at another path
    (enc / "config.json.wvenc").write_bytes(original)
    vocab = enc / "tokenizer" / "vocab.txt.wvenc"
    vocab_bytes = vocab.read_bytes()
    vocab.write_bytes(original)
    (enc / "config.json.wvenc").write_bytes(vocab_bytes)
    assert run(["decrypt", str(enc), "-o", str(tmp_path / "p2")]) == 1
    assert "encrypted for path" in capsys.readouterr().err
    assert not (tmp_path / "p2").exists()
    # single files renamed to each other's names
    single = enc / "config.json.wvenc"
    assert run(["decrypt", str(single), "-o", str(tmp_path / "p3")]) == 1
    assert "rename it back" in capsys.readouterr().err
