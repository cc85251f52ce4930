"""Encryption of model weights at rest: streaming, random-access, envelope-keyed.

Each file gets a fresh data key (DEK) and is encrypted with C2SP chunked encryption
(Cobblestone-256: AES-256-GCM in 16 KiB chunks, HKDF-SHA-512 key derivation with key commitment)
behind a small authenticated header that wraps the DEK once per recipient: a local keyring KEK
(the default), X25519 public keys, a passphrase (scrypt), or an AES key in a PKCS#11 HSM.

Public API::

    encrypt_path(model, out, recipients=[...])       # a file or a whole model folder
    decrypt_path(enc, out, identities=[...])
    rewrap_path(enc, identities=[...], recipients=[...])
    inspect_path(enc)                                # headers only, no key needed
    open_encrypted(file, identities)                 # random access: .read(offset, size)
    load_encrypted_safetensors(file, identities, names=[...], framework="numpy" | "torch")
    parse_recipient("wvx25519:..."), parse_identity("keyring")

One file at a time (what a service that stores ciphertext needs)::

    encrypt_file(source, out, FileContext(...), recipients)  # -> SealedFile(header_size, size)
    decrypt_file(enc, out, identities, expected_sha256=...)
    opened = unlock_header(parse_header(data, name), identities, name)  # MAC checked
    rewrap_header(opened.header, opened.dek, recipients)     # same body, other recipients
"""

from __future__ import annotations

from weightvault.crypt.envelope import UnlockedHeader, rewrap_header, unlock_header
from weightvault.crypt.format import SUFFIX, FileContext, Header, parse_header
from weightvault.crypt.ops import (
    CryptResult,
    FileInfo,
    FileResult,
    decrypt_path,
    encrypt_path,
    inspect_path,
    manifest_digest_of,
    rewrap_path,
)
from weightvault.crypt.reader import EncryptedFile, open_encrypted
from weightvault.crypt.recipients import (
    Identity,
    KeyringKey,
    PassphraseIdentity,
    PassphraseRecipient,
    Recipient,
    X25519Identity,
    X25519Recipient,
    parse_identity,
    parse_recipient,
)
from weightvault.crypt.safetensors import load_encrypted_safetensors, read_safetensors_index
from weightvault.crypt.stream import SealedFile, decrypt_file, encrypt_file

__all__ = [
    "SUFFIX",
    "CryptResult",
    "EncryptedFile",
    "FileContext",
    "FileInfo",
    "FileResult",
    "Header",
    "Identity",
    "KeyringKey",
    "PassphraseIdentity",
    "PassphraseRecipient",
    "Recipient",
    "SealedFile",
    "UnlockedHeader",
    "X25519Identity",
    "X25519Recipient",
    "decrypt_file",
    "decrypt_path",
    "encrypt_file",
    "encrypt_path",
    "inspect_path",
    "load_encrypted_safetensors",
    "manifest_digest_of",
    "open_encrypted",
    "parse_header",
    "parse_identity",
    "parse_recipient",
    "read_safetensors_index",
    "rewrap_header",
    "rewrap_path",
    "unlock_header",
]
