"""Incident reports: contents, STIX 2.1 that parses back, HTML that renders in Chromium,
redaction that hides names and keeps digests, and outputs that appear whole or not at all."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import stix2
from tests.incident.conftest import History

from weightvault.incident import build_timeline, load_evidence, read_log_key, verify_line
from weightvault.incident.evidence import LineProof
from weightvault.incident.render import render_report
from weightvault.incident.report import build_report

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NAMES = ("rita", "ravi", "alice", "bob", "carol", "olivia", "llama", "127.0.0.1", "release-key")


def _report(history: History, *, redact: bool = False) -> dict[str, Any]:
    evidence = load_evidence(audit=history.export, log_key=read_log_key(str(history.log_key)))
    return build_report(build_timeline(evidence, "llama"), redact=redact)


def _source(history: History) -> list[str]:
    return ["--model", "llama", "--audit", str(history.export), "--log-key", str(history.log_key)]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weightvault", "incident", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_names_versions_indicators_and_actions(history: History) -> None:
    doc = _report(history)
    versions = {v["version"]: v for v in doc["versions"]}
    assert set(versions) == {"v1", "v3", "v5"}
    v1 = versions["v1"]
    assert v1["root_digest"].startswith("sha256:") and len(v1["root_digest"]) == 71
    assert set(v1["pulled_under"]) == {history.grants["A"], history.grants["C"]}
    assert versions["v3"]["pulled_under"] == []
    released = {i["value"] for i in doc["indicators"] if "released" in i["why"]}
    assert {f["sha256"] for f in v1["files"]} | {v1["root_digest"]} == released
    refused = {u["version"]: u for u in doc["refused_uploads"]}
    assert set(refused) == {"v2", "v4"}
    tampered = {f["path"]: f["sha256"] for f in refused["v2"]["files"]}
    import hashlib

    changed = (history.root / "llama-v2" / "config.json").read_bytes()
    assert tampered["config.json"] == hashlib.sha256(changed).hexdigest()
    assert any(i["value"] == tampered["config.json"] for i in doc["indicators"])
    assert [(a["kind"], a["by"]) for a in doc["actions_taken"]] == [
        ("revocation", "admin"),
        ("token revocation", "admin"),
        ("key rotation", "admin"),
        ("principal disabled", "admin"),
    ]
    checkpoint = doc["timeline"]["checkpoint"].encode()
    key = read_log_key(str(history.log_key))
    for action in doc["actions_taken"]:  # each action is proven like a timeline line
        proof = LineProof.from_json(action["proof"], "proof")
        verify_line(base64.b64decode(action["entry"]), proof, checkpoint, key)
    rotation = doc["actions_taken"][2]["summary"]
    assert rotation.startswith("admin replaced the approval key of alice (now ")
    assert {"upload.signature_failed", "scan.finding", "approvals.same_pair"} <= {
        s["signal"] for s in doc["incident_signals"]
    }
    assert len(doc["approval_keys"]) == 3  # alice and bob (approvals), carol (the denial)
    assert {s["signer"] for s in doc["signing_identities"]} == {"key:release-key"}
    assert doc["summary"]["bytes_released"] == sum(history.delivered.values())


def test_stix_bundle_parses_back_with_the_stix2_library(history: History) -> None:
    for redact in (False, True):
        bundle = stix2.parse(render_report(_report(history, redact=redact), "stix").decode())
        kinds = {o.type for o in bundle.objects}
        assert {"identity", "incident", "indicator", "file", "report", "note"} <= kinds
        assert ("user-account" in kinds) is not redact
        patterns = {o.pattern for o in bundle.objects if o.type == "indicator"}
        v1 = next(v for v in _report(history)["versions"] if v["version"] == "v1")
        for f in v1["files"]:
            assert f"[file:hashes.'SHA-256' = '{f['sha256']}']" in patterns
        report = next(o for o in bundle.objects if o.type == "report")
        ids = {o.id for o in bundle.objects}
        assert set(report.object_refs) <= ids and len(report.object_refs) == len(ids) - 1


def test_redaction_drops_names_and_addresses_and_keeps_digests(history: History) -> None:
    full = _report(history)
    redacted = _report(history, redact=True)
    digests = {i["value"] for i in full["indicators"]}
    assert digests == {i["value"] for i in redacted["indicators"]}
    for fmt in ("md", "html", "json", "stix"):
        text = render_report(redacted, fmt).decode()
        for name in NAMES:  # as a word: base64 proof hashes may hold any short string
            found = re.search(rf"(?<![A-Za-z0-9+/=]){re.escape(name)}(?![A-Za-z0-9+/=])", text)
            assert found is None, (fmt, name, text[max(0, found.start() - 80) : found.end() + 80])
        assert "incident test for" not in text  # justifications
        assert "/tmp" not in text and str(history.root) not in text
        for digest in digests:
            assert digest in text
    unredacted = render_report(full, "md").decode()
    assert "rita" in unredacted and "127.0.0.1" in unredacted


def test_html_report_renders_in_chromium_without_errors(history: History, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    assert CHROMIUM.exists(), "Debian chromium is part of the test environment"
    page_file = tmp_path / "report.html"
    page_file.write_bytes(render_report(_report(history), "html"))
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: problems.append(f"fetched {r.url}")
                    if not r.url.startswith("file:") else None)  # fmt: skip
            page.goto(page_file.as_uri())
            assert page.title() == "Incident report: llama"
            assert page.locator("table").count() >= 10
            assert page.locator("svg rect").count() >= 5
            rows = page.locator("tr.pull").count()
            assert rows == 4
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            if os.environ.get("WEIGHTVAULT_DOCS_SCREENSHOT"):
                page.screenshot(path=str(REPO / "docs/images/incident-report.png"), full_page=False)
        finally:
            browser.close()
    assert problems == []
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_cli_report_formats_and_refusals(history: History, tmp_path: Path) -> None:
    for fmt in ("md", "html", "json", "stix"):
        out = tmp_path / f"report.{fmt}"
        result = _cli("report", *_source(history), "--format", fmt, "-o", str(out))
        assert result.returncode == 0, result.stderr
        assert out.stat().st_size > 1000
    again = _cli("report", *_source(history), "--format", "md", "-o", str(tmp_path / "report.md"))
    assert again.returncode == 2 and "exists" in again.stderr
    bad = _cli("report", *_source(history), "--format", "pdf", "-o", str(tmp_path / "x.pdf"))
    assert bad.returncode == 2 and not (tmp_path / "x.pdf").exists()
    saved = json.loads((tmp_path / "report.json").read_text())
    check = _cli("verify", str(tmp_path / "report.json"), "--log-key", str(history.log_key))
    assert check.returncode == 0, check.stderr
    lines = len(saved["timeline"]["events"]) + len(saved["actions_taken"])
    assert f"timeline OK: {lines} lines about llama" in check.stdout
    saved["actions_taken"][0]["by"] = "olivia"  # someone else takes the credit
    (tmp_path / "edited.json").write_text(json.dumps(saved))
    edited = _cli("verify", str(tmp_path / "edited.json"), "--log-key", str(history.log_key))
    assert edited.returncode == 1 and "author was changed" in edited.stderr


def test_report_on_an_edited_log_writes_nothing(history: History, tmp_path: Path) -> None:
    doc = json.loads(history.export.read_bytes())
    doc["entries"][7], doc["entries"][8] = doc["entries"][8], doc["entries"][7]
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(doc))
    out = tmp_path / "report.html"
    result = _cli("report", "--model", "llama", "--audit", str(edited), "--log-key",
                  str(history.log_key), "--format", "html", "-o", str(out))  # fmt: skip
    assert result.returncode == 1 and "entry 7" in result.stderr
    assert list(tmp_path.iterdir()) == [edited]


def test_an_interrupted_report_leaves_a_whole_file_or_none(
    history: History, tmp_path: Path
) -> None:
    outcomes = set()
    for attempt, delay in enumerate((0.3, 0.6, 0.9, 1.2, 1.5, 3.0)):
        out = tmp_path / f"r{attempt}.html"
        process = subprocess.Popen(
            [sys.executable, "-m", "weightvault", "incident", "report", *_source(history),
             "--format", "html", "-o", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _stdout, stderr = process.communicate(timeout=60)
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
        assert leftovers == []
        assert b"Traceback" not in stderr
        if process.returncode == 0:
            assert out.read_bytes().rstrip().endswith(b"</html>")
            outcomes.add("whole")
        else:
            assert process.returncode == 130, stderr
            assert not out.exists()
            outcomes.add("none")
    assert "none" in outcomes  # at least one interrupt landed before the write
