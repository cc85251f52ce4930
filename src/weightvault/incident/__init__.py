"""Incident response over custody's records: timelines with proofs, shareable reports, and the
identification of suspect files found in the wild.

Public API::

    from weightvault.incident import load_evidence, build_timeline, build_report, check_files
    evidence = load_evidence(audit=Path("audit.json"), log_key=read_log_key("audit.pub"))
    timeline = build_timeline(evidence, "llama")          # each line with its inclusion proof
    verify_timeline_document(saved_json, log_key)          # a saved timeline, line by line
"""

from __future__ import annotations

from weightvault.incident.evidence import (
    AuditEntry,
    Evidence,
    LineProof,
    load_evidence,
    read_log_key,
    verify_line,
)
from weightvault.incident.timeline import (
    Timeline,
    TimelineEvent,
    build_timeline,
    parse_since,
    verify_timeline_document,
)

__all__ = [
    "AuditEntry",
    "Evidence",
    "LineProof",
    "Timeline",
    "TimelineEvent",
    "build_timeline",
    "load_evidence",
    "parse_since",
    "read_log_key",
    "verify_line",
    "verify_timeline_document",
]
