"""Random access to an encrypted file: read any byte range, decrypting only the chunks under it.

A 1 MiB read touches at most 65 chunks (``65 * 16400`` bytes, about 1.02 MiB of ciphertext).
Opening checks the header MAC and the body's key commitment, and authenticates the message length
by decrypting the final chunk (as the spec requires before trusting the size), so ``size`` is
authentic and every byte returned comes from a chunk that authenticated.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from weightvault.crypt.chunks import BodyKeys, ChunkAuthError, chunk_offset
from weightvault.crypt.envelope import Unlocked, cannot_decrypt, unlock
from weightvault.crypt.format import BODY_HEADER_SIZE, CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE, FileContext
from weightvault.crypt.recipients.base import Identity
from weightvault.errors import InputError

__all__ = ["EncryptedFile", "open_encrypted"]


class EncryptedFile:
    """A decrypting, random-access view of one ``.wvenc`` file (thread-safe: uses ``pread``)."""

    def __init__(self, unlocked: Unlocked) -> None:
        self._unlocked = unlocked
        self.name = unlocked.name
        self.size = unlocked.plaintext_size
        """Plaintext size in bytes (authenticated when the file was opened)."""
        self.context: FileContext = unlocked.header.context
        self._body_offset = unlocked.body_offset
        self._lock = threading.Lock()
        self.ciphertext_bytes_read = 0
        """Body bytes read from disk so far (for measuring what a read touches)."""
        try:
            self._fd = os.open(unlocked.path, os.O_RDONLY)
        except OSError as exc:
            raise InputError(f"{self.name}: cannot open: {exc.strerror}") from exc
        try:
            prefix = self._pread(0, BODY_HEADER_SIZE)
            self._keys = BodyKeys(unlocked.dek, unlocked.header.body_context(), prefix)
            # Authenticate the length: the final chunk must decrypt at its position.
            self._chunks_count = self.size // CHUNK_SIZE + 1
            self._decrypt_chunks(self._chunks_count - 1, self._chunks_count)
        except ChunkAuthError as exc:
            os.close(self._fd)
            raise cannot_decrypt(self.name) from exc
        except BaseException:
            os.close(self._fd)
            raise
        self.ciphertext_bytes_read = 0

    def _pread(self, offset: int, size: int) -> bytes:
        data = os.pread(self._fd, size, self._body_offset + offset)
        self.ciphertext_bytes_read += len(data)
        if len(data) != size:
            raise ChunkAuthError("file shrank while reading")
        return data

    def _decrypt_chunks(self, first: int, stop: int) -> bytearray:
        """Plaintext of chunks ``first .. stop-1``, read in one ``pread``."""
        start = chunk_offset(first)
        end = min(chunk_offset(stop), self._unlocked.body_size)
        ciphertext = memoryview(self._pread(start, end - start))
        plaintext = bytearray((stop - first) * CHUNK_SIZE)
        out = memoryview(plaintext)
        produced = 0
        for index in range(first, stop):
            piece = ciphertext[(index - first) * ENCRYPTED_CHUNK_SIZE :][:ENCRYPTED_CHUNK_SIZE]
            size = self._keys.decrypt_chunk_into(index, piece, out[produced:])
            if size != CHUNK_SIZE and index != self._chunks_count - 1:
                raise ChunkAuthError("short chunk before the end")
            produced += size
        out.release()
        ciphertext.release()
        del plaintext[produced:]
        return plaintext

    def read(self, offset: int, size: int) -> bytes:
        """Plaintext bytes ``offset .. offset+size`` (clipped at the end of the file)."""
        return bytes(self.read_bytearray(offset, size))

    def read_bytearray(self, offset: int, size: int) -> bytearray:
        """Like :meth:`read`, into a fresh writable buffer (NumPy and torch can use it as is)."""
        if offset < 0 or size < 0:
            raise ValueError("offset and size must be non-negative")
        end = min(offset + size, self.size)
        if offset >= end:
            return bytearray()
        first = offset // CHUNK_SIZE
        stop = (end - 1) // CHUNK_SIZE + 1
        try:
            with self._lock:
                plaintext = self._decrypt_chunks(first, stop)
        except ChunkAuthError as exc:
            raise cannot_decrypt(self.name) from exc
        skip = offset - first * CHUNK_SIZE
        del plaintext[:skip]
        del plaintext[end - offset :]
        return plaintext

    def read_all(self) -> bytes:
        return self.read(0, self.size)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> EncryptedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_encrypted(
    path: str | os.PathLike[str], identities: Sequence[Identity], *, name: str | None = None
) -> EncryptedFile:
    """Unlock ``path`` with the first identity that opens it and return a random-access reader."""
    return EncryptedFile(unlock(Path(path), identities, name))
