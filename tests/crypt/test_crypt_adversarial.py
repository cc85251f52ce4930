"""Hostile ciphertexts: every one either decrypts to the exact plaintext or fails with a clear
message naming the file, and never leaves an output file (partial or not) behind."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from weightvault.crypt import (
    KeyringKey,
    X25519Identity,
    decrypt_path,
    encrypt_path,
    open_encrypted,
)
from weightvault.crypt.envelope import unlock
from weightvault.crypt.format import ENCRYPTED_CHUNK_SIZE
from weightvault.errors import DecryptionError, FormatError, WeightvaultError

BOUNDARY_SIZES = [0, 1, 16383, 16384, 16385, 32767, 32768, 32769, 3 * 16384]


class Case:
    """One encrypted file and the knobs to break it."""

    def __init__(self, tmp_path: Path, size: int, *, seed: int = 0) -> None:
        self.dir = tmp_path / f"case-{size}-{seed}"
        self.dir.mkdir()
        self.plaintext = random.Random(size + seed).randbytes(size)
        source = self.dir / "w.bin"
        source.write_bytes(self.plaintext)
        self.key = KeyringKey(os.urandom(32))
        self.encrypted = self.dir / "w.bin.wvenc"
        encrypt_path(source, self.encrypted, recipients=[self.key])
        source.unlink()
        self.original = self.encrypted.read_bytes()
        self.body_offset = unlock(self.encrypted, [self.key]).body_offset
        self.chunks = size // 16384 + 1

    def chunk_start(self, index: int) -> int:
        return self.body_offset + 56 + index * ENCRYPTED_CHUNK_SIZE

    def chunk(self, index: int) -> bytes:
        return self.original[self.chunk_start(index) : self.chunk_start(index + 1)]

    def attempt(
        self, data: bytes, identities: list[object] | None = None
    ) -> WeightvaultError | None:
        """Write ``data`` as the ciphertext and decrypt it; check the outcome's invariants."""
        self.encrypted.write_bytes(data)
        output = self.dir / "out.bin"
        try:
            decrypt_path(self.encrypted, output, identities=identities or [self.key])  # type: ignore[arg-type]
        except WeightvaultError as exc:
            assert "w.bin.wvenc" in exc.message, exc.message
            assert not output.exists()
            assert sorted(os.listdir(self.dir)) == ["w.bin.wvenc"], os.listdir(self.dir)
            return exc
        assert output.read_bytes() == self.plaintext
        output.unlink()
        return None

    def must_fail(self, data: bytes, *kinds: type[WeightvaultError]) -> WeightvaultError:
        error = self.attempt(data)
        assert error is not None, "a modified ciphertext decrypted"
        assert isinstance(error, kinds or (WeightvaultError,)), error
        return error


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_boundary_sizes_round_trip(tmp_path: Path, size: int) -> None:
    case = Case(tmp_path, size)
    assert case.attempt(case.original) is None


@pytest.mark.parametrize("size", [0, 16383, 16384, 16385, 3 * 16384 + 5])
def test_truncation_at_every_chunk_boundary_and_inside_chunks(tmp_path: Path, size: int) -> None:
    case = Case(tmp_path, size)
    cuts = {0, 5, 12, case.body_offset - 1, case.body_offset, case.body_offset + 24}
    for index in range(case.chunks + 1):
        start = case.chunk_start(index)
        cuts.update({start, start - 1, start + 1, start + 16, start + 17})
    for cut in sorted(c for c in cuts if 0 <= c < len(case.original)):
        case.must_fail(case.original[:cut], FormatError, DecryptionError)


@pytest.mark.parametrize("extra", [b"\x00", bytes(16), os.urandom(ENCRYPTED_CHUNK_SIZE), b"x" * 17])
def test_appended_bytes_fail(tmp_path: Path, extra: bytes) -> None:
    case = Case(tmp_path, 16384 + 10)
    case.must_fail(case.original + extra, FormatError, DecryptionError)


def test_every_header_byte_flip_fails(tmp_path: Path) -> None:
    case = Case(tmp_path, 20000)
    for position in range(case.body_offset + 56):  # header, MAC, salt and commitment
        data = bytearray(case.original)
        data[position] ^= 0x01
        case.must_fail(bytes(data))


