"""The ``.wvenc`` file format: a small authenticated header in front of a C2SP chunked body.

Layout (all integers big-endian)::

    offset  size  field
    0       6     magic  b"WVENC\\x00"
    6       2     format version (1)
    8       4     L = length of the header JSON (1 .. 1 MiB)
    12      L     header JSON, canonical (sorted keys, no spaces, UTF-8)
    12+L    32    header MAC = HMAC-SHA256(mac_key, bytes 0 .. 12+L)
    44+L    ...   body: c2sp.org/chunked-encryption, Cobblestone-256 (AES-256-GCM, HKDF-SHA-512)

Header JSON::

    {"context": {"file_count", "file_index", "manifest_digest", "model", "path", "set_id"},
     "recipients": [stanza, ...], "suite": "cobblestone-256"}

Two bindings make any header edit fail decryption:

* the immutable part (format version, suite, context) is the body's C2SP *context*, so it enters
  the HKDF that derives the body key and key commitment: change a byte and the commitment check
  fails before any chunk is decrypted;
* the whole header, recipients included, is covered by the header MAC, whose key is derived from
  the file's data key (``mac_key = HKDF-SHA256(DEK, info="weightvault.wvenc/v1 header mac")``).
  Re-wrapping recomputes the MAC (it needs the DEK anyway) and never touches the body.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from weightvault._json import canonical, int_field, load_object, require_fields
from weightvault.crypt.stanzas import Stanza, stanza_from_json
from weightvault.errors import FormatError

__all__ = [
    "BODY_HEADER_SIZE",
    "CHUNK_SIZE",
    "ENCRYPTED_CHUNK_SIZE",
    "FORMAT_VERSION",
    "MAGIC",
    "SUFFIX",
    "SUITE",
    "FileContext",
    "Header",
    "body_size_for",
    "compute_header_mac",
    "parse_header",
    "plaintext_size_for",
    "read_header",
    "serialize_header",
]

MAGIC = b"WVENC\x00"
FORMAT_VERSION = 1
SUITE = "cobblestone-256"
SUFFIX = ".wvenc"
PREFIX_SIZE = 12
MAC_SIZE = 32
MAX_HEADER_JSON = 1 << 20
#: C2SP chunked encryption: 24-byte salt + 32-byte commitment, then 16 KiB chunks + 16-byte tags.
BODY_HEADER_SIZE = 56
CHUNK_SIZE = 16384
TAG_SIZE = 16
ENCRYPTED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
_BODY_CONTEXT_PREFIX = b"weightvault.wvenc/v1\n"
_MAC_INFO = b"weightvault.wvenc/v1 header mac"
_HEX_RE = re.compile(r"[0-9a-f]+")
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
MAX_FILE_COUNT = 10_000_000


def canonical_json(document: Any) -> bytes:
    """The one byte encoding of a header document."""
    return canonical(document)


def _check_posix_path(path: object, where: str) -> str:
    if not isinstance(path, str) or not path:
        raise FormatError(f"{where}: expected a non-empty string")
    if len(path) > 4096 or path.startswith("/") or "\\" in path or "\x00" in path:
        raise FormatError(f"{where}: not a relative POSIX path")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise FormatError(f"{where}: path has an empty, '.' or '..' component")
    return path


#: The fields of a file context, in their JSON (sorted) order.
_CONTEXT_FIELDS = ("file_count", "file_index", "manifest_digest", "model", "path", "set_id")


@dataclass(frozen=True)
class FileContext:
    """What a ciphertext is for: bound into the body key, so a file moved elsewhere fails."""

    model: str
    """Model name (defaults to the model folder's or file's name)."""
    path: str
    """POSIX path of the file within the model (the file name for a single-file model)."""
    file_index: int
    """Position of the file in the model's canonical order (0-based)."""
    file_count: int
    """Number of files the model was encrypted with; a missing file is noticed."""
    set_id: str
    """32 hex characters, random per ``encrypt`` run: files from different runs do not mix."""
    manifest_digest: str | None = None
    """Optional ``sha256:<hex>`` of the signed manifest/bundle the plaintext belongs to."""

    def __post_init__(self) -> None:
        self.check("context")

    @classmethod
    def of_set(
        cls, model: str, paths: Sequence[str], set_id: str, manifest_digest: str | None = None
    ) -> list[FileContext]:
        """The context of every file of one encrypted set, in the set's order: each binds its
        position and the set's size, so a file moved, dropped or mixed in from another set (or
        another encryption of the same model) fails to decrypt."""
        return [
            cls(model, path, index, len(paths), set_id, manifest_digest)
            for index, path in enumerate(paths)
        ]

    def check(self, where: str) -> None:
        """Raise :class:`FormatError` naming the first invalid field."""
        if not isinstance(self.model, str) or not self.model or len(self.model) > 1024:
            raise FormatError(f"{where}.model: expected a non-empty string of at most 1024 chars")
        if any(ord(c) < 0x20 or 0xD800 <= ord(c) <= 0xDFFF for c in self.model):
            raise FormatError(f"{where}.model: control characters and surrogates are not allowed")
        _check_posix_path(self.path, f"{where}.path")
        count = int_field(self.file_count, f"{where}.file_count")
        index = int_field(self.file_index, f"{where}.file_index")
        if not 1 <= count <= MAX_FILE_COUNT:
            raise FormatError(f"{where}.file_count: must be between 1 and {MAX_FILE_COUNT}")
        if not 0 <= index < count:
            raise FormatError(f"{where}.file_index: must be between 0 and file_count - 1")
        if (
            not isinstance(self.set_id, str)
            or len(self.set_id) != 32
            or not _HEX_RE.fullmatch(self.set_id)
        ):
            raise FormatError(f"{where}.set_id: expected 32 lowercase hex characters")
        if self.manifest_digest is not None and (
            not isinstance(self.manifest_digest, str)
            or not _DIGEST_RE.fullmatch(self.manifest_digest)
        ):
            raise FormatError(f"{where}.manifest_digest: expected sha256:<64 lowercase hex>")

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _CONTEXT_FIELDS}

    @classmethod
    def from_json(cls, data: object, where: str = "context") -> FileContext:
        if not isinstance(data, dict):
            raise FormatError(f"{where}: expected an object")
        require_fields(data, _CONTEXT_FIELDS, where)
        try:
            return cls(**data)
        except FormatError as exc:
            raise FormatError(exc.message.replace("context.", f"{where}.", 1)) from exc


