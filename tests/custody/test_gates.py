"""Release gates through the real service: a deploy grant needs every attestation its model's
release policy names, valid, unexpired, about this version and signed by a listed identity;
each defect is refused and named, and every decision is in the transparency log."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tests.custody.helpers import World, make_model, public_pem, sign_model

from weightvault.attest import Subject, make_statement, sign_attestation
from weightvault.custody.client import VaultHTTPError
from weightvault.custody.gates_policy import AUDIT_STATEMENT, RISK_ASSESSMENT
from weightvault.signing import KeySigner

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Keys:
    evals: ec.EllipticCurvePrivateKey
    board: ec.EllipticCurvePrivateKey
    auditor: ec.EllipticCurvePrivateKey
    stranger: ec.EllipticCurvePrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(*(ec.generate_private_key(ec.SECP256R1()) for _ in range(4)))


def release_policy(keys: Keys, *, external: bool = True) -> dict[str, Any]:
    return {
        "evaluations": [
            {
                "name": "bio-uplift",
                "suite": "bio-uplift-v2",
                "thresholds": {"uplift": {"max": 0.2}},
                "signers": ["custody", {"name": "evals", "public_key_pem": public_pem(keys.evals)}],
                "external_allowed": external,
                "max_age_s": 30 * 86400,
            }
        ],
        "risk_assessment": {
            "signers": [{"name": "safety-board", "public_key_pem": public_pem(keys.board)}],
            "max_age_s": 90 * 86400,
        },
        "auditor": {
            "signers": [{"name": "acme-audit", "public_key_pem": public_pem(keys.auditor)}]
        },
    }


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


NOW = dt.datetime.now(dt.UTC)


def evaluation(root: str, key: Any, *, uplift: float = 0.05, age_days: float = 1) -> bytes:
    subject = Subject("model", bytes.fromhex(root.removeprefix("sha256:")))
    statement = make_statement(
        subject,
        "eval-results",
        {
            "suite": "bio-uplift-v2",
            "metrics": {"uplift": uplift},
            "evaluator": "evals@example.com",
            "evaluatedOn": _time(NOW - dt.timedelta(days=age_days)),
        },
    )
    return sign_attestation(statement, KeySigner(key))


def risk_assessment(root: str, key: Any, *, expires: dt.datetime | None = None) -> bytes:
    subject = Subject("model", bytes.fromhex(root.removeprefix("sha256:")))
    statement = make_statement(
        subject,
        RISK_ASSESSMENT,
        {
            "summary": "bio misuse: low uplift after fine-tuning; cyber: none found",
            "assessor": "safety-board@example.com",
            "assessedOn": _time(NOW - dt.timedelta(days=2)),
            "expires": _time(expires or NOW + dt.timedelta(days=60)),
        },
    )
    return sign_attestation(statement, KeySigner(key))


def audit_statement(root: str, key: Any, *, conclusion: str = "no-objection") -> bytes:
    subject = Subject("model", bytes.fromhex(root.removeprefix("sha256:")))
    statement = make_statement(
        subject,
        AUDIT_STATEMENT,
        {
            "summary": "third-party pre-deployment audit",
            "auditor": "acme-audit",
            "auditedOn": _time(NOW - dt.timedelta(days=1)),
            "conclusion": conclusion,
        },
    )
    return sign_attestation(statement, KeySigner(key))


def altered(bundle: bytes) -> bytes:
    """The same bundle with one metric changed inside the signed statement."""
    doc = json.loads(bundle)
    envelope = doc["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["metrics"]["uplift"] = 0.01
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps(doc).encode()


def new_model(world: World, name: str, policy_release: dict[str, Any]) -> str:
    """A model with one signed version v1 under ``policy_release``; returns v1's root digest."""
    policy = {
        "approvers": ["alice", "bob", "carol"],
        "approvals_required": 2,
        "signers": [{"name": "release-key", "public_key_pem": public_pem(world.signing_key)}],
        "approval_validity_s": 7200,
        "release": policy_release,
    }
    folder = make_model(world.root / name, seed=len(name))
    assert world.signing_key is not None
    signature = sign_model(folder, world.signing_key)
    with world.client("olivia") as olivia:
        olivia.create_model(name, policy)
        olivia.push(name, "v1", folder, signature.read_bytes())
        return str(olivia.gate_check(name, "v1", "deploy")["root_digest"])


def attach(world: World, model: str, *bundles: bytes, version: str = "v1") -> list[str]:
    with world.client("olivia") as olivia:
        return [olivia.attach_attestation(model, version, b)["digest"] for b in bundles]


