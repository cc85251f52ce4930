"""The custody audit log as evidence: verified entries, each with its own inclusion proof.

An incident report is only worth something if a third party can check it without trusting the
person who wrote it. So everything in :mod:`weightvault.incident` starts here:

1. the whole exported log is verified against the log's public key
   (:func:`weightvault.tlog.verify_export`: every signed checkpoint, every entry; an edited,
   deleted, reordered or inserted entry fails and is named);
2. every entry the report uses gets an RFC 9162 inclusion proof against the latest signed
   checkpoint, computed from the export's leaf hashes and checked with
   :func:`weightvault.tlog.verify_inclusion` before it is used;
3. the proof travels with the line (index, tree size, audit path, and the entry's bytes), so
   :func:`verify_line` re-checks one line later with only the checkpoint and the log key.

Three places give the log: an export file (``weightvault vault audit -o``, what an auditor
holds), a custody data folder (the service host or a copy of it; only entries under the latest
checkpoint the service signed count), or the service API (an auditor's token; the service signs
a fresh checkpoint for every export).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from weightvault import _b64
from weightvault.custody.audit import parse_audit_event, voided_entries
from weightvault.errors import FormatError, InputError, UsageError, VerificationError
from weightvault.tlog import (
    LogExport,
    ProvenUnder,
    TransparencyLog,
    VerifiedCheckpoint,
    VerifierKey,
    leaf_hash,
    node_hash,
    verify_checkpoint,
    verify_export,
    verify_inclusion,
)
from weightvault.tlog.merkle import inclusion_ranges, range_blocks

if TYPE_CHECKING:
    from weightvault.custody.client import ClientConfig

__all__ = [
    "AuditEntry",
    "Evidence",
    "LineProof",
    "evidence_from_data_folder",
    "evidence_from_export",
    "evidence_from_service",
    "load_evidence",
    "read_log_key",
    "verify_line",
]

MAX_EXPORT_BYTES = 4 << 30


@dataclass(frozen=True)
class LineProof:
    """Proof that one entry is leaf ``index`` of the signed tree of ``tree_size`` entries."""

    index: int
    tree_size: int
    leaf_hash: bytes
    hashes: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "tree_size": self.tree_size,
            "leaf_hash": _b64.encode(self.leaf_hash),
            "hashes": [_b64.encode(h) for h in self.hashes],
        }

    @classmethod
    def from_json(cls, doc: object, where: str) -> LineProof:
        if not isinstance(doc, dict) or set(doc) != {"index", "tree_size", "leaf_hash", "hashes"}:
            raise FormatError(f"{where}: expected index, tree_size, leaf_hash and hashes")
        index, size = doc["index"], doc["tree_size"]
        for name, value in (("index", index), ("tree_size", size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise FormatError(f"{where}.{name}: not a non-negative integer")
        hashes = doc["hashes"]
        if not isinstance(hashes, list) or len(hashes) > 64:
            raise FormatError(f"{where}.hashes: not a list of at most 64 hashes")
        return cls(
            index=index,
            tree_size=size,
            leaf_hash=_b64.decode(_text(doc["leaf_hash"], f"{where}.leaf_hash"), where),
            hashes=tuple(
                _b64.decode(_text(h, f"{where}.hashes[{i}]"), f"{where}.hashes[{i}]")
                for i, h in enumerate(hashes)
            ),
        )


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise FormatError(f"{where}: not a string")
    return value


@dataclass(frozen=True)
class AuditEntry:
    """One verified audit entry: its position, exact bytes and parsed event."""

    index: int
    raw: bytes = field(repr=False)
    event: dict[str, Any]

    @property
    def action(self) -> str:
        return str(self.event.get("action", ""))

    @property
    def outcome(self) -> str:
        return str(self.event.get("outcome", ""))

    @property
    def detail(self) -> dict[str, Any]:
        detail = self.event.get("detail")
        return detail if isinstance(detail, dict) else {}


@dataclass(frozen=True)
class Evidence(ProvenUnder):
    """A verified audit log: its entries, its latest signed checkpoint, and proofs on demand."""

    log_key: VerifierKey
    checkpoint: VerifiedCheckpoint
    entries: tuple[bytes, ...] = field(repr=False)
    """Every entry under the checkpoint, as logged (parsed on demand: a big log's parsed
    events would take several times its size in memory)."""
    source: str
    """Where the log came from (a file, a data folder, a service URL), for the report."""
    unproven_tail: int = 0
    """Entries the log holds after its latest signed checkpoint (not evidence yet; left out)."""
    _levels: list[list[bytes]] = field(default_factory=list, repr=False, compare=False)

    def entry(self, index: int) -> AuditEntry:
        """Entry ``index``, parsed."""
        return _parse_entry(index, self.entries[index])

    @cached_property
    def voided(self) -> dict[int, AuditEntry]:
        """Each voided entry's index -> the ``audit.void`` entry that voids it, checked
        (:func:`~weightvault.custody.audit.voided_entries`). A voided entry's commit was in
        doubt and its request was refused: it never took effect, and nothing counts it."""
        return {target: self.entry(void) for target, void in voided_entries(self.entries).items()}

    def iter_entries(self, containing: tuple[bytes, ...] = ()) -> Iterator[AuditEntry]:
        """Every entry in log order, parsed one at a time (only those whose bytes contain one
        of ``containing``, when given: a cheap filter before parsing)."""
        for index, raw in enumerate(self.entries):
            if containing and not any(needle in raw for needle in containing):
                continue
            yield _parse_entry(index, raw)

    def prove(self, index: int) -> LineProof:
        """The inclusion proof of entry ``index``, checked against the signed root first."""
        size = self.tree_size
        hashes = tuple(self._subtree(lo, hi) for lo, hi in inclusion_ranges(index, size))
        leaf = self._levels[0][index]
        verify_inclusion(leaf, index, size, hashes, self.root)  # never hand out a bad proof
        return LineProof(index=index, tree_size=size, leaf_hash=leaf, hashes=hashes)

    def _subtree(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) from the complete subtrees kept in ``_levels``."""
        blocks = range_blocks(lo, hi)
        level, position = blocks[-1]
        result = self._levels[level][position]
        for level, position in reversed(blocks[:-1]):
            result = node_hash(self._levels[level][position], result)
        return result


