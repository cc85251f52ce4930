"""Offline proofs: the C2SP ``tlog-proof`` bundle, and consistency proofs as text.

A ``.tlog-proof`` holds the entry's index, its inclusion path and the signed checkpoint
(with any witness cosignatures), so anyone with the log's public key can check that an entry is
in the log without talking to it (:func:`verify_tlog_proof`).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from weightvault import _b64
from weightvault.errors import FormatError, VerificationError
from weightvault.tlog.checkpoint import (
    Checkpoint,
    ProvenUnder,
    VerifiedCheckpoint,
    WitnessPolicy,
    _parse_size,
    verify_checkpoint,
)
from weightvault.tlog.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    MAX_PROOF_HASHES,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from weightvault.tlog.note import VerifierKey, decode_text

__all__ = [
    "ConsistencyProof",
    "LogEntryProof",
    "TlogProof",
    "verify_tlog_proof",
]

TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"
CONSISTENCY_HEADER = "weightvault.dev/tlog-consistency@v1"
MAX_PROOF_BYTES = 128 * 1024


def _hash_lines(lines: Sequence[str], what: str) -> tuple[bytes, ...]:
    if len(lines) > MAX_PROOF_HASHES:
        raise FormatError(f"{what}: more than {MAX_PROOF_HASHES} hashes")
    hashes = []
    for number, line in enumerate(lines, start=1):
        value = _b64.decode(line, f"{what}: hash {number}")
        if len(value) != HASH_SIZE:
            raise FormatError(f"{what}: hash {number} is not 32 bytes")
        hashes.append(value)
    return tuple(hashes)


@dataclass(frozen=True)
class TlogProof:
    """A parsed ``c2sp.org/tlog-proof@v1`` (not yet verified: everything in it is suspect)."""

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: bytes
    """The signed checkpoint note, verbatim."""
    extra: bytes | None = None

    @classmethod
    def from_bytes(cls, data: bytes) -> TlogProof:
        """Parse strictly; the result re-encodes to exactly ``data``."""
        text = decode_text(data, "tlog-proof", MAX_PROOF_BYTES)
        head, sep, checkpoint = text.partition("\n\n")
        if not sep or not checkpoint:
            raise FormatError("tlog-proof: no blank line before the checkpoint")
        lines = head.split("\n")
        if lines[0] != TLOG_PROOF_HEADER:
            raise FormatError(f"tlog-proof: first line must be {TLOG_PROOF_HEADER}")
        position = 1
        extra = None
        if position < len(lines) and lines[position].startswith("extra "):
            extra = _b64.decode(lines[position][6:], "tlog-proof: extra")
            position += 1
        if position >= len(lines) or not lines[position].startswith("index "):
            raise FormatError("tlog-proof: missing 'index' line")
        index = _parse_size(lines[position][6:], "tlog-proof: index")
        hashes = _hash_lines(lines[position + 1 :], "tlog-proof")
        proof = cls(index=index, hashes=hashes, checkpoint=checkpoint.encode(), extra=extra)
        if proof.to_bytes() != data:
            raise FormatError("tlog-proof: not in canonical form")
        return proof

    def to_bytes(self) -> bytes:
        lines = [TLOG_PROOF_HEADER]
        if self.extra is not None:
            lines.append("extra " + _b64.encode(self.extra))
        lines.append(f"index {self.index}")
        lines.extend(_b64.encode(h) for h in self.hashes)
        return ("\n".join(lines) + "\n\n").encode() + self.checkpoint


@dataclass(frozen=True)
class LogEntryProof(ProvenUnder):
    """An entry proven to be in a log: where, under which verified checkpoint."""

    index: int
    leaf_hash: bytes
    checkpoint: VerifiedCheckpoint


def verify_tlog_proof(
    proof: bytes | TlogProof,
    entry: bytes,
    log_key: VerifierKey,
    *,
    origin: str | None = None,
    witnesses: WitnessPolicy | None = None,
) -> LogEntryProof:
    """Check a tlog-proof for ``entry`` offline.

    Steps: (1) parse; (2) verify the checkpoint's log signature and witness policy; (3) verify
    the inclusion path from SHA-256(0x00 || entry) at ``index`` to the checkpoint's root
    (RFC 9162 §2.1.3.2). Any mismatch in (3) is the opaque "inclusion proof failed".
    """
    parsed = proof if isinstance(proof, TlogProof) else TlogProof.from_bytes(proof)
    verified = verify_checkpoint(parsed.checkpoint, log_key, origin=origin, witnesses=witnesses)
    leaf = leaf_hash(entry)
    cp = verified.checkpoint
    verify_inclusion(leaf, parsed.index, cp.size, parsed.hashes, cp.root)
    return LogEntryProof(index=parsed.index, leaf_hash=leaf, checkpoint=verified)


@dataclass(frozen=True)
class ConsistencyProof:
    """A consistency proof between two tree sizes of one log, as a small text file.

    Format: the header line, ``old <size>``, ``new <size>``, then one base64 hash per line.
    The roots come from checkpoints, never from this file.
    """

    old_size: int
    new_size: int
    hashes: tuple[bytes, ...]

    @classmethod
    def from_bytes(cls, data: bytes) -> ConsistencyProof:
        text = decode_text(data, "consistency proof", MAX_PROOF_BYTES, encoding="ascii")
        if not text.endswith("\n"):
            raise FormatError("consistency proof: does not end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or lines[0] != CONSISTENCY_HEADER:
            raise FormatError(f"consistency proof: first line must be {CONSISTENCY_HEADER}")
        if not lines[1].startswith("old ") or not lines[2].startswith("new "):
            raise FormatError("consistency proof: expected 'old N' and 'new N' lines")
        old_size = _parse_size(lines[1][4:], "consistency proof: old size")
        new_size = _parse_size(lines[2][4:], "consistency proof: new size")
        hashes = _hash_lines(lines[3:], "consistency proof")
        result = cls(old_size=old_size, new_size=new_size, hashes=hashes)
        if result.to_bytes() != data:
            raise FormatError("consistency proof: not in canonical form")
        return result

    def to_bytes(self) -> bytes:
        lines = [CONSISTENCY_HEADER, f"old {self.old_size}", f"new {self.new_size}"]
        lines.extend(_b64.encode(h) for h in self.hashes)
        return ("\n".join(lines) + "\n").encode()

    def verify(self, old: Checkpoint, new: Checkpoint) -> None:
        """Check that ``old`` is a prefix of ``new`` (RFC 9162 §2.1.4.2)."""
        if (self.old_size, self.new_size) != (old.size, new.size) or old.origin != new.origin:
            raise VerificationError("consistency proof failed")
        if old.size == 0:
            # The empty tree is a prefix of every tree; there is nothing to prove.
            if self.hashes or not hmac.compare_digest(old.root, EMPTY_ROOT):
                raise VerificationError("consistency proof failed")
            return
        if old.size == new.size and not hmac.compare_digest(old.root, new.root):
            raise VerificationError("consistency proof failed")
        verify_consistency(old.size, new.size, self.hashes, old.root, new.root)
