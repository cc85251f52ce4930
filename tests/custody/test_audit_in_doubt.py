"""An audit append whose commit is in doubt: the request was refused (503), so if the entry
landed after all it is voided once the log can be written again, exactly once; if it did not
land, nothing is written. Real SQLite log and trail; the fault sits at the COMMIT itself
(:mod:`tests.custody.in_doubt` says why a real PostgreSQL crash cannot be timed that way)."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

import pytest
from tests.custody.in_doubt import CommitFaults, log_of

from weightvault.custody.audit import (
    VOID_ACTION,
    AuditTrail,
    AuditUnavailable,
    parse_audit_event,
    verify_audit,
)
from weightvault.tlog import Ed25519NoteSigner, LogExport, leaf_hash

ORIGIN = "weightvault.custody/audit"


def _trail(tmp_path: Path, **options: Any) -> tuple[AuditTrail, CommitFaults, Ed25519NoteSigner]:
    signer = Ed25519NoteSigner.generate(ORIGIN)
    trail = AuditTrail(
        str(tmp_path / "audit.tlog"),
        ORIGIN,
        signer,
        b"k" * 32,
        checkpoint_interval_s=1e9,  # checkpoints only when a test asks
        **options,
    )
    return trail, CommitFaults(trail), signer


def _event(action: str, outcome: str = "allowed") -> dict[str, Any]:
    return {
        "action": action,
        "outcome": outcome,
        "principal": "rita",
        "request_id": secrets.token_hex(16),
        "time": "2026-12-07T03:00:00Z",
        "detail": {"grant_id": "a" * 32, "range": [0, 100], "file": "model.safetensors"},
    }


def _entries(trail: AuditTrail) -> list[bytes]:
    log = log_of(trail)
    return [log.entry(i) for i in range(log.size())]


def _voids(trail: AuditTrail) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, _entries(trail)) if e["action"] == VOID_ACTION]


def test_an_entry_committed_before_its_failure_is_voided_by_the_next_append(
    tmp_path: Path,
) -> None:
    trail, faults, signer = _trail(tmp_path)
    trail.append(_event("request.create"))
    faults.plan = ["after"]
    pull = _event("pull")
    with pytest.raises(AuditUnavailable):
        trail.append(pull)
    assert log_of(trail).size() == 2, "the pull's entry is durable although its append failed"
    assert trail.in_doubt == 1

    index, _entry = trail.append(_event("whoami"))  # the log is writable again
    assert index == 2 and trail.in_doubt == 0
    entries = _entries(trail)
    assert len(entries) == 4
    void = json.loads(entries[3])
    assert void["action"] == VOID_ACTION and void["outcome"] == "voided"
    assert void["request_id"] == pull["request_id"]  # pairs it with the refused request
    assert void["detail"]["index"] == 1
    assert void["detail"]["leaf_hash"] == leaf_hash(entries[1]).hex()
    assert "answered 503" in void["detail"]["reason"]

    checked = verify_audit(trail.export(), signer.verifier_key.to_text())
    assert checked.voided == 1
    assert "pull" not in checked.counts, "a voided pull is not counted"
    assert checked.counts == {"request.create": 1, "whoami": 1, VOID_ACTION: 1}
    trail.close()


def test_an_entry_that_never_landed_gets_no_void(tmp_path: Path) -> None:
    trail, faults, signer = _trail(tmp_path)
    trail.append(_event("request.create"))
    faults.plan = ["before"]
    with pytest.raises(AuditUnavailable):
        trail.append(_event("pull"))
    assert log_of(trail).size() == 1 and trail.in_doubt == 1
    trail.append(_event("whoami"))
    assert trail.in_doubt == 0, "looked up, not there: forgotten"
    assert _voids(trail) == []
    assert verify_audit(trail.export(), signer.verifier_key.to_text()).voided == 0
    trail.close()


def test_settling_twice_voids_once_even_when_the_void_itself_was_in_doubt(
    tmp_path: Path,
) -> None:
    """Replay: the void's own commit lands and then fails; the entry stays in doubt, and the
    next try finds the same void bytes already in the log instead of writing a second."""
    trail, faults, signer = _trail(tmp_path)
    faults.plan = ["after", "ok", "after"]  # the pull, the next append, the void
    with pytest.raises(AuditUnavailable):
        trail.append(_event("pull"))
    trail.append(_event("whoami"))
    assert trail.in_doubt == 1, "the void's commit failed: still in doubt"
    assert len(_voids(trail)) == 1, "...though the void landed"
    trail.append(_event("whoami"))
    assert trail.in_doubt == 0
    assert trail.settle_in_doubt() == []
    assert len(_voids(trail)) == 1, "voided once"
    assert verify_audit(trail.export(), signer.verifier_key.to_text()).voided == 1
    trail.close()


def test_a_checkpoint_settles_and_covers_the_void(tmp_path: Path) -> None:
    trail, faults, signer = _trail(tmp_path)
    faults.plan = ["after"]
    with pytest.raises(AuditUnavailable):
        trail.append(_event("pull"))
    trail.checkpoint()  # signs, settles, signs again over the void
    assert trail.in_doubt == 0 and len(_voids(trail)) == 1
    export = LogExport.from_json(log_of(trail).export().to_json())
    assert len(export.entries) == 2, "the latest checkpoint covers the void"
    assert verify_audit(export.to_json(), signer.verifier_key.to_text()).voided == 1
    trail.close()


def test_an_entry_that_stands_anyway_is_not_voided(tmp_path: Path) -> None:
    """``void_in_doubt=False``: a stream that stopped did stop, whether or not its entry's
    commit is in doubt."""
    trail, faults, _signer = _trail(tmp_path)
    faults.plan = ["after"]
    with pytest.raises(AuditUnavailable):
        trail.append(_event("pull.incomplete", "stopped"), void_in_doubt=False)
    assert trail.in_doubt == 0
    trail.append(_event("whoami"))
    assert _voids(trail) == []
    trail.close()


def test_entries_in_doubt_are_bounded_and_an_overflow_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trail, faults, _signer = _trail(tmp_path, max_in_doubt=2)
    faults.plan = ["after", "before", "after"]
    with caplog.at_level(logging.ERROR, logger="weightvault.custody"):
        for event in (_event("pull"), _event("pull"), _event("pull")):
            with pytest.raises(AuditUnavailable):
                trail.append(event)
    assert trail.in_doubt == 2
    forgotten = leaf_hash(_entries(trail)[0])  # the oldest, committed: forgotten, so never voided
    assert forgotten.hex() in caplog.text and "forgot the oldest" in caplog.text
    trail.append(_event("whoami"))
    voids = _voids(trail)
    assert [v["detail"]["index"] for v in voids] == [1], "only the third (landed) one"
    trail.close()


def test_the_void_shown_in_the_docs_is_one_the_trail_writes(tmp_path: Path) -> None:
    doc = (Path(__file__).parents[2] / "docs" / "custody.md").read_text(encoding="utf-8")
    shown = next(
        line.encode() for line in doc.splitlines() if line.startswith('{"action":"audit.void"')
    )
    example = parse_audit_event(6000, shown)  # canonical and well formed
    trail, faults, _signer = _trail(tmp_path)
    faults.plan = ["after"]
    with pytest.raises(AuditUnavailable):
        trail.append(_event("pull"))
    trail.append(_event("whoami"))
    (real,) = _voids(trail)
    assert example.keys() == real.keys() and example["detail"].keys() == real["detail"].keys()
    assert example["detail"]["reason"] == real["detail"]["reason"]
    trail.close()