def _levels_of(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every complete subtree's hash, level by level (level 0: the leaves); O(n) in all."""
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
    return levels


def _parse_entry(index: int, raw: bytes) -> AuditEntry:
    return AuditEntry(index=index, raw=raw, event=parse_audit_event(index, raw))


def _evidence(
    export: LogExport,
    log_key: VerifierKey,
    source: str,
    *,
    trusted_checkpoint: bytes | None,
    unproven_tail: int = 0,
) -> Evidence:
    # (1) The whole log against its signed checkpoints (names the first bad entry).
    verified = verify_export(export, log_key, trusted_checkpoint=trusted_checkpoint)
    size = verified.size
    leaves = [leaf_hash(e) for e in export.entries[:size]]
    return Evidence(
        log_key=log_key,
        checkpoint=verified.checkpoint,
        entries=tuple(export.entries[:size]),
        source=source,
        unproven_tail=unproven_tail,
        _levels=_levels_of(leaves),
    )


def read_log_key(spec: str) -> VerifierKey:
    """A log verifier key given as text (``name+id+key``) or as a file holding it."""
    path = Path(spec)
    text = spec
    if "+" not in spec or path.is_file():
        try:
            text = path.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{spec}: cannot read the log key") from exc
    try:
        return VerifierKey.from_text(text)
    except FormatError as exc:
        raise FormatError(f"log key: {exc.message}") from exc


def evidence_from_export(
    export: bytes, log_key: VerifierKey, *, source: str, trusted_checkpoint: bytes | None = None
) -> Evidence:
    """Evidence from an exported audit log (``weightvault vault audit -o FILE``)."""
    if len(export) > MAX_EXPORT_BYTES:
        raise InputError(f"{source}: larger than {MAX_EXPORT_BYTES} bytes")
    return _evidence(
        LogExport.from_json(export), log_key, source, trusted_checkpoint=trusted_checkpoint
    )


def evidence_from_data_folder(
    data_dir: Path,
    log_key: VerifierKey | None = None,
    *,
    log_location: str | None = None,
    trusted_checkpoint: bytes | None = None,
) -> Evidence:
    """Evidence from a custody data folder's own log (read only; nothing is signed or written).

    Without ``log_key`` the key is derived from the folder's ``audit-log.key``; an insider who
    controls the folder controls that too, so pass the key published elsewhere when you can.
    Only entries under the latest checkpoint the service signed are evidence; the rest are
    counted in :attr:`Evidence.unproven_tail`.
    """
    from weightvault.custody.bootstrap import is_custody_folder
    from weightvault.custody.config import ServiceConfig

    if not data_dir.is_dir() or not is_custody_folder(data_dir):
        raise InputError(f"{data_dir}: not a custody data folder")
    config = ServiceConfig(data_dir=data_dir)
    if log_key is None:
        log_key = config.load_log_signer().verifier_key
    location = log_location or config.log_location
    if not location.startswith("postgresql://") and not Path(location).is_file():
        raise InputError(f"{location}: the custody audit log is missing")
    log = TransparencyLog.open(location)
    try:
        export = log.export()
        tail = log.size() - len(export.entries)
    finally:
        log.close()
    return _evidence(
        export,
        log_key,
        str(data_dir),
        trusted_checkpoint=trusted_checkpoint,
        unproven_tail=max(tail, 0),
    )


def evidence_from_service(
    config: ClientConfig, log_key: VerifierKey | None = None, *, trusted_checkpoint: bytes | None
) -> Evidence:
    """Evidence from the service API (an auditor's or admin's token): a fresh signed export.

    Without ``log_key`` the service's own key is used; pass the key published elsewhere (or a
    checkpoint kept from before) so a service that rewrote its log cannot vouch for itself.
    """
    from weightvault.custody.client import VaultClient

    with VaultClient(config) as client:
        export = client.audit_export()
        if log_key is None:
            log_key = VerifierKey.from_text(str(client.audit_key()["log_key"]))
    return evidence_from_export(
        export, log_key, source=config.url, trusted_checkpoint=trusted_checkpoint
    )


def load_evidence(
    *,
    audit: Path | None = None,
    data_dir: Path | None = None,
    service: ClientConfig | None = None,
    log_key: VerifierKey | None = None,
    trusted_checkpoint: bytes | None = None,
) -> Evidence:
    """Evidence from exactly one of an export file, a data folder or the service."""
    given = [x for x in (audit, data_dir, service) if x is not None]
    if len(given) != 1:
        raise UsageError(
            "name exactly one source of the audit log: an export, a data folder or the service"
        )
    if audit is not None:
        if log_key is None:
            raise UsageError(
                "an exported audit log is checked against the log's public key; none given"
            )
        try:
            data = audit.read_bytes()
        except OSError as exc:
            raise InputError(f"{audit}: cannot read the audit export: {exc.strerror}") from exc
        return evidence_from_export(
            data, log_key, source=str(audit), trusted_checkpoint=trusted_checkpoint
        )
    if data_dir is not None:
        return evidence_from_data_folder(data_dir, log_key, trusted_checkpoint=trusted_checkpoint)
    assert service is not None
    return evidence_from_service(service, log_key, trusted_checkpoint=trusted_checkpoint)


def verify_line(entry: bytes, proof: LineProof, checkpoint: bytes, log_key: VerifierKey) -> None:
    """Check one report line on its own: the checkpoint's signature, then the entry's proof.

    Raises :class:`VerificationError` naming the line's log index.
    """
    verified = verify_checkpoint(checkpoint, log_key)
    if proof.tree_size != verified.checkpoint.size:
        raise VerificationError(
            f"log entry {proof.index}: proof is for tree size {proof.tree_size}, the checkpoint "
            f"has {verified.checkpoint.size}"
        )
    if leaf_hash(entry) != proof.leaf_hash:
        raise VerificationError(f"log entry {proof.index}: the entry does not match its leaf hash")
    try:
        verify_inclusion(
            proof.leaf_hash, proof.index, proof.tree_size, proof.hashes, verified.checkpoint.root
        )
    except VerificationError as exc:
        raise VerificationError(f"log entry {proof.index}: inclusion proof failed") from exc