def test_bit_flips_in_every_chunk_body_and_tag_fail_uniformly(tmp_path: Path) -> None:
    case = Case(tmp_path, 3 * 16384 + 100)
    messages = set()
    for index in range(case.chunks):
        start = case.chunk_start(index)
        length = len(case.chunk(index))
        for position in (start, start + length // 2, start + length - 17, start + length - 1):
            data = bytearray(case.original)
            data[position] ^= 0x80
            messages.add(case.must_fail(bytes(data), DecryptionError).one_line())
    assert len(messages) == 1


def _rebuild(case: Case, chunks: list[bytes]) -> bytes:
    return case.original[: case.chunk_start(0)] + b"".join(chunks)


def test_removed_duplicated_and_swapped_chunks_fail(tmp_path: Path) -> None:
    case = Case(tmp_path, 4 * 16384 + 500)
    chunks = [case.chunk(i) for i in range(case.chunks)]
    variants: list[list[bytes]] = []
    for i in range(len(chunks)):
        variants.append(chunks[:i] + chunks[i + 1 :])  # removed
        variants.append(chunks[: i + 1] + chunks[i:])  # duplicated
    for i in range(len(chunks) - 1):
        swapped = list(chunks)
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
        variants.append(swapped)
    for variant in variants:
        case.must_fail(_rebuild(case, variant), FormatError, DecryptionError)


def test_header_or_body_from_another_file_fails(tmp_path: Path) -> None:
    first = Case(tmp_path, 30000, seed=1)
    second = Case(tmp_path, 30000, seed=2)
    second.key = first.key  # same keyring: only the per-file data keys differ
    (second.dir / "w.bin").write_bytes(second.plaintext)
    second.encrypted.unlink()
    encrypt_path(second.dir / "w.bin", second.encrypted, recipients=[first.key])
    (second.dir / "w.bin").unlink()
    other = second.encrypted.read_bytes()
    other_offset = unlock(second.encrypted, [first.key]).body_offset
    # first's header + second's body, and second's header + first's body
    first.must_fail(first.original[: first.body_offset] + other[other_offset:], DecryptionError)
    first.must_fail(other[:other_offset] + first.original[first.body_offset :], DecryptionError)
    # one chunk taken from the other file at the same position
    mixed = bytearray(first.original)
    start = first.chunk_start(0)
    mixed[start : start + ENCRYPTED_CHUNK_SIZE] = other[
        other_offset + 56 : other_offset + 56 + ENCRYPTED_CHUNK_SIZE
    ]
    first.must_fail(bytes(mixed), DecryptionError)


def test_wrong_key_and_bad_tag_give_the_same_message(tmp_path: Path) -> None:
    case = Case(tmp_path, 40000)
    wrong_keyring = case.attempt(case.original, [KeyringKey(os.urandom(32))])
    wrong_x25519 = case.attempt(case.original, [X25519Identity.generate()])
    flipped = bytearray(case.original)
    flipped[case.chunk_start(1) + 3] ^= 1
    bad_tag = case.attempt(bytes(flipped))
    flipped_mac = bytearray(case.original)
    flipped_mac[case.body_offset - 1] ^= 1
    bad_mac = case.attempt(bytes(flipped_mac))
    errors = [wrong_keyring, wrong_x25519, bad_tag, bad_mac]
    assert all(isinstance(e, DecryptionError) for e in errors)
    assert len({e.one_line() for e in errors if e is not None}) == 1


def test_edited_context_fails_even_with_a_recomputed_mac(tmp_path: Path) -> None:
    """Someone holding the DEK re-seals the header for another path: the body refuses it."""
    from weightvault.crypt.format import FileContext, serialize_header

    case = Case(tmp_path, 20000)
    item = unlock(case.encrypted, [case.key])
    context = item.header.context
    for changed in (
        FileContext(**{**context.to_json(), "path": "other.bin"}),
        FileContext(**{**context.to_json(), "model": "other-model"}),
        FileContext(**{**context.to_json(), "manifest_digest": "sha256:" + "ab" * 32}),
    ):
        header = serialize_header(changed, item.header.recipients, item.dek)
        case.encrypted.write_bytes(header + case.original[case.body_offset :])
        # Even with the path check switched off, the body (via its commitment) refuses.
        with pytest.raises(DecryptionError, match="cannot decrypt"):
            decrypt_path(
                case.encrypted, tmp_path / "o", identities=[case.key], unsafe_any_path=True
            )
        with pytest.raises(DecryptionError, match="cannot decrypt"):
            open_encrypted(case.encrypted, [case.key])
        assert not (tmp_path / "o").exists()


MUTATORS: list[Callable[[bytes], bytes]] = [
    lambda b: b[:-1],
    lambda b: b + b"\x00",
    lambda b: b"XVENC" + b[5:],
    lambda b: b[:6] + b"\x00\x02" + b[8:],
    lambda b: b[:8] + b"\xff\xff\xff\xff" + b[12:],
]


@pytest.mark.parametrize("mutate", MUTATORS)
def test_malformed_files_fail_with_a_message_naming_the_file(
    tmp_path: Path, mutate: Callable[[bytes], bytes]
) -> None:
    case = Case(tmp_path, 100)
    error = case.must_fail(mutate(case.original))
    assert str(case.encrypted) in error.message
