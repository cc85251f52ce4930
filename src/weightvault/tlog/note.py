"""C2SP signed notes: Ed25519 note signatures (type 0x01) and witness cosignatures (type 0x04).

A note is UTF-8 text ending in a newline, a blank line, then signature lines
``— <key name> base64(4-byte key id || signature)``. Key id =
SHA-256(name || 0x0A || type || public key)[:4]. Verifier keys are written
``name+hex(key id)+base64(type || public key)``; signer keys (Go's format)
``PRIVATE+KEY+name+hex(key id)+base64(type || Ed25519 seed)``.

Parsing is strict and bounded (size and signature-count caps before any work), and every
signature line from a known key must verify: one bad line from a trusted key rejects the whole
note (c2sp.org/signed-note "Signatures").
"""

from __future__ import annotations

import abc
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from weightvault import _b64
from weightvault.errors import FormatError, KeyMaterialError, UsageError, VerificationError

__all__ = [
    "EM_DASH",
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "SIG_COSIGNATURE_V1",
    "SIG_ED25519",
    "Ed25519NoteSigner",
    "Note",
    "NoteSignature",
    "NoteSigner",
    "Pkcs11NoteSigner",
    "VerifiedNote",
    "VerifierKey",
    "cosignature_message",
    "key_id",
    "load_note_signer",
    "open_note",
    "parse_note",
    "sign_note",
]

EM_DASH = "\u2014"
SIG_ED25519 = 0x01
"""Signature type of a log's Ed25519 note signature (c2sp.org/signed-note)."""
SIG_COSIGNATURE_V1 = 0x04
"""Signature type of a timestamped Ed25519 witness cosignature (c2sp.org/tlog-cosignature)."""

MAX_NOTE_BYTES = 1 << 20
"""Notes larger than this are refused before parsing."""
MAX_SIGNATURES = 100
"""Signature lines accepted per note (the spec asks for at least 16)."""

NOTE_FAILED = "note signature verification failed"


def decode_text(data: bytes, what: str, limit: int, *, encoding: str = "utf-8") -> str:
    """``data`` as text, refused above ``limit`` bytes (before decoding) or if not ``encoding``:
    the first step of every text format of the log."""
    if len(data) > limit:
        raise FormatError(f"{what}: larger than {limit} bytes")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise FormatError(f"{what}: not valid {encoding.upper()}") from exc


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4] (c2sp.org/signed-note)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def _check_key_name(name: str, what: str) -> None:
    if not name or any(c.isspace() or c == "+" or ord(c) < 0x20 for c in name):
        raise FormatError(f"{what}: key name must be non-empty, without spaces or '+'")


def cosignature_message(timestamp: int, note_text: str) -> bytes:
    """What an Ed25519 cosigner signs: ``cosignature/v1\\ntime T\\n`` + the note text."""
    return f"cosignature/v1\ntime {timestamp}\n".encode() + note_text.encode()


