"""A tamper-evident transparency log: RFC 9162 Merkle tree, C2SP checkpoints, witnesses, proofs.

Public nouns and verbs:

* :class:`TransparencyLog` — append (O(log n), durable), sign checkpoints (refusing any that is
  inconsistent with one signed before), produce inclusion / consistency proofs and ``tlog-proof``
  bundles, export / import; SQLite or PostgreSQL storage.
* :func:`verify_tlog_proof`, :func:`verify_export`, :func:`verify_checkpoint` — offline checks
  with only the log's public key (and, optionally, k-of-n witness keys).
* :func:`cosign_checkpoint` — what a witness does.
* :func:`find_leaves` — where given entries landed, from a known size on (by leaf hash), for a
  writer whose commit was in doubt.
* :func:`record_bundle` / :func:`verify_bundle_log_entry` — a Sigstore bundle's log entry.
"""

from __future__ import annotations

from weightvault.tlog.bundle import record_bundle, verify_bundle_log_entry
from weightvault.tlog.checkpoint import (
    Checkpoint,
    ProvenUnder,
    VerifiedCheckpoint,
    WitnessPolicy,
    verify_checkpoint,
)
from weightvault.tlog.committer import GroupCommitter
from weightvault.tlog.export import ExportVerification, LogExport, verify_export
from weightvault.tlog.log import TransparencyLog
from weightvault.tlog.lookup import find_leaves
from weightvault.tlog.merkle import (
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from weightvault.tlog.note import (
    Ed25519NoteSigner,
    Note,
    NoteSigner,
    VerifierKey,
    open_note,
    parse_note,
    sign_note,
)
from weightvault.tlog.proof import ConsistencyProof, LogEntryProof, TlogProof, verify_tlog_proof
from weightvault.tlog.witness import WitnessState, cosign_checkpoint

__all__ = [
    "Checkpoint",
    "ConsistencyProof",
    "Ed25519NoteSigner",
    "ExportVerification",
    "GroupCommitter",
    "LogEntryProof",
    "LogExport",
    "Note",
    "NoteSigner",
    "ProvenUnder",
    "TlogProof",
    "TransparencyLog",
    "VerifiedCheckpoint",
    "VerifierKey",
    "WitnessPolicy",
    "WitnessState",
    "cosign_checkpoint",
    "find_leaves",
    "leaf_hash",
    "node_hash",
    "open_note",
    "parse_note",
    "record_bundle",
    "sign_note",
    "verify_bundle_log_entry",
    "verify_checkpoint",
    "verify_consistency",
    "verify_export",
    "verify_inclusion",
    "verify_tlog_proof",
]
