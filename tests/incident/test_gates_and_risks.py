"""Release-gate decisions and the risk register in what custody's records are reported as: the
incident timeline (every decision, allowed or refused, with the attestation digests it relied
on), the incident report (md, html, json, STIX 2.1; the register rebuilt from the verified log)
and the posture report (the register as the database holds it)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import stix2  # type: ignore[import-untyped]
from cryptography.hazmat.primitives.asymmetric import ec
from tests.custody.helpers import World, build_world, start_service
from tests.custody.test_gates import (
    Keys,
    attach,
    audit_statement,
    evaluation,
    new_model,
    release_policy,
    request_deploy,
    risk_assessment,
)

from weightvault.custody.client import VaultHTTPError
from weightvault.incident.evidence import evidence_from_export
from weightvault.incident.render import render_report
from weightvault.incident.report import build_report
from weightvault.incident.timeline import build_timeline, verify_timeline_document
from weightvault.tlog import VerifierKey

MODEL = "gated"


@dataclass
class Story:
    world: World
    digests: list[str]
    """The attestations attached: evaluation, risk assessment, audit statement."""
    risks: dict[str, dict[str, Any]]
    """The register as the service lists it, by id."""
    export: bytes
    key: VerifierKey


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    root = tmp_path_factory.mktemp("gates-risks")
    service = start_service(root / "data")
    try:
        world = build_world(root, service)
        keys = Keys(*(ec.generate_private_key(ec.SECP256R1()) for _ in range(4)))
        digest_root = new_model(world, MODEL, release_policy(keys))  # one refused check
        with pytest.raises(VaultHTTPError):
            request_deploy(world, MODEL)  # refused at request: nothing attested
        digests = attach(
            world,
            MODEL,
            evaluation(digest_root, keys.evals),
            risk_assessment(digest_root, keys.board),
            audit_statement(digest_root, keys.auditor),
        )
        request = request_deploy(world, MODEL)  # allowed at request ...
        world.approve("alice", request["id"])
        world.approve("bob", request["id"])  # ... and at activation
        with world.client("olivia") as olivia:
            kept = olivia.add_risk(
                MODEL,
                {
                    "hazard": "uplift for <b>biological</b> misuse",
                    "likelihood": "unlikely",
                    "severity": "severe",
                    "owner": "olivia",
                    "mitigations": ["deploy behind the API only"],
                    "evidence": [digests[0]],
                },
            )
            olivia.update_risk(MODEL, kept["id"], {"likelihood": "rare"})
            gone = olivia.add_risk(
                MODEL,
                {"hazard": "cyber uplift", "likelihood": "possible", "severity": "major",
                 "owner": "audrey"},
            )  # fmt: skip
            olivia.close_risk(MODEL, gone["id"], "removed by the safety fine-tune, re-evaluated")
            risks = {r["id"]: r for r in olivia.list_risks(MODEL)}
        with world.client("audrey") as audrey:
            export, key = audrey.audit_export(), audrey.audit_key()["log_key"]
        yield Story(world, digests, risks, export, VerifierKey.from_text(key))
    finally:
        service.stop()


def _events(story: Story) -> list[tuple[int, dict[str, Any]]]:
    entries = json.loads(story.export)["entries"]
    return [(i, json.loads(base64.b64decode(e))) for i, e in enumerate(entries)]


def test_every_gate_decision_is_in_the_timeline_with_its_digests(story: Story) -> None:
    logged = [
        (i, e)
        for i, e in _events(story)
        if e["action"] == "gate.decision" and e["detail"]["model"] == MODEL
    ]
    outcomes = [(e["detail"]["stage"], e["outcome"]) for _i, e in logged]
    assert outcomes == [
        ("check", "refused"),  # new_model's check
        ("request", "refused"),
        ("request", "allowed"),
        ("activation", "allowed"),
    ]
    evidence = evidence_from_export(story.export, story.key, source="export")
    timeline = build_timeline(evidence, MODEL)
    lines = {e.proof.index: e for e in timeline.events if e.entry.action == "gate.decision"}
    assert sorted(lines) == [i for i, _e in logged]  # every one, allowed or refused
    for index, entry in logged:
        line = lines[index]
        assert line.outcome == entry["outcome"] and line.version == "v1"
        assert entry["detail"]["root_digest"]
        if entry["outcome"] == "allowed":
            assert sorted(entry["detail"]["relied_on"]) == sorted(story.digests)
            assert all(d in line.summary for d in story.digests), line.summary
        else:
            assert entry["detail"]["relied_on"] == []
            assert "relied on nothing" in line.summary and "missing" in line.summary
    # The saved timeline verifies line by line with only the log key.
    document = json.dumps(timeline.to_json()).encode()
    assert verify_timeline_document(document, story.key).lines == len(timeline.events)


def test_the_incident_report_carries_the_decisions_and_the_register(story: Story) -> None:
    evidence = evidence_from_export(story.export, story.key, source="export")
    report = build_report(build_timeline(evidence, MODEL))
    assert [(g["stage"], g["outcome"]) for g in report["gate_decisions"]] == [
        ("check", "refused"),
        ("request", "refused"),
        ("request", "allowed"),
        ("activation", "allowed"),
    ]
    assert report["summary"]["gate_decisions"] == 4 and report["summary"]["open_risks"] == 1
    # The register rebuilt from the verified log is the one the service lists.
    rebuilt = {
        r["id"]: {k: v for k, v in r.items() if k != "proof"} for r in report["risk_register"]
    }
    assert rebuilt == story.risks
    closed = next(r for r in report["risk_register"] if r["status"] == "closed")
    assert closed["close_reason"].startswith("removed by the safety fine-tune")
    kept = next(r for r in report["risk_register"] if r["status"] == "open")
    assert kept["likelihood"] == "rare" and kept["evidence"] == [story.digests[0]]
    assert kept["proof"]["index"] == kept["log_index"]

    markdown = render_report(report, "md").decode()
    assert "## Risk register" in markdown and "## Release-gate decisions" in markdown
    assert f"| {story.digests[0]} | open |" in markdown
    assert "| closed: removed by the safety fine-tune, re-evaluated |" in markdown
    page = render_report(report, "html").decode()
    assert "uplift for &lt;b&gt;biological&lt;/b&gt; misuse" in page and "<b>biological" not in page
    assert json.loads(render_report(report, "json"))["risk_register"] == report["risk_register"]
    bundle = stix2.parse(render_report(report, "stix").decode())
    notes = {o.abstract: o for o in bundle.objects if o.type == "note"}
    assert "Risk register: cyber uplift" in notes
    assert story.digests[0] in notes["Risk register: uplift for <b>biological</b> misuse"].content
    decisions = notes["Release-gate decisions"].content.splitlines()
    assert len(decisions) == 4 and "refused" in decisions[0] and story.digests[1] in decisions[3]
    report_object = next(o for o in bundle.objects if o.type == "report")
    assert {n.id for n in notes.values()} <= set(report_object.object_refs)
    # The JSON report still verifies (timeline and actions taken) with only the log key.
    verify_timeline_document(render_report(report, "json"), story.key)


def test_a_redacted_report_names_nobody_in_the_register(story: Story) -> None:
    evidence = evidence_from_export(story.export, story.key, source="export")
    report = build_report(build_timeline(evidence, MODEL), redact=True)
    owners = {r["owner"] for r in report["risk_register"]}
    assert owners and all(re.fullmatch(r"principal-\d+", o) for o in owners), owners
    for fmt in ("md", "html", "json", "stix"):
        text = render_report(report, fmt).decode()
        for name in ("olivia", "audrey", "rita", "alice", "bob", MODEL + "@"):
            assert (
                re.search(rf"(?<![A-Za-z0-9+/=]){re.escape(name)}(?![A-Za-z0-9+/=])", text) is None
            ), (fmt, name)
        assert story.digests[0] in text  # evidence digests are kept


def test_the_posture_report_shows_each_models_gate_and_register(story: Story) -> None:
    from weightvault.custody.config import ServiceConfig
    from weightvault.posture import Deployment, assess

    report = assess(Deployment(ServiceConfig(data_dir=story.world.service.data_dir)))
    registers = {r["model"]: r for r in report.to_json()["risk_registers"]}
    assert registers[MODEL]["release_gate"] is True and registers["llama"]["release_gate"] is False
    assert {r["id"]: r for r in registers[MODEL]["risks"]} == story.risks
    markdown = report.to_markdown()
    assert f"### {MODEL}: release gate, 1 open of 2 risks" in markdown
    assert "uplift for &lt;b&gt;biological&lt;/b&gt; misuse" in markdown  # no raw HTML
    page = report.to_html()
    assert "uplift for &lt;b&gt;biological&lt;/b&gt; misuse" in page and "<b>biological" not in page
    assert "closed: removed by the safety fine-tune" in page
