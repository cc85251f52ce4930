"""Envelope keys: a fresh data key (DEK) per file, wrapped for each recipient, and unlocking it.

``seal`` makes the header for a new file; ``unlock_header`` finds, in a parsed header, a stanza
one of the given identities opens *and* under whose key the header MAC checks (``unlock`` does the
same for a file on disk); ``rewrap_header`` makes the header of the same file for other
recipients (same data key and context, so the body stays valid). Every failure that depends on a
secret (no stanza opens, MAC mismatch, commitment or tag mismatch later) gives the same message,
:func:`cannot_decrypt`; failures on public data (bad magic, malformed header, impossible length)
say exactly what is wrong.

These are the public doors for other packages (the custody service re-wraps stored headers for
grantees with them): nothing outside :mod:`weightvault.crypt` opens or re-seals a header itself.
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
    parse_header,
    plaintext_size_for,
    read_header,
    serialize_header,
)
from weightvault.crypt.recipients.base import Identity, Random, Recipient
from weightvault.errors import DecryptionError, FormatError, InputError, UsageError

__all__ = [
    "DEK_SIZE",
    "Unlocked",
    "UnlockedHeader",
    "cannot_decrypt",
    "read_file_header",
    "rewrap_header",
    "seal",
    "unlock",
    "unlock_header",
]

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


@dataclass(frozen=True)
class UnlockedHeader:
    """A header whose MAC checked out under ``dek`` (from bytes or a file alike)."""

    header: Header
    dek: bytes


def unlock_header(
    header: Header | bytes, identities: Sequence[Identity], name: str
) -> UnlockedHeader:
    """The data key of a header: the first stanza (identity by identity, stanza by stanza) that
    opens to a key under which the header MAC checks. A stanza that opens to some other key is
    skipped, not fatal. Raises the uniform :func:`cannot_decrypt` error if none does.

    ``header`` may be raw header bytes (parsed here, public checks only, ``name`` starting every
    message) or a parsed :class:`Header`.
    """
    if not identities:
        raise UsageError("no identities given", remedy="identity")
    parsed = parse_header(header, name) if isinstance(header, bytes) else header
    for identity in identities:
        for stanza in parsed.recipients:
            dek = identity.unwrap(stanza)
            if dek is not None and len(dek) == DEK_SIZE and header_mac_matches(dek, parsed):
                return UnlockedHeader(parsed, dek)
    raise cannot_decrypt(name)


def rewrap_header(
    header: Header, dek: bytes, recipients: Sequence[Recipient], *, keep_existing: bool = False
) -> bytes:
    """Header bytes for the same file wrapped for ``recipients`` (after the current stanzas with
    ``keep_existing``): same context and data key, so the body is untouched; new MAC.

    ``dek`` must be the key :func:`unlock_header` found for ``header``.
    """
    stanzas = (header.recipients if keep_existing else ()) + tuple(r.wrap(dek) for r in recipients)
    if not stanzas:
        raise UsageError("no recipients given", remedy="recipient")
    return serialize_header(header.context, stanzas, dek)


def unlock(path: Path, identities: Sequence[Identity], name: str | None = None) -> Unlocked:
    """Open a file's header with the first identity that can; raise the uniform error if none."""
    name = name or str(path)
    if not identities:
        raise UsageError("no identities given", remedy="identity")
    header, size = read_file_header(path, name)
    body_size = size - header.size
    plaintext_size = plaintext_size_for(body_size)
    assert plaintext_size is not None  # checked by read_file_header
    opened = unlock_header(header, identities, name)
    return Unlocked(path, name, header, opened.dek, size, body_size, plaintext_size)
