"""The timeline of a real custody history: event by event, every proof, and tampering caught."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from tests.incident.conftest import History

from weightvault.errors import VerificationError
from weightvault.incident import (
    build_timeline,
    load_evidence,
    parse_since,
    read_log_key,
    verify_line,
    verify_timeline_document,
)
from weightvault.incident.evidence import LineProof
from weightvault.incident.timeline import Timeline


def _timeline(history: History) -> Timeline:
    evidence = load_evidence(audit=history.export, log_key=read_log_key(str(history.log_key)))
    return build_timeline(evidence, "llama")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weightvault", "incident", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_timeline_matches_the_history_event_by_event(history: History) -> None:
    timeline = _timeline(history)
    letters = {grant_id: letter for letter, grant_id in history.grants.items()}
    seen = [
        (e.kind, e.principal, e.version, letters.get(e.grant_id or ""))
        for e in timeline.events
        if e.kind != "alert"
    ]
    assert seen == history.steps
    for event in timeline.events:
        if event.kind != "alert":
            assert event.client == "127.0.0.1"


def test_pull_byte_counts_are_what_the_grantees_received(history: History) -> None:
    timeline = _timeline(history)
    for letter in ("A", "C"):
        grant_id = history.grants[letter]
        pulled = sum(
            e.nbytes or 0 for e in timeline.events if e.kind == "pull" and e.grant_id == grant_id
        )
        assert pulled == history.delivered[letter]
        assert timeline.grants[grant_id].bytes_pulled == pulled
    grant_a = timeline.grants[history.grants["A"]]
    assert grant_a.status == "revoked" and grant_a.revoked_by == "admin"
    assert grant_a.approvers == ("alice", "bob")
    assert timeline.grants[history.grants["B"]].status == "denied"
    assert timeline.grants[history.grants["D"]].bytes_pulled == 0


def test_incident_signals_are_in_the_timeline(history: History) -> None:
    alerts = {e.entry.action for e in _timeline(history).events if e.kind == "alert"}
    assert {
        "alert.principal.first_pull",
        "alert.egress.budget_fraction",
        "alert.pull.off_hours",
        "alert.approvals.same_pair",
        "alert.upload.signature_failed",
        "alert.scan.finding",
    } <= alerts


def test_every_line_carries_a_proof_that_verifies_on_its_own(history: History) -> None:
    timeline = _timeline(history)
    key = read_log_key(str(history.log_key))
    checkpoint = timeline.evidence.checkpoint.raw
    for event in timeline.events:
        verify_line(event.entry.raw, event.proof, checkpoint, key)
    document = json.dumps(timeline.to_json()).encode()
    result = verify_timeline_document(document, key)
    assert result.lines == len(timeline.events) > 20


def test_a_changed_proof_or_line_fails(history: History) -> None:
    timeline = _timeline(history)
    key = read_log_key(str(history.log_key))
    checkpoint = timeline.evidence.checkpoint.raw
    event = timeline.events[5]
    for position in range(len(event.proof.hashes)):
        for bit in (0, 7):
            hashes = list(event.proof.hashes)
            flipped = bytearray(hashes[position])
            flipped[bit] ^= 1
            hashes[position] = bytes(flipped)
            bad = LineProof(event.proof.index, event.proof.tree_size, event.proof.leaf_hash,
                            tuple(hashes))  # fmt: skip
            with pytest.raises(VerificationError, match=f"log entry {event.proof.index}"):
                verify_line(event.entry.raw, bad, checkpoint, key)
    wrong_index = LineProof(event.proof.index + 1, event.proof.tree_size, event.proof.leaf_hash,
                            event.proof.hashes)  # fmt: skip
    with pytest.raises(VerificationError):
        verify_line(event.entry.raw, wrong_index, checkpoint, key)
    document = timeline.to_json()
    document["events"][3]["principal"] = "mallory"
    with pytest.raises(VerificationError, match="principal"):
        verify_timeline_document(json.dumps(document).encode(), key)


def test_since_keeps_later_events_only(history: History) -> None:
    timeline = _timeline(history)
    evidence = timeline.evidence
    for event in (timeline.events[len(timeline.events) // 2], timeline.events[-1]):
        recent = build_timeline(evidence, "llama", parse_since(event.time))
        expected = [e.proof.index for e in timeline.events if e.time >= event.time]
        assert [e.proof.index for e in recent.events] == expected
        assert event.proof.index in expected
    assert build_timeline(evidence, "llama", parse_since("2999-01-01")).events == ()


def test_cli_timeline_text_and_json(history: History, tmp_path: Path) -> None:
    args = ["--model", "llama", "--audit", str(history.export), "--log-key", str(history.log_key)]
    result = _cli("timeline", *args)
    assert result.returncode == 0, result.stderr
    assert "proven by an inclusion proof" in result.stdout
    assert f"rita pulled model.safetensors of llama@v1 under grant {history.grants['A']}" in (
        result.stdout
    )
    saved = tmp_path / "timeline.json"
    assert _cli("timeline", *args, "-o", str(saved)).returncode == 0
    check = _cli("verify", str(saved), "--log-key", str(history.log_key))
    assert check.returncode == 0 and "timeline OK" in check.stdout


def _edited_export(history: History, tmp_path: Path, edit: str) -> Path:
    doc = json.loads(history.export.read_bytes())
    if edit == "change":
        event = json.loads(base64.b64decode(doc["entries"][20]))
        event["client"] = "10.0.0.66"
        doc["entries"][20] = base64.b64encode(json.dumps(event).encode()).decode()
    else:
        del doc["entries"][20]
    path = tmp_path / f"{edit}.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("edit", ["change", "delete"])
def test_an_edited_or_deleted_log_entry_fails_the_timeline(
    history: History, tmp_path: Path, edit: str
) -> None:
    export = _edited_export(history, tmp_path, edit)
    result = _cli("timeline", "--model", "llama", "--audit", str(export), "--log-key",
                  str(history.log_key))  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: exported log does not match its signed checkpoints")
    assert "entry 20" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_row_edited_in_the_data_folder_fails_the_timeline(
    history: History, tmp_path: Path
) -> None:
    copy = tmp_path / "data"
    subprocess.run(["cp", "-a", str(history.data_dir), str(copy)], check=True)
    args = ["--model", "llama", "--data", str(copy), "--log-key", str(history.log_key)]
    ok = _cli("timeline", *args)
    assert ok.returncode == 0, ok.stderr
    with sqlite3.connect(copy / "audit.tlog") as db:
        (raw,) = db.execute("SELECT data FROM tlog_entries WHERE idx = 21").fetchone()
        event = json.loads(raw)
        event["principal"] = "nobody"
        edited = json.dumps(event).encode()
        db.execute("UPDATE tlog_entries SET data = ? WHERE idx = 21", (edited,))
    bad = _cli("timeline", *args)
    assert bad.returncode == 1
    assert "entry 21" in bad.stderr and "Traceback" not in bad.stderr


def test_a_wrong_log_key_fails(history: History, tmp_path: Path) -> None:
    from weightvault.tlog import Ed25519NoteSigner

    other = Ed25519NoteSigner.generate("weightvault.custody/audit").verifier_key.to_text()
    result = _cli("timeline", "--model", "llama", "--audit", str(history.export), "--log-key",
                  other)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_a_mangled_saved_timeline_fails_cleanly(history: History) -> None:
    """Random one-character edits anywhere in a saved timeline: a one-line error of our own
    (never another exception), unless the edit hit wording the proofs do not cover."""
    import random

    from weightvault.errors import WeightvaultError

    timeline = _timeline(history)
    key = read_log_key(str(history.log_key))
    text = json.dumps(timeline.to_json())
    rng = random.Random(16)
    refused = 0
    for _ in range(300):
        position = rng.randrange(len(text))
        mangled = text[:position] + rng.choice('x0{}",:]A=') + text[position + 1 :]
        try:
            verify_timeline_document(mangled.encode(), key)
        except WeightvaultError:
            refused += 1
    assert refused > 150
