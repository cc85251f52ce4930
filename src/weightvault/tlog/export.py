"""A log's export: every entry, leaf hash and signed checkpoint, and its offline check.

:func:`verify_export` needs only the log's public key (and, optionally, an earlier checkpoint
the verifier trusts and witness keys): it recomputes the tree from the entries, requires every
signed root to match at its size, and names the first entry that was changed, removed,
reordered or inserted.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from weightvault import _b64
from weightvault._json import load_object
from weightvault.errors import FormatError, VerificationError
from weightvault.tlog.checkpoint import VerifiedCheckpoint, WitnessPolicy, verify_checkpoint
from weightvault.tlog.merkle import EMPTY_ROOT, HASH_SIZE, leaf_hash, node_hash
from weightvault.tlog.note import VerifierKey

__all__ = ["EXPORT_FORMAT", "ExportVerification", "LogExport", "verify_export"]

EXPORT_FORMAT = "weightvault.dev/tlog-export@v1"


def _b64_list(value: object, field: str, *, hashes: bool = False) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise FormatError(f"export: {field}: not a list")
    out = []
    for position, item in enumerate(value):
        if not isinstance(item, str):
            raise FormatError(f"export: {field}[{position}]: not a string")
        raw = _b64.decode(item, f"export: {field}[{position}]")
        if hashes and len(raw) != HASH_SIZE:
            raise FormatError(f"export: {field}[{position}]: not a 32-byte hash")
        out.append(raw)
    return tuple(out)


@dataclass(frozen=True)
class LogExport:
    """An exported log: entries, their leaf hashes, and every checkpoint the log signed.

    The leaf hashes let a verifier name the first bad entry: once they reproduce a signed root
    they are authentic, and the first entry whose hash differs from its leaf hash is the change.
    """

    origin: str
    checkpoints: tuple[bytes, ...]
    entries: tuple[bytes, ...]
    leaf_hashes: tuple[bytes, ...]

    @classmethod
    def from_json(cls, data: bytes) -> LogExport:
        doc = load_object(data, "export")
        expected = {"format", "origin", "checkpoints", "entries", "leaf_hashes"}
        if set(doc) != expected:
            unknown = sorted(set(doc) - expected)
            missing = sorted(expected - set(doc))
            raise FormatError(f"export: unknown fields {unknown}, missing fields {missing}")
        if doc["format"] != EXPORT_FORMAT:
            raise FormatError(f"export: format must be {EXPORT_FORMAT!r}")
        if not isinstance(doc["origin"], str) or not doc["origin"]:
            raise FormatError("export: origin: not a non-empty string")
        checkpoints = doc["checkpoints"]
        if not isinstance(checkpoints, list) or not all(isinstance(c, str) for c in checkpoints):
            raise FormatError("export: checkpoints: not a list of strings")
        return cls(
            origin=doc["origin"],
            checkpoints=tuple(c.encode() for c in checkpoints),
            entries=_b64_list(doc["entries"], "entries"),
            leaf_hashes=_b64_list(doc["leaf_hashes"], "leaf_hashes", hashes=True),
        )

    def to_json(self) -> bytes:
        doc = {
            "format": EXPORT_FORMAT,
            "origin": self.origin,
            "checkpoints": [c.decode() for c in self.checkpoints],
            "entries": [_b64.encode(e) for e in self.entries],
            "leaf_hashes": [_b64.encode(h) for h in self.leaf_hashes],
        }
        return (json.dumps(doc, indent=1) + "\n").encode()


@dataclass(frozen=True)
class ExportVerification:
    """An export that verified: its size and root, under which checkpoints."""

    origin: str
    size: int
    root: bytes
    checkpoint: VerifiedCheckpoint
    trusted_size: int | None
    """Size of the earlier trusted checkpoint it was checked against, if one was given."""
    checkpoints_checked: int


def _roots_at(leaves: Sequence[bytes], sizes: Iterable[int]) -> dict[int, bytes]:
    """MTH(D[0:s]) for every s in ``sizes`` in one pass (s <= len(leaves))."""
    wanted = sorted(set(sizes))
    out: dict[int, bytes] = {}
    if wanted and wanted[0] == 0:
        out[0] = EMPTY_ROOT
    pending = [s for s in wanted if s > 0]
    stack: list[bytes] = []
    position = 0
    for count, value in enumerate(leaves, start=1):
        if position >= len(pending):
            break
        stack.append(value)
        for _ in range((count & -count).bit_length() - 1):
            right = stack.pop()
            stack.append(node_hash(stack.pop(), right))
        while position < len(pending) and pending[position] == count:
            root = stack[-1]
            for left in reversed(stack[:-1]):
                root = node_hash(left, root)
            out[count] = root
            position += 1
    return out


def _first_bad_index(export: LogExport, size: int, signed_root: bytes) -> str:
    """Name the first entry that differs from what the log signed, when that can be known."""
    authentic = len(export.leaf_hashes) == size and hmac.compare_digest(
        _roots_at(export.leaf_hashes, [size]).get(size, b""), signed_root
    )
    limit = max(len(export.entries), size)
    for index in range(limit):
        if index >= len(export.entries):
            return f"entry {index}: missing (the signed tree has {size} entries)"
        if index >= len(export.leaf_hashes):
            return f"entry {index}: not covered by the signed checkpoint (size {size})"
        if leaf_hash(export.entries[index]) != export.leaf_hashes[index]:
            what = "changed, removed, reordered or inserted" if authentic else "altered"
            return f"entry {index}: {what}"
    return "the export's hashes do not match the signed checkpoint (hash records altered)"


def verify_export(
    export: LogExport | bytes,
    log_key: VerifierKey,
    *,
    trusted_checkpoint: bytes | None = None,
    witnesses: WitnessPolicy | None = None,
) -> ExportVerification:
    """Check an exported log end to end against the log's key and an earlier checkpoint.

    Steps: (1) parse; (2) verify every checkpoint's log signature (the latest also against the
    witness policy) and the trusted checkpoint; (3) recompute the tree from the entries and
    require every checkpoint's root, including the trusted one, to match at its size (this is
    consistency by recomputation: each signed tree is a prefix of the export); (4) on mismatch,
    name the first entry that was changed, removed, reordered or inserted.
    """
    # Step 1.
    parsed = export if isinstance(export, LogExport) else LogExport.from_json(export)
    if not parsed.checkpoints:
        raise VerificationError("export: contains no signed checkpoint")
    # Step 2.
    verified = [
        verify_checkpoint(note, log_key, origin=parsed.origin) for note in parsed.checkpoints
    ]
    latest = max(verified, key=lambda v: v.checkpoint.size)
    if witnesses is not None:
        latest = verify_checkpoint(latest.raw, log_key, origin=parsed.origin, witnesses=witnesses)
    trusted = (
        verify_checkpoint(trusted_checkpoint, log_key, origin=parsed.origin)
        if trusted_checkpoint is not None
        else None
    )
    size = latest.checkpoint.size
    if trusted is not None and trusted.checkpoint.size > size:
        raise VerificationError(
            f"export: its latest checkpoint (size {size}) is older than the trusted checkpoint "
            f"(size {trusted.checkpoint.size}): the log was rolled back or this export is stale"
        )
    # Step 3.
    leaves = [leaf_hash(e) for e in parsed.entries]
    targets = [v.checkpoint for v in verified] + ([trusted.checkpoint] if trusted else [])
    roots = _roots_at(leaves, [c.size for c in targets if c.size <= len(leaves)])
    mismatched = [c for c in targets if not hmac.compare_digest(roots.get(c.size, b""), c.root)]
    latest_ok = len(parsed.entries) == size and latest.checkpoint not in mismatched
    if not latest_ok:
        # Step 4: the export was altered after the log signed it; find where.
        where = _first_bad_index(parsed, size, latest.checkpoint.root)
        raise VerificationError(f"exported log does not match its signed checkpoints: {where}")
    if mismatched:
        # The entries match the latest signed tree, but an earlier signed tree is not a prefix
        # of it: the log itself signed two inconsistent histories (a fork or a rewrite).
        earliest = min(c.size for c in mismatched)
        raise VerificationError(
            f"the log rewrote its history: its checkpoint at size {size} is not consistent "
            f"with the signed checkpoint at size {earliest}",
            hint="keep the earlier checkpoint as evidence; the log's key signed both",
        )
    return ExportVerification(
        origin=parsed.origin,
        size=size,
        root=latest.checkpoint.root,
        checkpoint=latest,
        trusted_size=trusted.checkpoint.size if trusted else None,
        checkpoints_checked=len(targets),
    )
