"""crypt's one-file doors for other packages: encrypt_file / decrypt_file, and unlock_header /
rewrap_header (what the custody service uses to re-wrap a stored header for a grantee)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from weightvault.crypt import (
    FileContext,
    KeyringKey,
    X25519Identity,
    decrypt_file,
    encrypt_file,
    parse_header,
    rewrap_header,
    unlock_header,
)
from weightvault.crypt.envelope import unlock
from weightvault.crypt.format import serialize_header
from weightvault.errors import DecryptionError, FormatError, UsageError, VerificationError

CONTEXT = FileContext(
    model="m", path="w.bin", file_index=0, file_count=1, set_id="ab" * 16, manifest_digest=None
)


def _encrypted(tmp_path: Path, key: KeyringKey, size: int = 40_000) -> tuple[Path, bytes]:
    plain = os.urandom(size)
    source = tmp_path / "w.bin"
    source.write_bytes(plain)
    target = tmp_path / "w.bin.wvenc"
    sealed = encrypt_file(source, target, CONTEXT, [key])
    assert sealed.size == target.stat().st_size
    assert sealed.header_size == unlock(target, [key]).body_offset
    assert sealed.body_size == sealed.size - sealed.header_size
    return target, plain


def test_encrypt_file_and_decrypt_file_round_trip_with_the_digest_checked(tmp_path: Path) -> None:
    key = KeyringKey(os.urandom(32))
    encrypted, plain = _encrypted(tmp_path, key)
    out = tmp_path / "out.bin"
    size = decrypt_file(encrypted, out, [key], expected_sha256=hashlib.sha256(plain).hexdigest())
    assert size == len(plain)
    assert out.read_bytes() == plain


def test_decrypt_file_with_a_wrong_digest_leaves_no_plaintext(tmp_path: Path) -> None:
    key = KeyringKey(os.urandom(32))
    encrypted, _plain = _encrypted(tmp_path, key)
    out = tmp_path / "out.bin"
    with pytest.raises(VerificationError, match="SHA-256 does not match"):
        decrypt_file(encrypted, out, [key], expected_sha256="0" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin", "w.bin.wvenc"]


def test_unlock_header_skips_a_stanza_that_opens_to_another_key(tmp_path: Path) -> None:
    """The header MAC decides which stanza is right, as in crypt's file unlock: a stanza that
    unwraps to some other key is passed over, not taken (the custody copy used to stop there)."""
    key = KeyringKey(os.urandom(32))
    dek = os.urandom(32)
    header = serialize_header(CONTEXT, (key.wrap(os.urandom(32)), key.wrap(dek)), dek)
    opened = unlock_header(header, [key], "w.bin")
    assert opened.dek == dek
    path = tmp_path / "header-only.wvenc"
    path.write_bytes(header)
    assert unlock_header(parse_header(path.read_bytes(), "w.bin"), [key], "w.bin").dek == dek


def test_every_secret_dependent_header_failure_is_the_uniform_error(tmp_path: Path) -> None:
    key = KeyringKey(os.urandom(32))
    encrypted, _plain = _encrypted(tmp_path, key)
    header = parse_header(encrypted.read_bytes(), "w.bin")
    raw = header.raw + header.mac
    flipped_mac = raw[:-1] + bytes([raw[-1] ^ 1])
    messages = set()
    for data, identities in (
        (flipped_mac, [key]),
        (raw, [KeyringKey(os.urandom(32))]),
        (raw, [X25519Identity.generate()]),
    ):
        with pytest.raises(DecryptionError) as excinfo:
            unlock_header(data, identities, "w.bin")
        messages.add(excinfo.value.message)
    assert len(messages) == 1
    with pytest.raises(DecryptionError) as from_file:
        unlock(encrypted, [KeyringKey(os.urandom(32))], "w.bin")
    assert from_file.value.message in messages


def test_unlock_header_names_the_file_on_malformed_bytes_and_needs_an_identity() -> None:
    key = KeyringKey(os.urandom(32))
    with pytest.raises(FormatError, match=r"^shard\.bin: not a weightvault encrypted file"):
        unlock_header(b"not a header at all", [key], "shard.bin")
    with pytest.raises(UsageError):
        unlock_header(b"not a header at all", [], "shard.bin")


def test_rewrap_header_gives_another_recipient_the_same_body(tmp_path: Path) -> None:
    key = KeyringKey(os.urandom(32))
    encrypted, plain = _encrypted(tmp_path, key)
    data = encrypted.read_bytes()
    opened = unlock_header(data, [key], "w.bin")
    grantee = X25519Identity.generate()
    delivered = rewrap_header(opened.header, opened.dek, [grantee.recipient()])
    assert parse_header(delivered, "w.bin").context == CONTEXT
    moved = tmp_path / "delivered.wvenc"
    moved.write_bytes(delivered + data[opened.header.size :])
    out = tmp_path / "plain.bin"
    decrypt_file(moved, out, [grantee])
    assert out.read_bytes() == plain
    with pytest.raises(DecryptionError):  # replaced, not added: the KEK no longer opens it
        unlock_header(delivered, [key], "w.bin")
    both = rewrap_header(opened.header, opened.dek, [grantee.recipient()], keep_existing=True)
    assert unlock_header(both, [key], "w.bin").dek == opened.dek
    with pytest.raises(UsageError):
        rewrap_header(opened.header, opened.dek, [])