@dataclass(frozen=True)
class Header:
    """A parsed ``.wvenc`` header; ``raw`` keeps the exact bytes the MAC covers."""

    context: FileContext
    recipients: tuple[Stanza, ...]
    suite: str = SUITE
    version: int = FORMAT_VERSION
    raw: bytes = b""
    """Magic, version, length and JSON exactly as read (what the MAC covers)."""
    mac: bytes = b""

    @property
    def size(self) -> int:
        """Bytes from the start of the file to the start of the body."""
        return len(self.raw) + MAC_SIZE

    def body_context(self) -> bytes:
        """The C2SP *context*: everything in the header except the recipients."""
        return body_context_for(self.context, suite=self.suite)


def body_context_for(context: FileContext, *, suite: str = SUITE) -> bytes:
    """The C2SP context bytes for a file: format version, suite and file context."""
    return _BODY_CONTEXT_PREFIX + canonical_json({"context": context.to_json(), "suite": suite})


def header_mac_key(dek: bytes) -> bytes:
    """The header MAC key, derived from the data key so only key holders can re-seal a header."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_MAC_INFO).derive(dek)


def compute_header_mac(dek: bytes, raw: bytes) -> bytes:
    """HMAC-SHA256 over the header bytes (magic through JSON)."""
    return hmac.new(header_mac_key(dek), raw, hashlib.sha256).digest()


def header_mac_matches(dek: bytes, header: Header) -> bool:
    """Constant-time check of the header MAC under a candidate data key."""
    return hmac.compare_digest(compute_header_mac(dek, header.raw), header.mac)


def serialize_header(context: FileContext, recipients: tuple[Stanza, ...], dek: bytes) -> bytes:
    """Header bytes (prefix, JSON, MAC) for a file encrypted under ``dek``."""
    if not recipients:
        raise ValueError("a header needs at least one recipient")
    document = {
        "context": context.to_json(),
        "recipients": [stanza.to_json() for stanza in recipients],
        "suite": SUITE,
    }
    body = canonical_json(document)
    if len(body) > MAX_HEADER_JSON:
        raise FormatError(f"header: {len(body)} bytes is over the {MAX_HEADER_JSON}-byte limit")
    raw = MAGIC + struct.pack(">HI", FORMAT_VERSION, len(body)) + body
    return raw + compute_header_mac(dek, raw)


def parse_header(data: bytes, name: str) -> Header:
    """Parse header bytes (prefix + JSON + MAC; extra trailing bytes are ignored).

    Checks only public structure; the MAC and the body are checked once a key is known.
    ``name`` (the file) starts every message.
    """
    if len(data) < PREFIX_SIZE or data[: len(MAGIC)] != MAGIC:
        raise FormatError(f"{name}: not a weightvault encrypted file (bad magic)")
    version, length = struct.unpack(">HI", data[len(MAGIC) : PREFIX_SIZE])
    if version != FORMAT_VERSION:
        raise FormatError(
            f"{name}: format version {version} is not supported (this weightvault reads "
            f"version {FORMAT_VERSION}); upgrade weightvault"
        )
    if not 2 <= length <= MAX_HEADER_JSON:
        raise FormatError(f"{name}: header length {length} is out of range")
    if len(data) < PREFIX_SIZE + length + MAC_SIZE:
        raise FormatError(f"{name}: file is truncated inside its header")
    body = data[PREFIX_SIZE : PREFIX_SIZE + length]
    document = load_object(body, f"{name}: header")
    try:
        encoded = canonical_json(document)
    except UnicodeEncodeError as exc:  # a lone surrogate escaped in the JSON
        raise FormatError(f"{name}: header JSON holds a string that is not valid Unicode") from exc
    if encoded != body:
        raise FormatError(f"{name}: header JSON is not in canonical form")
    try:
        require_fields(document, ("context", "recipients", "suite"), "header")
        if document["suite"] != SUITE:
            raise FormatError(f"header.suite: unsupported suite {document['suite']!r}")
        context = FileContext.from_json(document["context"], "header.context")
        stanzas = document["recipients"]
        if not isinstance(stanzas, list) or not stanzas:
            raise FormatError("header.recipients: expected a non-empty list")
        if len(stanzas) > 1024:
            raise FormatError("header.recipients: more than 1024 recipients")
        recipients = tuple(
            stanza_from_json(item, f"header.recipients[{i}]") for i, item in enumerate(stanzas)
        )
    except FormatError as exc:
        raise FormatError(f"{name}: {exc.message}") from exc
    raw = data[: PREFIX_SIZE + length]
    mac = data[PREFIX_SIZE + length : PREFIX_SIZE + length + MAC_SIZE]
    return Header(context=context, recipients=recipients, raw=raw, mac=mac)


def read_header(handle: Any, name: str) -> Header:
    """Read and parse the header at the start of an open binary file."""
    prefix = handle.read(PREFIX_SIZE)
    if len(prefix) < PREFIX_SIZE or prefix[: len(MAGIC)] != MAGIC:
        raise FormatError(f"{name}: not a weightvault encrypted file (bad magic)")
    _version, length = struct.unpack(">HI", prefix[len(MAGIC) :])
    if not 2 <= length <= MAX_HEADER_JSON:
        # Let parse_header report version problems before length problems.
        return parse_header(prefix, name)
    rest = handle.read(length + MAC_SIZE)
    return parse_header(prefix + rest, name)


def plaintext_size_for(body_size: int) -> int | None:
    """Plaintext length for a C2SP body of ``body_size`` bytes, or None if no message has it.

    body = 56 + k * (16384 + 16) + (r + 16) with 0 <= r < 16384; plaintext = 16384 * k + r.
    A body that ends exactly on a chunk boundary is a truncated message (spec, implementation
    notes), and so is anything shorter than 56 + 16.
    """
    rest = body_size - BODY_HEADER_SIZE - TAG_SIZE
    if rest < 0:
        return None
    full, last = divmod(rest, ENCRYPTED_CHUNK_SIZE)
    if last >= CHUNK_SIZE:
        return None
    return full * CHUNK_SIZE + last


def body_size_for(plaintext_size: int) -> int:
    """C2SP body length for a plaintext of ``plaintext_size`` bytes."""
    full, last = divmod(plaintext_size, CHUNK_SIZE)
    return BODY_HEADER_SIZE + full * ENCRYPTED_CHUNK_SIZE + last + TAG_SIZE