@dataclass(frozen=True)
class VerifierKey:
    """A public key that may sign notes: name, type (0x01 or 0x04) and raw Ed25519 key."""

    name: str
    sig_type: int
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.sig_type, self.public_key)

    @classmethod
    def from_text(cls, text: str) -> VerifierKey:
        """Parse ``name+hex8+base64(type || key)``; the key id must match the key."""
        text = text.strip()
        parts = text.split("+", 2)
        if len(parts) != 3:
            raise FormatError("verifier key: expected name+keyid+key")
        name, hex_id, b64 = parts
        _check_key_name(name, "verifier key")
        if len(hex_id) != 8 or hex_id != hex_id.lower():
            raise FormatError("verifier key: key id must be 8 lowercase hex digits")
        try:
            wanted_id = bytes.fromhex(hex_id)
        except ValueError as exc:
            raise FormatError("verifier key: key id must be 8 lowercase hex digits") from exc
        raw = _b64.decode(b64, "verifier key")
        if len(raw) != 33 or raw[0] not in (SIG_ED25519, SIG_COSIGNATURE_V1):
            raise FormatError("verifier key: only Ed25519 keys (type 0x01 or 0x04) are supported")
        key = cls(name=name, sig_type=raw[0], public_key=raw[1:])
        if key.key_id != wanted_id:
            raise FormatError("verifier key: key id does not match the key")
        return key

    def to_text(self) -> str:
        encoded = _b64.encode(bytes([self.sig_type]) + self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    def check_signature(self, note_text: str, signature: bytes) -> int | None:
        """Check one signature over ``note_text``: the cosignature time (0 for 0x01), or None."""
        try:
            public = Ed25519PublicKey.from_public_bytes(self.public_key)
        except ValueError:
            return None
        if self.sig_type == SIG_ED25519:
            message, sig, timestamp = note_text.encode(), signature, 0
        else:
            if len(signature) != 72:
                return None
            (timestamp,) = struct.unpack(">Q", signature[:8])
            if timestamp >= 1 << 63:
                return None
            message, sig = cosignature_message(timestamp, note_text), signature[8:]
        if len(sig) != 64:
            return None
        try:
            public.verify(sig, message)
        except InvalidSignature:
            return None
        return timestamp


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key id, and the signature bytes after the id."""

    name: str
    key_id: bytes
    signature: bytes

    def to_line(self) -> str:
        encoded = _b64.encode(self.key_id + self.signature)
        return f"{EM_DASH} {self.name} {encoded}\n"


@dataclass(frozen=True)
class Note:
    """A parsed (not yet verified) signed note; ``text`` includes its final newline."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def to_bytes(self) -> bytes:
        return (self.text + "\n" + "".join(s.to_line() for s in self.signatures)).encode()

    def with_signature(self, signature: NoteSignature) -> Note:
        """This note plus one more signature line (replacing one from the same key)."""
        kept = tuple(
            s for s in self.signatures if (s.name, s.key_id) != (signature.name, signature.key_id)
        )
        return Note(text=self.text, signatures=(*kept, signature))


def parse_note(data: bytes) -> Note:
    """Split a signed note into text and signature lines; checks syntax only."""
    decoded = decode_text(data, "signed note", MAX_NOTE_BYTES)
    if any(ord(c) < 0x20 and c != "\n" for c in decoded) or "\x7f" in decoded:
        raise FormatError("signed note: contains control characters")
    if not decoded.endswith("\n"):
        raise FormatError("signed note: does not end with a newline")
    split = decoded.rfind("\n\n")
    if split < 0:
        raise FormatError("signed note: no blank line before the signatures")
    text, sig_block = decoded[: split + 1], decoded[split + 2 :]
    lines = sig_block[:-1].split("\n") if sig_block else []
    if not lines:
        raise FormatError("signed note: no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise FormatError(f"signed note: more than {MAX_SIGNATURES} signatures")
    signatures = []
    for number, line in enumerate(lines, start=1):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != EM_DASH:
            raise FormatError(f"signed note: signature line {number} is malformed")
        _check_key_name(parts[1], f"signed note: signature line {number}")
        raw = _b64.decode(parts[2], f"signed note: signature line {number}")
        if len(raw) < 5:
            raise FormatError(f"signed note: signature line {number} is too short")
        signatures.append(NoteSignature(name=parts[1], key_id=raw[:4], signature=raw[4:]))
    return Note(text=text, signatures=tuple(signatures))


@dataclass(frozen=True)
class VerifiedNote:
    """A note whose signatures from the given keys checked out."""

    note: Note
    verified: tuple[VerifierKey, ...]
    """Known keys whose signatures verified, in note order."""
    cosignature_times: dict[str, int]
    """For cosigners (type 0x04): key name -> POSIX time of the cosignature."""

    @property
    def text(self) -> str:
        return self.note.text


def open_note(data: bytes | Note, keys: list[VerifierKey]) -> VerifiedNote:
    """Parse and verify a note against ``keys``.

    Lines from unknown keys are ignored (the spec requires it: a log's checkpoint gathers
    cosignatures the client may not know). A line from a known key that fails to verify rejects
    the note; so does a note with no verified signature from any known key.
    """
    note = data if isinstance(data, Note) else parse_note(data)
    by_id = {(k.name, k.key_id): k for k in keys}
    verified: list[VerifierKey] = []
    times: dict[str, int] = {}
    for signature in note.signatures:
        key = by_id.get((signature.name, signature.key_id))
        if key is None:
            continue
        timestamp = key.check_signature(note.text, signature.signature)
        if timestamp is None or key in verified:
            raise VerificationError(NOTE_FAILED)
        verified.append(key)
        if key.sig_type == SIG_COSIGNATURE_V1:
            times[key.name] = timestamp
    if not verified:
        raise VerificationError(NOTE_FAILED, hint="no signature from a trusted key")
    return VerifiedNote(note=note, verified=tuple(verified), cosignature_times=times)


class NoteSigner(abc.ABC):
    """Something that holds an Ed25519 private key and signs note messages with it."""

    name: str
    sig_type: int

    @property
    @abc.abstractmethod
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""

    @abc.abstractmethod
    def sign_message(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature over ``message``."""

    @property
    def verifier_key(self) -> VerifierKey:
        return VerifierKey(name=self.name, sig_type=self.sig_type, public_key=self.public_key)

    def signature_for(self, note_text: str, *, timestamp: int | None = None) -> NoteSignature:
        """The signature line this key adds to a note with ``note_text``."""
        if self.sig_type == SIG_COSIGNATURE_V1:
            if timestamp is None or not 0 <= timestamp < 1 << 63:
                raise ValueError("a cosignature needs a timestamp in [0, 2^63)")
            body = struct.pack(">Q", timestamp) + self.sign_message(
                cosignature_message(timestamp, note_text)
            )
        else:
            body = self.sign_message(note_text.encode())
        return NoteSignature(name=self.name, key_id=self.verifier_key.key_id, signature=body)


class Ed25519NoteSigner(NoteSigner):
    """A note signer whose Ed25519 key lives in memory (loaded from a key file)."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey, *, sig_type: int = SIG_ED25519):
        _check_key_name(name, "signer key")
        if sig_type not in (SIG_ED25519, SIG_COSIGNATURE_V1):
            raise ValueError("sig_type must be 0x01 (log) or 0x04 (cosigner)")
        self.name = name
        self.sig_type = sig_type
        self._private_key = private_key

    @classmethod
    def generate(cls, name: str, *, sig_type: int = SIG_ED25519) -> Ed25519NoteSigner:
        return cls(name, Ed25519PrivateKey.generate(), sig_type=sig_type)

    @classmethod
    def from_text(cls, text: str) -> Ed25519NoteSigner:
        """Parse ``PRIVATE+KEY+name+hex8+base64(type || seed)`` (Go's note signer key format).

        Every failure gives the same message, so nothing about the secret leaks.
        """
        failure = KeyMaterialError(
            "signer key: not a valid PRIVATE+KEY+name+id+key string",
            hint="create one with 'weightvault log keygen'",
        )
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
            raise failure
        name, hex_id, b64 = parts[2], parts[3], parts[4]
        try:
            raw = _b64.decode(b64, "signer key")
            _check_key_name(name, "signer key")
        except FormatError as exc:
            raise failure from exc
        if len(raw) != 33 or raw[0] not in (SIG_ED25519, SIG_COSIGNATURE_V1):
            raise failure
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]), sig_type=raw[0])
        if hex_id != signer.verifier_key.key_id.hex():
            raise failure
        return signer

    def to_text(self) -> str:
        from cryptography.hazmat.primitives import serialization

        seed = self._private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        encoded = _b64.encode(bytes([self.sig_type]) + seed)
        return f"PRIVATE+KEY+{self.name}+{self.verifier_key.key_id.hex()}+{encoded}"

    @property
    def public_key(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign_message(self, message: bytes) -> bytes:
        return self._private_key.sign(message)

    def __repr__(self) -> str:  # never show the key
        return f"Ed25519NoteSigner(name={self.name!r}, type={self.sig_type:#04x})"


def sign_note(text: str, signers: list[NoteSigner], *, timestamp: int | None = None) -> Note:
    """A new note over ``text`` signed by each signer (cosigners need ``timestamp``)."""
    if not text.endswith("\n") or "\n\n" in text or text.startswith("\n"):
        raise ValueError("note text must be non-empty lines, each ending in a newline")
    if not signers:
        raise ValueError("sign_note needs at least one signer")
    return Note(
        text=text,
        signatures=tuple(s.signature_for(text, timestamp=timestamp) for s in signers),
    )


class Pkcs11NoteSigner(NoteSigner):
    """A note signer whose Ed25519 key stays on a PKCS#11 token (``CKM_EDDSA``).

    ``uri`` is an RFC 7512 URI naming the private key (PIN from the URI, a pin-source file, or
    ``WEIGHTVAULT_PKCS11_PIN``). The public key is read from the token once, at construction.
    """

    def __init__(self, name: str, uri: str, *, sig_type: int = SIG_ED25519) -> None:
        from cryptography.hazmat.primitives import serialization

        from weightvault.keys.pkcs11 import load_public_key

        _check_key_name(name, "signer key")
        if sig_type not in (SIG_ED25519, SIG_COSIGNATURE_V1):
            raise ValueError("sig_type must be 0x01 (log) or 0x04 (cosigner)")
        public = load_public_key(uri)
        if not isinstance(public, Ed25519PublicKey):
            raise KeyMaterialError(
                "the PKCS#11 key is not an Ed25519 key; checkpoints are signed with Ed25519",
                hint="generate one with pkcs11-tool --keypairgen --key-type EC:edwards25519",
            )
        self.name = name
        self.sig_type = sig_type
        self.uri = uri
        self._public = public.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def public_key(self) -> bytes:
        return self._public

    def sign_message(self, message: bytes) -> bytes:
        from weightvault.keys.pkcs11 import sign_ed25519

        return sign_ed25519(self.uri, message)

    def __repr__(self) -> str:
        return f"Pkcs11NoteSigner(name={self.name!r}, type={self.sig_type:#04x})"


def load_note_signer(
    spec: str, *, name: str | None = None, sig_type: int | None = None
) -> NoteSigner:
    """A signer from a ``pkcs11:`` URI (needs ``name``) or a file holding a PRIVATE+KEY string.

    ``sig_type`` (when given) must match the key: a log key (0x01) cannot cosign and a witness key
    (0x04) cannot sign checkpoints.
    """
    signer: NoteSigner
    if spec.startswith("pkcs11:"):
        if name is None:
            raise UsageError(
                "a pkcs11: key needs a key name",
                hint="give the log's origin or the witness name",
                remedy="key-name",
            )
        signer = Pkcs11NoteSigner(name, spec, sig_type=sig_type or SIG_ED25519)
    else:
        from pathlib import Path

        path = Path(spec)
        if not path.is_file():
            raise KeyMaterialError(f"{path}: no such key file")
        if path.stat().st_size > 4096:
            raise KeyMaterialError(f"{path}: too large to be a note signer key")
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyMaterialError(f"{path}: not a PRIVATE+KEY key file") from exc
        signer = Ed25519NoteSigner.from_text(text)
    if sig_type is not None and signer.sig_type != sig_type:
        kind = (
            "a witness (cosignature) key" if signer.sig_type == SIG_COSIGNATURE_V1 else "a log key"
        )
        raise KeyMaterialError(f"{spec}: is {kind}, which cannot be used here")
    if name is not None and signer.name != name:
        raise KeyMaterialError(f"{spec}: key name {signer.name!r} is not {name!r}")
    return signer
