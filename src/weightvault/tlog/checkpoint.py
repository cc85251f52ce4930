"""C2SP tlog-checkpoint bodies, their signed form, and k-of-n witness policies.

A checkpoint is the text of a signed note: origin line, decimal tree size, base64 root hash, and
optional non-empty extension lines. :func:`verify_checkpoint` opens the note with the log's key
and, when asked, requires cosignatures from at least ``k`` of the given witness keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from weightvault import _b64
from weightvault.errors import FormatError, VerificationError
from weightvault.tlog.merkle import HASH_SIZE, MAX_TREE_SIZE
from weightvault.tlog.note import (
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    Note,
    VerifiedNote,
    VerifierKey,
    open_note,
    parse_note,
)

__all__ = [
    "Checkpoint",
    "ProvenUnder",
    "VerifiedCheckpoint",
    "WitnessPolicy",
    "verify_checkpoint",
]

MAX_CHECKPOINT_BYTES = 64 * 1024


def _parse_size(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise FormatError(f"{what}: not a decimal number without leading zeros")
    value = int(text)
    if value > MAX_TREE_SIZE:
        raise FormatError(f"{what}: larger than 2^63 - 1")
    return value


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: which log (origin), how many entries, and the Merkle root."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or self.origin != self.origin.strip():
            raise ValueError("origin must be one non-empty line without surrounding spaces")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise ValueError("size out of range")
        if len(self.root) != HASH_SIZE:
            raise ValueError("root must be 32 bytes")
        if any(not line or "\n" in line for line in self.extensions):
            raise ValueError("extension lines must be non-empty single lines")

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body strictly; the result re-encodes to exactly ``text``."""
        if not text.endswith("\n"):
            raise FormatError("checkpoint: does not end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise FormatError("checkpoint: needs origin, size and root hash lines")
        origin, size_text, root_text, *extensions = lines
        if not origin or origin != origin.strip():
            raise FormatError("checkpoint: origin line is empty or has surrounding spaces")
        size = _parse_size(size_text, "checkpoint: tree size")
        root = _b64.decode(root_text, "checkpoint: root hash")
        if len(root) != HASH_SIZE:
            raise FormatError("checkpoint: root hash is not 32 bytes")
        if any(not line for line in extensions):
            raise FormatError("checkpoint: empty extension line")
        return cls(origin=origin, size=size, root=root, extensions=tuple(extensions))

    def to_text(self) -> str:
        root = _b64.encode(self.root)
        lines = (self.origin, str(self.size), root, *self.extensions)
        return "".join(f"{line}\n" for line in lines)


@dataclass(frozen=True)
class WitnessPolicy:
    """Require cosignatures from at least ``threshold`` of ``witnesses`` (k-of-n)."""

    witnesses: tuple[VerifierKey, ...]
    threshold: int

    def __post_init__(self) -> None:
        if not self.witnesses:
            raise ValueError("a witness policy needs at least one witness key (k-of-n, n >= 1)")
        if not 1 <= self.threshold <= len(self.witnesses):
            raise ValueError(f"threshold must be in [1, {len(self.witnesses)}]")
        if any(w.sig_type != SIG_COSIGNATURE_V1 for w in self.witnesses):
            raise ValueError("witness keys must be cosignature keys (type 0x04)")
        if len({(w.name, w.key_id) for w in self.witnesses}) != len(self.witnesses):
            raise ValueError("witness keys must be distinct")


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint whose log signature (and any required cosignatures) verified."""

    checkpoint: Checkpoint
    note: Note
    raw: bytes
    witnesses: tuple[str, ...] = field(default=())
    """Names of the witnesses whose cosignatures verified."""
    cosignature_times: dict[str, int] = field(default_factory=dict)


class ProvenUnder:
    """Mixed into a record that holds the verified ``checkpoint`` it was proven under (an entry's
    inclusion proof, a whole verified log): that tree's size and root, named once."""

    checkpoint: VerifiedCheckpoint

    @property
    def tree_size(self) -> int:
        return self.checkpoint.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.checkpoint.root


def verify_checkpoint(
    data: bytes,
    log_key: VerifierKey,
    *,
    origin: str | None = None,
    witnesses: WitnessPolicy | None = None,
    extra_witness_keys: Sequence[VerifierKey] = (),
) -> VerifiedCheckpoint:
    """Open a signed checkpoint.

    Steps: (1) size cap and note syntax; (2) the log key's signature must verify (any trusted
    key's bad line fails the note); (3) the body must be a well-formed checkpoint whose origin is
    ``origin`` (default: the log key's name); (4) at least ``witnesses.threshold`` distinct
    witnesses must have cosigned.
    """
    if log_key.sig_type != SIG_ED25519:
        raise ValueError("the log key must be an Ed25519 note key (type 0x01)")
    # Step 1.
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise FormatError(f"checkpoint: larger than {MAX_CHECKPOINT_BYTES} bytes")
    note = parse_note(data)
    # Step 2.
    keys = [log_key, *(witnesses.witnesses if witnesses else ()), *extra_witness_keys]
    opened: VerifiedNote = open_note(note, keys)
    if log_key not in opened.verified:
        raise VerificationError("checkpoint: not signed by the log key", hint=log_key.name)
    # Step 3.
    checkpoint = Checkpoint.from_text(opened.text)
    expected_origin = log_key.name if origin is None else origin
    if checkpoint.origin != expected_origin:
        raise VerificationError(
            f"checkpoint: origin {checkpoint.origin!r} is not the expected {expected_origin!r}"
        )
    # Step 4.
    names = tuple(k.name for k in opened.verified if k.sig_type == SIG_COSIGNATURE_V1)
    if witnesses is not None:
        wanted = {(w.name, w.key_id) for w in witnesses.witnesses}
        got = {(k.name, k.key_id) for k in opened.verified} & wanted
        if len(got) < witnesses.threshold:
            raise VerificationError(
                f"checkpoint: {len(got)} of the required {witnesses.threshold} witness "
                "cosignatures verified",
                hint="have more witnesses cosign with 'weightvault witness cosign'",
            )
    return VerifiedCheckpoint(
        checkpoint=checkpoint,
        note=note,
        raw=bytes(data),
        witnesses=names,
        cosignature_times=dict(opened.cosignature_times),
    )