def request_deploy(world: World, model: str) -> dict[str, Any]:
    with world.client("rita") as rita:
        result: dict[str, Any] = rita.request(
            model, "v1", "deploy to the production endpoint", 3600, 1 << 30, "deploy"
        )
        return result


def gate_entries(world: World, model: str) -> list[dict[str, Any]]:
    with world.client("audrey") as audrey:
        export = audrey.audit_export()
    events = [json.loads(base64.b64decode(e)) for e in json.loads(export)["entries"]]
    return [
        e for e in events if e["action"] == "gate.decision" and e["detail"].get("model") == model
    ]


def test_a_version_with_every_attestation_is_granted_for_deploy(world: World, keys: Keys) -> None:
    root = new_model(world, "gated-ok", release_policy(keys))
    digests = attach(
        world,
        "gated-ok",
        evaluation(root, keys.evals),
        risk_assessment(root, keys.board),
        audit_statement(root, keys.auditor),
    )
    request = request_deploy(world, "gated-ok")
    assert request["purpose"] == "deploy" and request["status"] == "pending"
    # Approvers see the assessment summary and the evaluation results beside the request.
    gate = request["gate"]
    assert gate["allowed"] and sorted(gate["relied_on"]) == sorted(digests)
    by_requirement = {f["requirement"]: f for f in gate["findings"]}
    assert by_requirement["evaluation 'bio-uplift' (suite bio-uplift-v2)"]["metrics"] == {
        "uplift": 0.05
    }
    assert "low uplift" in by_requirement["risk-assessment"]["summary"]
    world.approve("alice", request["id"])
    assert world.approve("bob", request["id"])["status"] == "active"
    entries = gate_entries(world, "gated-ok")
    stages = [(e["detail"]["stage"], e["outcome"]) for e in entries]
    assert stages[-2:] == [("request", "allowed"), ("activation", "allowed")]
    assert sorted(entries[-1]["detail"]["relied_on"]) == sorted(digests)
    assert entries[-1]["detail"]["root_digest"] == root
    # A plain pull is not gated; the same request as a pull never consults the gate.
    with world.client("rita") as rita:
        pull = rita.request("gated-ok", "v1", "pull for offline analysis", 3600, 1 << 20)
    assert pull["purpose"] == "pull" and "gate" not in pull
    # The incident timeline of the model shows the decisions, each with its proof.
    from weightvault.incident.evidence import evidence_from_export
    from weightvault.incident.timeline import build_timeline
    from weightvault.tlog import VerifierKey

    with world.client("audrey") as audrey:
        export, key = audrey.audit_export(), audrey.audit_key()["log_key"]
    timeline = build_timeline(
        evidence_from_export(export, VerifierKey.from_text(key), source="export"), "gated-ok"
    )
    decisions = [e for e in timeline.events if e.entry.action == "gate.decision"]
    assert [e.outcome for e in decisions][-2:] == ["allowed", "allowed"]


def _defects(keys: Keys) -> dict[str, Callable[[str, str], list[bytes]]]:
    """Each case: the attestations offered for a version (root) and another version (other)."""

    def full(root: str, *, ev: bytes | None = None, ra: bytes | None = None) -> list[bytes]:
        return [
            ev if ev is not None else evaluation(root, keys.evals),
            ra if ra is not None else risk_assessment(root, keys.board),
            audit_statement(root, keys.auditor),
        ]

    return {
        "missing": lambda root, other: full(root)[1:],
        "bad-signature": lambda root, other: full(root, ev=altered(evaluation(root, keys.evals))),
        "expired": lambda root, other: full(root, ev=evaluation(root, keys.evals, age_days=45)),
        "unlisted-signer": lambda root, other: full(root, ra=risk_assessment(root, keys.stranger)),
        "wrong-subject": lambda root, other: full(root, ev=evaluation(other, keys.evals)),
        "failed-thresholds": lambda root, other: full(
            root, ev=evaluation(root, keys.evals, uplift=0.5)
        ),
    }


WHO = {
    "missing": "evaluation 'bio-uplift'",
    "bad-signature": "evaluation 'bio-uplift'",
    "expired": "evaluation 'bio-uplift'",
    "unlisted-signer": "risk-assessment",
    "wrong-subject": "evaluation 'bio-uplift'",
    "failed-thresholds": "evaluation 'bio-uplift'",
}


