"""Per-chunk access to a C2SP chunked-encryption body (Cobblestone-256), for random reads.

``cryptography.cobblestone`` streams; it has no call to decrypt chunk ``k`` alone. The spec
(c2sp.org/chunked-encryption) makes that a few lines, and this module is those lines, tested
byte-for-byte against the library's streaming decryption:

* key derivation (spec "Key derivation")::

      key || base_nonce || commitment = HKDF-Expand(SHA-512, prk = input key,
          info = "c2sp.org/chunked-encryption@v1+" || "AEAD_AES_256_GCM" || 0x00 || salt || context,
          length = 32 + 12 + 32)

* the body starts with ``salt (24) || commitment (32)``; the derived commitment must match
  before any chunk is decrypted;
* chunk ``k`` is AES-256-GCM with ``nonce = base_nonce XOR k`` (big-endian), empty AAD, found at
  body offset ``56 + k * (16384 + 16)``; every chunk holds 16384 plaintext bytes except the last,
  which holds fewer (possibly 0).
"""

from __future__ import annotations

import hmac

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from weightvault.crypt.format import BODY_HEADER_SIZE, CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE, TAG_SIZE

__all__ = ["MAX_CHUNKS", "BodyKeys", "ChunkAuthError"]

_INFO_PREFIX = b"c2sp.org/chunked-encryption@v1+AEAD_AES_256_GCM\x00"
SALT_SIZE = 24
COMMITMENT_SIZE = 32
#: Spec: implementations must abort at 2**38 chunks.
MAX_CHUNKS = 1 << 38


class ChunkAuthError(Exception):
    """A chunk (or the commitment) did not authenticate. Internal: callers raise the uniform
    :class:`~weightvault.errors.DecryptionError`."""


class BodyKeys:
    """The derived AES-GCM key and base nonce of one body, after checking its commitment."""

    def __init__(self, input_key: bytes, context: bytes, body_prefix: bytes) -> None:
        if len(input_key) != 32:
            raise ValueError("Cobblestone-256 input keys are 32 bytes")
        if len(body_prefix) != BODY_HEADER_SIZE:
            raise ChunkAuthError("body is shorter than its salt and commitment")
        salt = body_prefix[:SALT_SIZE]
        commitment = body_prefix[SALT_SIZE:BODY_HEADER_SIZE]
        okm = HKDFExpand(
            algorithm=hashes.SHA512(), length=32 + 12 + 32, info=_INFO_PREFIX + salt + context
        ).derive(input_key)
        if not hmac.compare_digest(okm[44:], commitment):
            raise ChunkAuthError("key commitment does not match")
        self._aead = AESGCM(okm[:32])
        self._base_nonce = int.from_bytes(okm[32:44], "big")

    def nonce(self, index: int) -> bytes:
        if not 0 <= index < MAX_CHUNKS:
            raise ChunkAuthError("chunk index out of range")
        return (self._base_nonce ^ index).to_bytes(12, "big")

    def decrypt_chunk_into(
        self, index: int, ciphertext: memoryview | bytes, out: memoryview
    ) -> int:
        """Decrypt chunk ``index`` into ``out``; returns the plaintext length."""
        size = len(ciphertext) - TAG_SIZE
        if size < 0 or size > CHUNK_SIZE:
            raise ChunkAuthError("chunk has an impossible length")
        try:
            self._aead.decrypt_into(self.nonce(index), ciphertext, None, out[:size])
        except InvalidTag as exc:
            raise ChunkAuthError(f"chunk {index} does not authenticate") from exc
        return size


def chunk_offset(index: int) -> int:
    """Offset of chunk ``index`` from the start of the body."""
    return BODY_HEADER_SIZE + index * ENCRYPTED_CHUNK_SIZE
