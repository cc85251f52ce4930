"""A correctly signed log that holds something other than custody audit events is refused, the
same way, by the offline audit verifier and by incident evidence (one parser serves both)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weightvault.custody.audit import AUDIT_FORMAT, verify_audit
from weightvault.errors import VerificationError
from weightvault.incident.evidence import evidence_from_export
from weightvault.tlog import Ed25519NoteSigner, TransparencyLog

ORIGIN = "weightvault.test/foreign-entries"


def _export(tmp_path: Path, entries: list[bytes]) -> tuple[bytes, Ed25519NoteSigner]:
    signer = Ed25519NoteSigner.generate(ORIGIN)
    log = TransparencyLog.create(str(tmp_path / "log.db"), ORIGIN)
    try:
        log.append_many(entries)
        log.sign_checkpoint(signer)
        return log.export().to_json(), signer
    finally:
        log.close()


def _event(action: str) -> bytes:
    return json.dumps({"format": AUDIT_FORMAT, "action": action, "outcome": "allowed"}).encode()


@pytest.mark.parametrize(
    "foreign",
    [
        b"not json at all",
        b"[1, 2, 3]",
        json.dumps({"format": "someone-else/audit@v1", "action": "pull"}).encode(),
        json.dumps({"action": "pull", "outcome": "allowed"}).encode(),
    ],
    ids=["not-json", "not-an-object", "other-format", "no-format"],
)
def test_a_foreign_entry_is_refused_by_both_readers(tmp_path: Path, foreign: bytes) -> None:
    export, signer = _export(tmp_path, [_event("grant.request"), foreign, _event("pull")])
    key = signer.verifier_key
    expected = "audit entry 1: not a custody audit event"
    with pytest.raises(VerificationError, match=expected):
        verify_audit(export, key.to_text())
    evidence = evidence_from_export(export, key, source="export.json")  # parsed on demand
    with pytest.raises(VerificationError, match=expected):
        list(evidence.iter_entries())
    with pytest.raises(VerificationError, match=expected):
        evidence.entry(1)
    assert evidence.entry(2).event["action"] == "pull"


def test_an_all_audit_log_is_read_by_both(tmp_path: Path) -> None:
    export, signer = _export(tmp_path, [_event("grant.request"), _event("pull")])
    key = signer.verifier_key
    verified = verify_audit(export, key.to_text())
    assert verified.size == 2 and verified.counts == {"grant.request": 1, "pull": 1}
    evidence = evidence_from_export(export, key, source="export.json")
    assert [e.event["action"] for e in evidence.iter_entries()] == ["grant.request", "pull"]
