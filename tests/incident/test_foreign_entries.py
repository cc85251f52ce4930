"""A correctly signed log that holds something other than custody audit events is refused, the
same way, by the offline audit verifier and by incident evidence (one parser serves both)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weightvault.custody.audit import AUDIT_FORMAT, VOID_ACTION, verify_audit
from weightvault.errors import VerificationError
from weightvault.incident.evidence import evidence_from_export
from weightvault.tlog import Ed25519NoteSigner, TransparencyLog, leaf_hash

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


def _void(target: int, leaf: bytes) -> bytes:
    from weightvault._json import canonical

    detail = {"index": target, "leaf_hash": leaf.hex(), "reason": "refused"}
    return canonical(
        {"format": AUDIT_FORMAT, "action": VOID_ACTION, "outcome": "voided", "detail": detail}
    )


def _readers_refuse(tmp_path: Path, entries: list[bytes], expected: str) -> None:
    export, signer = _export(tmp_path, entries)
    key = signer.verifier_key
    with pytest.raises(VerificationError, match=expected):
        verify_audit(export, key.to_text())
    evidence = evidence_from_export(export, key, source="export.json")
    with pytest.raises(VerificationError, match=expected):  # what a timeline reads
        _ = evidence.voided
        list(evidence.iter_entries())


def test_a_void_naming_an_entry_that_does_not_hold_its_leaf_hash_is_refused(
    tmp_path: Path,
) -> None:
    """Adversarial: a void could otherwise erase any entry (a pull that did happen) from the
    tally; it must name the index of the entry whose leaf hash it gives."""
    request, pull = _event("grant.request"), _event("pull")
    _readers_refuse(
        tmp_path,
        [request, pull, _void(1, leaf_hash(request))],
        "audit entry 2: voids entry 1, which does not hold that leaf hash",
    )


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (  # forward: a void can only cancel what came before it
            [_event("pull"), _void(2, leaf_hash(_event("x"))), _event("x")],
            "audit entry 1: a void entry must name an earlier entry and its leaf hash",
        ),
        (
            [
                _event("pull"),
                _void(0, leaf_hash(_event("pull"))),
                _void(0, leaf_hash(_event("pull"))),
            ],
            "audit entry 2: voids entry 0, a void or an entry voided already",
        ),
        (
            [
                _event("pull"),
                _void(0, leaf_hash(_event("pull"))),
                _void(1, leaf_hash(_void(0, leaf_hash(_event("pull"))))),
            ],
            "audit entry 2: voids entry 1, a void or an entry voided already",
        ),
        (  # not canonical: a byte search for voids would miss it
            [_event("pull"), _void(0, leaf_hash(_event("pull"))).replace(b'":"', b'": "')],
            "audit entry 1: a void entry must name an earlier entry and its leaf hash",
        ),
    ],
    ids=["forward", "twice", "a-void", "not-canonical"],
)
def test_a_malformed_void_is_refused_by_both_readers(
    tmp_path: Path, entries: list[bytes], expected: str
) -> None:
    _readers_refuse(tmp_path, entries, expected)


def test_a_void_takes_its_entry_out_of_the_tally(tmp_path: Path) -> None:
    pull = _event("pull")
    export, signer = _export(tmp_path, [_event("grant.request"), pull, _void(1, leaf_hash(pull))])
    verified = verify_audit(export, signer.verifier_key.to_text())
    assert verified.voided == 1
    assert verified.counts == {"grant.request": 1, VOID_ACTION: 1}
    evidence = evidence_from_export(export, signer.verifier_key, source="export.json")
    assert evidence.voided[1].index == 2