def test_each_defect_makes_the_gate_refuse_and_name_it(world: World, keys: Keys) -> None:
    other = new_model(world, "gated-other", release_policy(keys))
    for case, offered in _defects(keys).items():
        model = f"gated-{case}"
        root = new_model(world, model, release_policy(keys))
        attach(world, model, *offered(root, other))
        with pytest.raises(VaultHTTPError) as refused:
            request_deploy(world, model)
        assert refused.value.status == 403, case
        lines = re.split(r"\(log entry \d+\): ", refused.value.message)[1].split(" | ")
        assert len(lines) == 1, (case, lines)
        assert lines[0].startswith(WHO[case]) and f": {case}:" in lines[0], (case, lines)
        with world.client("rita") as rita:
            assert all(r["model"] != model for r in rita.list_requests())
        refusals = [e for e in gate_entries(world, model) if e["outcome"] == "refused"]
        assert refusals and refusals[-1]["detail"]["stage"] == "request", case
        assert f": {case}:" in refusals[-1]["detail"]["refusals"][0]
    if case == "failed-thresholds":
        assert "uplift 0.5 > max 0.2" in refused.value.message


def test_an_expired_attestation_stops_counting_before_activation(world: World, keys: Keys) -> None:
    """The gate runs again when the last approval arrives: what expired meanwhile refuses it."""
    root = new_model(world, "gated-late", release_policy(keys))
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=4)
    attach(
        world,
        "gated-late",
        evaluation(root, keys.evals),
        risk_assessment(root, keys.board, expires=expires),
        audit_statement(root, keys.auditor),
    )
    request = request_deploy(world, "gated-late")
    world.approve("alice", request["id"])
    time.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds() + 0.5))
    with pytest.raises(VaultHTTPError) as refused:
        world.approve("bob", request["id"])
    assert "risk-assessment: expired:" in refused.value.message
    with world.client("rita") as rita:
        assert rita.get_request(request["id"])["status"] == "pending"
    last = gate_entries(world, "gated-late")[-1]
    assert (last["detail"]["stage"], last["outcome"]) == ("activation", "refused")


def test_external_evaluations_count_only_when_allowed_and_listed(world: World, keys: Keys) -> None:
    root = new_model(world, "gated-internal", release_policy(keys, external=False))
    attach(
        world,
        "gated-internal",
        evaluation(root, keys.evals),
        risk_assessment(root, keys.board),
        audit_statement(root, keys.auditor),
    )
    with world.client("rita") as rita:
        check = rita.gate_check("gated-internal", "v1", "deploy")
    assert not check["allowed"]
    failing = [f for f in check["findings"] if not f["ok"]]
    assert [f["failure"] for f in failing] == ["external-not-allowed"]
    # A policy that allows no external evaluator must name custody among the signers.
    with world.client("olivia") as olivia, pytest.raises(VaultHTTPError) as bad:
        policy = release_policy(keys, external=False)
        policy["evaluations"][0]["signers"] = policy["evaluations"][0]["signers"][1:]
        olivia.create_model("gated-nobody", {"approvers": ["alice", "bob"], "release": policy})
    assert "only 'custody' can sign" in bad.value.message


def test_an_auditor_objection_and_a_model_without_release_policy_refuse(
    world: World, keys: Keys
) -> None:
    root = new_model(world, "gated-objection", release_policy(keys))
    attach(
        world,
        "gated-objection",
        evaluation(root, keys.evals),
        risk_assessment(root, keys.board),
        audit_statement(root, keys.auditor, conclusion="objection"),
    )
    with pytest.raises(VaultHTTPError) as refused:
        request_deploy(world, "gated-objection")
    assert "audit-statement: objection:" in refused.value.message
    with world.client("rita") as rita, pytest.raises(VaultHTTPError) as ungated:
        rita.request("llama", "v1", "deploy without any policy", 3600, 1 << 20, "release")
    assert "no release section" in ungated.value.message


