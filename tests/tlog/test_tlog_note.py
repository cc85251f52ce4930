"""Signed notes: the Go/C2SP known-answer vectors, strict parsing, byte flips, cosignatures."""

from __future__ import annotations

import base64

import pytest

from weightvault.errors import FormatError, KeyMaterialError, VerificationError
from weightvault.tlog.note import (
    EM_DASH,
    SIG_COSIGNATURE_V1,
    Ed25519NoteSigner,
    NoteSignature,
    VerifierKey,
    open_note,
    parse_note,
    sign_note,
)

# golang.org/x/mod/sumdb/note documentation example (the C2SP signed-note reference vector).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIG = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
GO_NOTE = f"{GO_TEXT}\n{EM_DASH} PeterNeumann {GO_SIG}\n".encode()

# The C2SP signed-note specification's example key and note.
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    f"{EM_DASH} example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
).encode()


def test_go_signer_key_signs_the_reference_note_byte_for_byte() -> None:
    signer = Ed25519NoteSigner.from_text(GO_SKEY)
    assert signer.verifier_key.to_text() == GO_VKEY
    assert signer.to_text() == GO_SKEY
    assert sign_note(GO_TEXT, [signer]).to_bytes() == GO_NOTE


def test_reference_notes_verify_with_their_verifier_keys() -> None:
    opened = open_note(GO_NOTE, [VerifierKey.from_text(GO_VKEY)])
    assert opened.text == GO_TEXT
    spec_key = VerifierKey.from_text(SPEC_VKEY)
    assert spec_key.key_id.hex() == "530d903a"
    assert open_note(SPEC_NOTE, [spec_key]).text == "This is an example message.\n"


def test_every_byte_flip_of_the_reference_note_is_rejected() -> None:
    key = VerifierKey.from_text(GO_VKEY)
    for position in range(len(GO_NOTE)):
        for bit in (0x01, 0x80):
            mutated = bytearray(GO_NOTE)
            mutated[position] ^= bit
            with pytest.raises((FormatError, VerificationError)):
                open_note(bytes(mutated), [key])


def test_verifier_key_manglings_are_rejected() -> None:
    text = GO_VKEY
    for i in range(len(text)):
        for j in range(i + 1, len(text) + 1):
            if (i, j) == (0, len(text)):
                continue
            with pytest.raises(FormatError):
                VerifierKey.from_text(text[i:j])
    for i in range(len(text)):
        mangled = text[:i] + chr(ord(text[i]) + 1) + text[i + 1 :]
        with pytest.raises(FormatError):
            VerifierKey.from_text(mangled)


def test_signer_key_manglings_give_one_opaque_error() -> None:
    messages = set()
    for i in range(len(GO_SKEY)):
        mangled = GO_SKEY[:i] + chr(ord(GO_SKEY[i]) + 1) + GO_SKEY[i + 1 :]
        with pytest.raises(KeyMaterialError) as caught:
            Ed25519NoteSigner.from_text(mangled)
        messages.add(caught.value.message)
    assert len(messages) == 1
    assert "AYEKFALV" not in next(iter(messages))


def test_unknown_keys_are_ignored_but_a_bad_known_signature_rejects() -> None:
    key = VerifierKey.from_text(GO_VKEY)
    stranger = Ed25519NoteSigner.generate("stranger.example")
    note = parse_note(GO_NOTE).with_signature(stranger.signature_for(GO_TEXT))
    assert open_note(note.to_bytes(), [key]).verified == (key,)
    # Same name and id as the trusted key, garbage signature: the whole note is refused.
    forged = parse_note(GO_NOTE).signatures[0]
    bad = NoteSignature(name=forged.name, key_id=forged.key_id, signature=b"\x00" * 64)
    doubled = f"{GO_TEXT}\n{forged.to_line()}{bad.to_line()}".encode()
    with pytest.raises(VerificationError):
        open_note(doubled, [key])
    with pytest.raises(VerificationError) as caught:
        open_note(GO_NOTE, [stranger.verifier_key])
    assert "no signature from a trusted key" in caught.value.one_line()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"no blank line\n",
        GO_TEXT.encode() + b"\n",
        GO_NOTE.rstrip(b"\n"),
        GO_NOTE.replace(EM_DASH.encode(), b"-"),
        GO_NOTE.replace(b"PeterNeumann ", b"Peter Neumann "),
        GO_NOTE.replace(b"\nthen", b"\x01then"),
        b"\xff\xfe\n\n" + GO_NOTE,
        GO_NOTE + f"{EM_DASH} x AAAA\n".encode(),
        b"x" * (1 << 20 + 1),
    ],
)
def test_malformed_notes_are_format_errors(data: bytes) -> None:
    with pytest.raises(FormatError):
        parse_note(data)


def test_signature_count_is_capped() -> None:
    line = parse_note(GO_NOTE).signatures[0].to_line()
    with pytest.raises(FormatError, match="more than 100 signatures"):
        parse_note(f"{GO_TEXT}\n{line * 101}".encode())


def test_cosignature_matches_the_c2sp_message_layout() -> None:
    witness = Ed25519NoteSigner.generate("witness.example/w1", sig_type=SIG_COSIGNATURE_V1)
    line = witness.signature_for(GO_TEXT, timestamp=1679315147)
    raw = line.key_id + line.signature
    assert len(raw) == 4 + 8 + 64
    assert raw[4:12] == (1679315147).to_bytes(8, "big")
    message = b"cosignature/v1\ntime 1679315147\n" + GO_TEXT.encode()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(witness.public_key).verify(raw[12:], message)
    vkey = witness.verifier_key
    assert base64.b64decode(vkey.to_text().split("+", 2)[2])[0] == 0x04
    note = parse_note(GO_NOTE).with_signature(line)
    opened = open_note(note.to_bytes(), [VerifierKey.from_text(GO_VKEY), vkey])
    assert opened.cosignature_times == {"witness.example/w1": 1679315147}
    # The same key under type 0x01 has a different key id: a cosignature is not a log signature.
    assert VerifierKey(vkey.name, 0x01, vkey.public_key).key_id != vkey.key_id


def test_sign_note_refuses_caller_mistakes() -> None:
    signer = Ed25519NoteSigner.from_text(GO_SKEY)
    with pytest.raises(ValueError):
        sign_note("no newline", [signer])
    with pytest.raises(ValueError):
        sign_note(GO_TEXT, [])
    with pytest.raises(ValueError):
        Ed25519NoteSigner.generate("w", sig_type=SIG_COSIGNATURE_V1).signature_for(GO_TEXT)
    assert "AYEKFALV" not in repr(signer)
