"""Envelope keys: a fresh data key (DEK) per file, wrapped for each recipient, and unlocking it.

``seal`` makes the header for a new file; ``unlock`` reads a header, finds a stanza one of the
given identities opens, and checks the header MAC under that DEK. Every failure that depends on a
secret (no stanza opens, MAC mismatch, commitment or tag mismatch later) gives the same message,
:func:`cannot_decrypt`; failures on public data (bad magic, malformed header, impossible length)
say exactly what is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from weightvault.crypt.format import (
    FileContext,
    Header,
    header_mac_matches,
    plaintext_size_for,
    read_header,
    serialize_header,
)
from weightvault.crypt.recipients._base import Identity, Random, Recipient
from weightvault.errors import DecryptionError, FormatError, InputError, UsageError

__all__ = ["DEK_SIZE", "Unlocked", "cannot_decrypt", "read_file_header", "seal", "unlock"]

DEK_SIZE = 32


def cannot_decrypt(name: str) -> DecryptionError:
    """The one message for every secret-dependent failure (wrong key, bad MAC, bad tag)."""
    return DecryptionError(
        f"{name}: cannot decrypt: none of the given identities opens it, or it was altered",
        hint="check the identity; a modified, truncated or misplaced file cannot be decrypted",
        remedy="identity",
    )


def seal(
    context: FileContext, recipients: Sequence[Recipient], *, rng: Random = os.urandom
) -> tuple[bytes, bytes]:
    """A fresh DEK and the header that wraps it for every recipient: ``(header_bytes, dek)``."""
    if not recipients:
        raise UsageError("no recipients given", remedy="recipient")
    dek = rng(DEK_SIZE)
    stanzas = tuple(recipient.wrap(dek) for recipient in recipients)
    return serialize_header(context, stanzas, dek), dek


@dataclass(frozen=True)
class Unlocked:
    """A file whose header MAC checked out under ``dek``: ready for body decryption."""

    path: Path
    name: str
    header: Header
    dek: bytes
    file_size: int
    body_size: int
    plaintext_size: int

    @property
    def body_offset(self) -> int:
        return self.header.size


def read_file_header(path: Path, name: str | None = None) -> tuple[Header, int]:
    """Parse a file's header (public checks only); returns it and the file size."""
    name = name or str(path)
    try:
        with open(path, "rb") as handle:
            header = read_header(handle, name)
            size = os.fstat(handle.fileno()).st_size
    except FileNotFoundError as exc:
        raise InputError(f"{name}: no such file") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{name}: is a folder, expected an encrypted file") from exc
    except PermissionError as exc:
        raise InputError(f"{name}: permission denied") from exc
    if plaintext_size_for(size - header.size) is None:
        raise FormatError(
            f"{name}: encrypted body has an impossible length: the file was truncated or has "
            "bytes appended"
        )
    return header, size


def unlock(path: Path, identities: Sequence[Identity], name: str | None = None) -> Unlocked:
    """Open a file's header with the first identity that can; raise the uniform error if none."""
    name = name or str(path)
    if not identities:
        raise UsageError("no identities given", remedy="identity")
    header, size = read_file_header(path, name)
    body_size = size - header.size
    plaintext_size = plaintext_size_for(body_size)
    assert plaintext_size is not None  # checked by read_file_header
    for identity in identities:
        for stanza in header.recipients:
            dek = identity.unwrap(stanza)
            if dek is not None and len(dek) == DEK_SIZE and header_mac_matches(dek, header):
                return Unlocked(path, name, header, dek, size, body_size, plaintext_size)
    raise cannot_decrypt(name)