def test_gate_check_cli_exit_codes_and_json(world: World, keys: Keys) -> None:
    env = {
        **os.environ,
        "WEIGHTVAULT_URL": world.service.url,
        "WEIGHTVAULT_TOKEN": world.people["rita"].token,
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "weightvault", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    # Its own models: the test must not depend on others having run (pytest -n 2).
    root = new_model(world, "gated-cli-ok", release_policy(keys))
    attach(
        world,
        "gated-cli-ok",
        evaluation(root, keys.evals),
        risk_assessment(root, keys.board),
        audit_statement(root, keys.auditor),
    )
    root = new_model(world, "gated-cli-missing", release_policy(keys))
    attach(world, "gated-cli-missing", risk_assessment(root, keys.board))
    allowed = cli("gate", "check", "gated-cli-ok@v1", "--purpose", "deploy")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.startswith("allowed: deploy of gated-cli-ok@v1")
    as_json = cli("gate", "check", "gated-cli-ok@v1", "--purpose", "deploy", "--json")
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["allowed"] is True and doc["purpose"] == "deploy" and len(doc["relied_on"]) == 3
    refused = cli("gate", "check", "gated-cli-missing@v1", "--purpose", "release", "--json")
    assert refused.returncode == 1, refused.stderr
    doc = json.loads(refused.stdout)
    assert doc["allowed"] is False and doc["purpose"] == "release"
    assert [f["failure"] for f in doc["findings"] if not f["ok"]] == ["missing", "missing"]
    assert isinstance(doc["log_index"], int)
    bad = cli("gate", "check", "gated-cli-ok", "--purpose", "deploy")
    assert bad.returncode == 2 and "expected MODEL@VERSION" in bad.stderr
    wrong = cli("gate", "check", "gated-cli-ok@v1", "--purpose", "pull")
    assert wrong.returncode == 2 and "--purpose: expected deploy or release" in wrong.stderr
    assert "Traceback" not in bad.stderr + wrong.stderr


def test_break_glass_override_is_one_time_and_logged_as_such(
    world: World, keys: Keys, tmp_path: Path
) -> None:
    """The only way past a refusing gate: k shares of the service KEK, by an admin, once."""
    from weightvault.crypt.recipients.keyring import create_keyring
    from weightvault.custody.breakglass_files import split_keyring

    new_model(world, "gated-glass", release_policy(keys))  # nothing attested
    kek = world.service.data_dir / "service-kek.keyring"
    shares_dir = tmp_path / "shares"
    paths = split_keyring(kek, 2, 3, shares_dir)
    texts = [
        next(line for line in p.read_text().splitlines() if line.startswith("wvshare1:"))
        for p in paths
    ]
    reason = "incident INC-7: hotfix must ship before the audit completes"
    with world.client("admin") as admin:
        # Too few shares, or shares of another key, rebuild nothing this service accepts.
        with pytest.raises(VaultHTTPError) as few:
            admin.gate_override("gated-glass", "v1", "deploy", texts[:1], reason)
        assert few.value.status == 400 and "2 needed" in few.value.message
        other = tmp_path / "other.keyring"
        create_keyring(other)
        wrong = split_keyring(other, 2, 2, tmp_path / "other-shares")
        wrong_texts = [
            next(line for line in p.read_text().splitlines() if line.startswith("wvshare1:"))
            for p in wrong
        ]
        with pytest.raises(VaultHTTPError) as foreign:
            admin.gate_override("gated-glass", "v1", "deploy", wrong_texts, reason)
        assert "not this service's KEK" in foreign.value.message
    with world.client("olivia") as olivia, pytest.raises(VaultHTTPError) as owner:
        olivia.gate_override("gated-glass", "v1", "deploy", texts[1:], reason)
    assert owner.value.status == 403  # admins only
    with world.client("admin") as admin:
        waiver = admin.gate_override("gated-glass", "v1", "deploy", texts[1:], reason)
    assert len(waiver["overrides"]) == 3  # evaluation, risk assessment, audit statement
    request = request_deploy(world, "gated-glass")
    assert request["gate"]["override"]["waiver"] == waiver["waiver"]
    assert not request["gate"]["allowed"]  # the findings still say what was missing
    world.approve("alice", request["id"])
    assert world.approve("bob", request["id"])["status"] == "active"
    # Used up: the next request is refused again.
    with pytest.raises(VaultHTTPError):
        request_deploy(world, "gated-glass")
    with world.client("audrey") as audrey:
        events = [
            json.loads(base64.b64decode(e)) for e in json.loads(audrey.audit_export())["entries"]
        ]
    overrides = [e for e in events if e["action"] == "gate.override" and e["outcome"] == "allowed"]
    assert len(overrides) == 1 and overrides[0]["detail"]["breakglass"] is True
    assert overrides[0]["detail"]["reason"] == reason
    assert not any("wvshare1" in json.dumps(e) for e in events)  # shares never reach the log
    decisions = [e for e in gate_entries(world, "gated-glass")]
    assert [(e["detail"]["stage"], e["outcome"], e["detail"].get("override")) for e in decisions][
        -3:
    ] == [
        ("request", "allowed", waiver["waiver"]),
        ("activation", "allowed", waiver["waiver"]),
        ("request", "refused", None),
    ]
