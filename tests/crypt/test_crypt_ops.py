"""Whole-model encrypt / decrypt / rewrap / inspect: layout, contexts, workers, clean failures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tests.crypt.crypt_helpers import all_files, tree_bytes, write_model

from weightvault.crypt import (
    KeyringKey,
    X25519Identity,
    decrypt_path,
    encrypt_path,
    inspect_path,
    rewrap_path,
)
from weightvault.crypt.envelope import unlock
from weightvault.errors import DecryptionError, InputError, UsageError, VerificationError


@pytest.fixture
def key() -> KeyringKey:
    return KeyringKey(os.urandom(32))


def test_tree_layout_and_contexts(model: Path, tmp_path: Path, key: KeyringKey) -> None:
    result = encrypt_path(model, tmp_path / "enc", recipients=[key])
    names = sorted(tree_bytes(model))
    assert sorted(tree_bytes(tmp_path / "enc")) == [n + ".wvenc" for n in names]
    infos = inspect_path(tmp_path / "enc")
    contexts = [i.header.context for i in infos]
    assert [c.path for c in contexts] == [f.name for f in result.files]
    assert [c.file_index for c in contexts] == list(range(len(names)))
    assert {c.file_count for c in contexts} == {len(names)}
    assert {c.model for c in contexts} == {"model"}
    assert len({c.set_id for c in contexts}) == 1
    assert [i.plaintext_size for i in infos] == [f.plaintext_size for f in result.files]
    decrypt_path(tmp_path / "enc", tmp_path / "plain", identities=[key])
    assert tree_bytes(tmp_path / "plain") == tree_bytes(model)


def test_default_output_names(model: Path, key: KeyringKey) -> None:
    encrypt_path(model, recipients=[key])
    encrypted = model.with_name("model.wvenc")
    assert encrypted.is_dir()
    original = tree_bytes(model)
    shutil.rmtree(model)
    decrypt_path(encrypted, identities=[key])
    assert tree_bytes(model) == original


def test_single_file(tmp_path: Path, key: KeyringKey) -> None:
    source = tmp_path / "weights.safetensors"
    source.write_bytes(os.urandom(40000))
    result = encrypt_path(source, recipients=[key], model_name="llama-tiny")
    assert result.output == tmp_path / "weights.safetensors.wvenc"
    [info] = inspect_path(result.output)
    assert (info.header.context.model, info.header.context.path) == (
        "llama-tiny",
        "weights.safetensors",
    )
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    decrypt_path(result.output, out_dir, identities=[key])
    assert (out_dir / "weights.safetensors").read_bytes() == source.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        decrypt_path(result.output, out_dir, identities=[key])
    decrypt_path(result.output, out_dir, identities=[key], force=True)


def test_results_do_not_depend_on_worker_count(tmp_path: Path, key: KeyringKey) -> None:
    sizes = {f"shard-{i:02d}.bin": (i * 7919) % 70000 for i in range(9)}
    model = write_model(tmp_path / "m", sizes)
    encrypted = {}
    for workers in (1, 2, 3):
        encrypted[workers] = tmp_path / f"enc{workers}"
        encrypt_path(model, encrypted[workers], recipients=[key], workers=workers)
        for other in (1, 2):
            out = tmp_path / f"plain-{workers}-{other}"
            decrypt_path(encrypted[workers], out, identities=[key], workers=other)
            assert tree_bytes(out) == tree_bytes(model)
    shapes = {
        w: [
            (i.header.context.path, i.header.context.file_index, i.file_size)
            for i in inspect_path(p)
        ]
        for w, p in encrypted.items()
    }
    assert shapes[1] == shapes[2] == shapes[3]


def test_rewrap_keeps_the_body_bytes_identical(
    model: Path, tmp_path: Path, key: KeyringKey
) -> None:
    encrypt_path(model, tmp_path / "enc", recipients=[key])
    before = {}
    for info in inspect_path(tmp_path / "enc"):
        before[info.location.name] = info.location.read_bytes()[info.header.size :]
    alice, bob = X25519Identity.generate(), X25519Identity.generate()
    rewrap_path(tmp_path / "enc", identities=[key], recipients=[alice.recipient()])
    for info in inspect_path(tmp_path / "enc"):
        assert info.location.read_bytes()[info.header.size :] == before[info.location.name]
        assert [s.TYPE for s in info.header.recipients] == ["x25519"]
    # the old key is removed, alice opens; then add bob while keeping alice
    with pytest.raises(DecryptionError):
        decrypt_path(tmp_path / "enc", tmp_path / "p0", identities=[key])
    rewrap_path(
        tmp_path / "enc", identities=[alice], recipients=[bob.recipient()], keep_existing=True
    )
    for who in (alice, bob):
        out = tmp_path / f"p-{id(who)}"
        decrypt_path(tmp_path / "enc", out, identities=[who])
        assert tree_bytes(out) == tree_bytes(model)
    for info in inspect_path(tmp_path / "enc"):
        assert info.location.read_bytes()[info.header.size :] == before[info.location.name]


def test_rewrap_to_another_folder_and_with_the_wrong_identity(
    model: Path, tmp_path: Path, key: KeyringKey
) -> None:
    encrypt_path(model, tmp_path / "enc", recipients=[key])
    snapshot = tree_bytes(tmp_path / "enc")
    new = KeyringKey(os.urandom(32))
    with pytest.raises(DecryptionError, match="cannot decrypt"):
        rewrap_path(tmp_path / "enc", identities=[new], recipients=[new])
    assert tree_bytes(tmp_path / "enc") == snapshot  # untouched
    rewrap_path(tmp_path / "enc", identities=[key], recipients=[new], output=tmp_path / "enc2")
    assert tree_bytes(tmp_path / "enc") == snapshot
    decrypt_path(tmp_path / "enc2", tmp_path / "plain", identities=[new])
    assert tree_bytes(tmp_path / "plain") == tree_bytes(model)


def test_file_moved_within_the_tree_is_refused(
    model: Path, tmp_path: Path, key: KeyringKey
) -> None:
    encrypt_path(model, tmp_path / "enc", recipients=[key])
    enc = tmp_path / "enc"
    a = enc / "model-00001-of-00002.safetensors.wvenc"
    b = enc / "model-00002-of-00002.safetensors.wvenc"
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    with pytest.raises(VerificationError, match="encrypted for path"):
        decrypt_path(enc, tmp_path / "plain", identities=[key])
    assert not (tmp_path / "plain").exists()


def test_file_from_another_model_or_run_is_refused(
    model: Path, tmp_path: Path, key: KeyringKey
) -> None:
    encrypt_path(model, tmp_path / "enc", recipients=[key])
    encrypt_path(model, tmp_path / "enc-again", recipients=[key])  # same model, another run
    name = "config.json.wvenc"
    shutil.copy(tmp_path / "enc-again" / name, tmp_path / "enc" / name)
    with pytest.raises(VerificationError, match="do not mix"):
        decrypt_path(tmp_path / "enc", tmp_path / "plain", identities=[key])
    assert not (tmp_path / "plain").exists()


def test_missing_or_extra_file_is_refused(model: Path, tmp_path: Path, key: KeyringKey) -> None:
    encrypt_path(model, tmp_path / "enc", recipients=[key])
    (tmp_path / "enc" / "tokenizer" / "vocab.txt.wvenc").unlink()
    with pytest.raises(VerificationError, match="missing or was added"):
        decrypt_path(tmp_path / "enc", tmp_path / "plain", identities=[key])
    (tmp_path / "enc" / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match=r"not a \.wvenc file"):
        decrypt_path(tmp_path / "enc", tmp_path / "plain", identities=[key])


def test_expect_model(model: Path, tmp_path: Path, key: KeyringKey) -> None:
    encrypt_path(model, tmp_path / "enc", recipients=[key], model_name="org/model-a")
    with pytest.raises(VerificationError, match="org/model-a"):
        decrypt_path(tmp_path / "enc", tmp_path / "p", identities=[key], expect_model="model-b")
    decrypt_path(tmp_path / "enc", tmp_path / "p", identities=[key], expect_model="org/model-a")


def test_renamed_single_file_is_refused_unless_unsafe(tmp_path: Path, key: KeyringKey) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(b"weights")
    encrypt_path(source, recipients=[key])
    moved = tmp_path / "b.bin.wvenc"
    (tmp_path / "a.bin.wvenc").rename(moved)
    with pytest.raises(VerificationError, match="rename it back"):
        decrypt_path(moved, identities=[key])
    decrypt_path(moved, tmp_path / "out", identities=[key], unsafe_any_path=True)
    assert (tmp_path / "out").read_bytes() == b"weights"


def test_a_tampered_file_in_a_tree_leaves_no_output_at_all(tmp_path: Path, key: KeyringKey) -> None:
    model = write_model(tmp_path / "m", {f"s{i}.bin": 40000 for i in range(6)})
    encrypt_path(model, tmp_path / "enc", recipients=[key])
    victim = tmp_path / "enc" / "s3.bin.wvenc"
    data = bytearray(victim.read_bytes())
    data[-5] ^= 1
    victim.write_bytes(bytes(data))
    for workers in (1, 2):
        with pytest.raises(DecryptionError, match=r"s3\.bin\.wvenc: cannot decrypt"):
            decrypt_path(tmp_path / "enc", tmp_path / "plain", identities=[key], workers=workers)
        assert not (tmp_path / "plain").exists()
        assert sorted(os.listdir(tmp_path)) == ["enc", "m"]
        assert not [n for n in all_files(tmp_path) if "wvtmp" in n]


def test_existing_output_folder_needs_force(model: Path, tmp_path: Path, key: KeyringKey) -> None:
    encrypt_path(model, tmp_path / "enc", recipients=[key])
    with pytest.raises(InputError, match="not empty"):
        encrypt_path(model, tmp_path / "enc", recipients=[key])
    encrypt_path(model, tmp_path / "enc", recipients=[key], force=True)
    assert all(".wvtmp" not in n for n in all_files(tmp_path / "enc"))
    with pytest.raises(UsageError, match="inside the model"):
        encrypt_path(model, model / "enc", recipients=[key])
    with pytest.raises(UsageError, match="no recipients"):
        encrypt_path(model, tmp_path / "x", recipients=[])


def test_manifest_digest_is_bound(model: Path, tmp_path: Path, key: KeyringKey) -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    encrypt_path(model, tmp_path / "enc", recipients=[key], manifest_digest=digest)
    assert {i.header.context.manifest_digest for i in inspect_path(tmp_path / "enc")} == {digest}
    item = unlock(tmp_path / "enc" / "config.json.wvenc", [key])
    assert digest.encode() in item.header.body_context()
