"""Leak attribution: keyed per-recipient marks in released weights, and tracing a leaked copy.

Every copy carries two marks derived from one custody secret and the recipient's id: a
function-preserving one (keyed permutations and rescalings of hidden units and attention heads:
the copy computes the same function) and a robust one (a keyed spread-spectrum perturbation of
a few percent of each tensor's spread, found by correlation). :func:`trace_copy` names the
recipient whose pattern a suspect carries, with a p-value corrected for the number of
candidates, or nobody. See ``docs/fingerprints.md``.
"""

from __future__ import annotations

from weightvault.fingerprint._io import ModelReader, StateReader
from weightvault.fingerprint.issue import IssuedCopy, Marker, MarkOptions, issue_copy, mark_state
from weightvault.fingerprint.keys import (
    FingerprintKey,
    create_fingerprint_key,
    load_fingerprint_key,
)
from weightvault.fingerprint.structure import MarkPlan, TensorInfo, plan_marks
from weightvault.fingerprint.trace import (
    DEFAULT_ALPHA,
    Attribution,
    TraceResult,
    align_state,
    score_recipients,
    trace_copy,
    trace_state,
)

__all__ = [
    "DEFAULT_ALPHA",
    "Attribution",
    "FingerprintKey",
    "IssuedCopy",
    "MarkOptions",
    "MarkPlan",
    "Marker",
    "ModelReader",
    "StateReader",
    "TensorInfo",
    "TraceResult",
    "align_state",
    "create_fingerprint_key",
    "issue_copy",
    "load_fingerprint_key",
    "mark_state",
    "plan_marks",
    "score_recipients",
    "trace_copy",
    "trace_state",
]
