"""The fingerprint secret and everything derived from it: per-recipient seeds and keystreams.

One 32-byte custody secret (a 0600 key file, ``wvfpk1:`` + base64url) marks every copy. Each
mark is a pure function of (secret, recipient id, tensor or group name): HKDF-SHA256 turns the
three into a 32-byte seed, AES-256-CTR under that seed is the pseudo-random stream (signs of the
robust mark, permutations and scales of the function-preserving mark). Nothing is random at issue
time, so re-issuing a recipient's copy gives the same bytes (a resumed download stays
consistent), and tracing regenerates any recipient's patterns from the secret alone: no table of
issued marks has to be kept secret or even kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from weightvault._b64 import encode_url
from weightvault.errors import KeyMaterialError, UsageError
from weightvault.keys.files import key_line_value, read_secret_file, write_secret_file

__all__ = [
    "KEY_PREFIX",
    "FingerprintKey",
    "check_recipient",
    "create_fingerprint_key",
    "load_fingerprint_key",
]

KEY_PREFIX = "wvfpk1:"
_INFO = b"weightvault.fingerprint/v1\x00"
#: Recipient ids are printable, short, and never contain the separator used in derivations.
MAX_RECIPIENT = 200


def check_recipient(recipient: str) -> str:
    """Return ``recipient`` if it is a usable id (1-200 printable characters, no NUL)."""
    if not isinstance(recipient, str) or not recipient or len(recipient) > MAX_RECIPIENT:
        raise UsageError(f"recipient id {recipient!r}: give 1 to {MAX_RECIPIENT} characters")
    if not recipient.isprintable() or recipient != recipient.strip():
        raise UsageError(
            f"recipient id {recipient!r}: printable characters only, no surrounding spaces"
        )
    return recipient


@dataclass(frozen=True)
class FingerprintKey:
    """The custody secret behind every mark; :meth:`seed` and :meth:`stream` derive from it."""

    secret: bytes = field(repr=False)
    path: Path | None = None

    def __post_init__(self) -> None:
        if len(self.secret) != 32:
            raise ValueError("a fingerprint key is 32 bytes")

    def seed(self, recipient: str, purpose: str, name: str) -> bytes:
        """HKDF-SHA256(secret, info = domain | purpose | recipient | name): 32 bytes.

        Lengths are prefixed so that no two (purpose, recipient, name) triples share an info.
        """
        parts = [purpose.encode(), recipient.encode(), name.encode()]
        info = _INFO + b"".join(len(p).to_bytes(4, "big") + p for p in parts)
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(self.secret)

    def stream(self, recipient: str, purpose: str, name: str, nbytes: int) -> np.ndarray:
        """``nbytes`` pseudo-random bytes (AES-256-CTR keystream under :meth:`seed`), uint8."""
        return keystream(self.seed(recipient, purpose, name), nbytes)

    def fingerprint_id(self, recipient: str) -> str:
        """A public name of one recipient's mark (for logs): reveals neither key nor pattern."""
        return "fp1-" + self.seed(recipient, "id", "").hex()[:24]

    def key_id(self) -> str:
        """A public name of the key (which secret made a mark), for reports."""
        return self.seed("", "key-id", "").hex()[:16]


def keystream(seed: bytes, nbytes: int, *, offset: int = 0) -> np.ndarray:
    """AES-256-CTR keystream (counter from zero) under ``seed``: the one PRG of this package.

    ``offset`` (a multiple of 16) starts the stream that many bytes in, without computing them.
    """
    if offset % 16:
        raise ValueError("offset must be a multiple of 16")
    counter = (offset // 16).to_bytes(16, "big")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(counter)).encryptor()
    out = encryptor.update(bytes(nbytes)) + encryptor.finalize()
    return np.frombuffer(out, dtype=np.uint8)


def _format_key(secret: bytes) -> str:
    key = FingerprintKey(secret)
    return (
        "# weightvault fingerprint key. Keep it secret: it makes and traces every recipient's\n"
        "# mark; whoever holds it can forge or strip marks. Back it up offline.\n"
        f"# key id: {key.key_id()}\n"
        f"{KEY_PREFIX}{encode_url(secret)}\n"
    )


def create_fingerprint_key(
    path: Path, *, force: bool = False, rng: Callable[[int], bytes] = os.urandom
) -> FingerprintKey:
    """Write a new 32-byte fingerprint key to ``path`` (mode 0600) and return it."""
    secret = rng(32)
    write_secret_file(Path(path), _format_key(secret), force=force)
    return FingerprintKey(secret, Path(path))


def load_fingerprint_key(path: Path) -> FingerprintKey:
    """Read a key written by :func:`create_fingerprint_key` (refused if group/others can read)."""
    text = read_secret_file(Path(path), "fingerprint key")
    secret = key_line_value(text, KEY_PREFIX, f"{path}: fingerprint key")
    if secret is None:
        raise KeyMaterialError(
            f"{path}: not a fingerprint key (expected one line {KEY_PREFIX}BASE64URL)"
        )
    return FingerprintKey(secret, Path(path))
