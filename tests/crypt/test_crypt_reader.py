"""The random-access reader against the library's own streaming decryption, byte for byte."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor

from weightvault.crypt import KeyringKey, encrypt_path, open_encrypted
from weightvault.crypt.chunks import BodyKeys, ChunkAuthError
from weightvault.crypt.envelope import unlock
from weightvault.crypt.format import ENCRYPTED_CHUNK_SIZE, body_size_for, plaintext_size_for
from weightvault.errors import DecryptionError

SIZES = [0, 1, 15, 16, 16383, 16384, 16385, 32767, 32768, 32769, 3 * 16384 + 7, 200_000]


def _library_decrypt(path: Path, key: KeyringKey) -> bytes:
    """Plaintext via cryptography's Cobblestone256Decryptor (the reference), fed in odd pieces."""
    item = unlock(path, [key])
    body = path.read_bytes()[item.body_offset :]
    decryptor = Cobblestone256Decryptor(item.dek, item.header.body_context())
    out = bytearray()
    pieces = random.Random(len(body))
    offset = 0
    while offset < len(body):
        step = pieces.randint(1, 40_000)
        out += decryptor.update(body[offset : offset + step])
        offset += step
    out += decryptor.finalize()
    return bytes(out)


@pytest.mark.parametrize("size", SIZES)
def test_reader_matches_library_streaming_decryption(tmp_path: Path, size: int) -> None:
    plaintext = random.Random(size).randbytes(size)
    source = tmp_path / "w.bin"
    source.write_bytes(plaintext)
    key = KeyringKey(os.urandom(32))
    encrypt_path(source, tmp_path / "w.bin.wvenc", recipients=[key])
    reference = _library_decrypt(tmp_path / "w.bin.wvenc", key)
    assert reference == plaintext

    with open_encrypted(tmp_path / "w.bin.wvenc", [key]) as reader:
        assert reader.size == size
        assert reader.read_all() == reference
        rng = random.Random(size * 7 + 1)
        # Random ranges, plus every chunk boundary +-1 and ranges running past the end.
        ranges = [(rng.randrange(size + 1), rng.randrange(0, 70_000)) for _ in range(150)]
        for boundary in range(0, size + 16384, 16384):
            for start in (boundary - 1, boundary, boundary + 1):
                if start >= 0:
                    ranges += [(start, 1), (start, 16384), (start, 16385), (start, 2)]
        for offset, length in ranges:
            assert reader.read(offset, length) == reference[offset : offset + length], (
                offset,
                length,
            )


def test_key_derivation_matches_the_library_for_a_raw_body() -> None:
    """BodyKeys derives what Cobblestone256Encryptor used: every chunk decrypts alone."""
    key = os.urandom(32)
    context = b"any context \x00 bytes"
    plaintext = os.urandom(5 * 16384 + 99)
    encryptor = Cobblestone256Encryptor(key, context)
    body = encryptor.update(plaintext) + encryptor.finalize()
    keys = BodyKeys(key, context, body[:56])
    for index in range(6):
        piece = body[56 + index * ENCRYPTED_CHUNK_SIZE :][:ENCRYPTED_CHUNK_SIZE]
        out = bytearray(16384)
        n = keys.decrypt_chunk_into(index, piece, memoryview(out))
        assert bytes(out[:n]) == plaintext[index * 16384 : (index + 1) * 16384]
    with pytest.raises(ChunkAuthError):
        BodyKeys(key, context + b"!", body[:56])  # other context: commitment differs
    with pytest.raises(ChunkAuthError):
        keys.decrypt_chunk_into(1, body[56 : 56 + ENCRYPTED_CHUNK_SIZE], memoryview(out))


def test_size_formulas_round_trip() -> None:
    for size in [*SIZES, 4 << 30]:
        assert plaintext_size_for(body_size_for(size)) == size
    for bad in (0, 55, 71, 56 + ENCRYPTED_CHUNK_SIZE, 56 + 2 * ENCRYPTED_CHUNK_SIZE + 15):
        assert plaintext_size_for(bad) is None


def test_a_one_mib_read_touches_at_most_65_chunks(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(5 << 20))
    key = KeyringKey(os.urandom(32))
    encrypt_path(source, recipients=[key])
    with open_encrypted(tmp_path / "big.bin.wvenc", [key]) as reader:
        for offset in (0, 12345, (2 << 20) + 1, (4 << 20) - 1):
            before = reader.ciphertext_bytes_read
            data = reader.read(offset, 1 << 20)
            touched = reader.ciphertext_bytes_read - before
            assert len(data) == min(1 << 20, reader.size - offset)
            assert touched <= 65 * ENCRYPTED_CHUNK_SIZE <= 1.1 * (1 << 20)


def test_reader_refuses_a_tampered_chunk_only_when_it_is_read(tmp_path: Path) -> None:
    source = tmp_path / "w.bin"
    plaintext = os.urandom(10 * 16384)
    source.write_bytes(plaintext)
    key = KeyringKey(os.urandom(32))
    encrypt_path(source, recipients=[key])
    encrypted = tmp_path / "w.bin.wvenc"
    item = unlock(encrypted, [key])
    data = bytearray(encrypted.read_bytes())
    data[item.body_offset + 56 + 4 * ENCRYPTED_CHUNK_SIZE + 100] ^= 1  # inside chunk 4
    encrypted.write_bytes(bytes(data))
    with open_encrypted(encrypted, [key]) as reader:
        assert reader.read(0, 4 * 16384) == plaintext[: 4 * 16384]
        with pytest.raises(DecryptionError, match="cannot decrypt"):
            reader.read(4 * 16384 + 5, 10)
        with pytest.raises(DecryptionError, match="cannot decrypt"):
            reader.read_all()
