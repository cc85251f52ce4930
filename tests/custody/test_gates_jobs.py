"""Evaluations that run where the weights are: a custody ``evaluate`` job's signed result is an
attestation the release gate accepts (and so is the same evaluation on a version fine-tuned from
this one, for ``after_enhancement``); it verifies offline against the exported log, and an edited
result does not. Four worker runs (a few seconds each)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from tests.access.helpers import lm_dataset, make_tiny_lm
from tests.custody.helpers import enroll, public_pem, sign_model, start_service

from weightvault.custody.approvals import ApprovalSigner
from weightvault.custody.client import VaultClient

RELEASE = {
    "evaluations": [
        {
            "name": "held-out",
            "suite": "builtin:dataset",
            "thresholds": {"loss": {"max": 50}},
            "signers": ["custody"],
        },
        {
            "name": "after-tuning",
            "suite": "builtin:dataset",
            "thresholds": {"loss": {"max": 50}},
            "signers": ["custody"],
            "after_enhancement": True,
        },
    ]
}
ACCESS = {
    "tiers": {"researcher": ["evaluate"], "auditor": ["evaluate", "finetune"]},
    "approvals": {"evaluate": 1, "finetune": 2},
    "output_bytes_per_window": 1 << 20,
    "cpu_s": 120,
    "wall_s": 120,
}


def _run(client: VaultClient, keys: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    submitted = client.submit_job(job, "pre-deployment evaluation for the gate")
    for approver in ["alice", "bob"][: submitted["approvals_required"]]:
        with client_for(client, TOKENS[approver]) as them:
            them.decide_job(
                submitted["id"], ApprovalSigner(private_key=keys[approver]), approver=approver
            )
    deadline = time.monotonic() + 180
    while (done := client.get_job(submitted["id"]))["status"] in ("pending", "approved", "running"):
        assert time.monotonic() < deadline, done
        time.sleep(0.2)
    assert done["status"] == "succeeded", done
    return done


TOKENS: dict[str, str] = {}


def client_for(client: VaultClient, token: str) -> VaultClient:
    from weightvault.custody.client import ClientConfig

    return VaultClient(ClientConfig(client.config.url, token))


def test_custody_evaluations_pass_the_gate_and_verify_offline(tmp_path: Path) -> None:
    service = start_service(tmp_path / "data")
    try:
        enrolled = enroll(
            service,
            {
                "olivia": ["owner"],
                "alice": ["approver"],
                "bob": ["approver"],
                "rosa": ["researcher"],
                "aude": ["auditor"],
                "rita": ["reader"],
            },
        )
        TOKENS.update(enrolled.tokens)
        keys: dict[str, Any] = dict(enrolled.approval_keys)
        signing_key = ec.generate_private_key(ec.SECP256R1())
        policy = {
            "approvers": ["alice", "bob"],
            "approvals_required": 2,
            "signers": [{"name": "release-key", "public_key_pem": public_pem(signing_key)}],
            "access": ACCESS,
            "release": RELEASE,
        }
        model = make_tiny_lm(tmp_path / "tiny")
        signature = sign_model(model, signing_key)
        url = service.url
        with service.client(TOKENS["olivia"]) as olivia:
            olivia.create_model("tiny", policy)
            olivia.push("tiny", "v1", model, signature.read_bytes())
        evaluate = {
            "model": "tiny",
            "version": "v1",
            "kind": "evaluate",
            "inputs": {"dataset": lm_dataset(3)},
        }
        with service.client(TOKENS["rosa"]) as rosa:
            job = _run(rosa, keys, evaluate)
            base_result = rosa.job_result(job["id"])
            attached = rosa.attach_attestation("tiny", "v1", base_result)
            assert attached["producer"] == "custody" and attached["kind"] == "evaluation"
            first = rosa.gate_check("tiny", "v1", "deploy")
        assert not first["allowed"]
        # The result about v1 itself is no evaluation after enhancement.
        assert [(f["failure"], f["requirement"]) for f in first["findings"] if not f["ok"]] == [
            ("wrong-subject", "evaluation 'after-tuning' (suite builtin:dataset after enhancement)")
        ]
        # Post-training enhancement: a fine-tune in custody, then the same evaluation on it.
        with service.client(TOKENS["aude"]) as aude:
            tune = {
                "model": "tiny",
                "version": "v1",
                "kind": "finetune",
                "parameters": {"steps": 2, "batch_size": 2, "learning_rate": 0.01},
                "inputs": {"train": lm_dataset(2)},
            }
            derived = _run(aude, keys, tune)["derived_version"]
            tuned_job = _run(aude, keys, {**evaluate, "version": derived})
            tuned_result = aude.job_result(tuned_job["id"])
            aude.attach_attestation("tiny", derived, tuned_result)
        with service.client(TOKENS["rita"]) as rita:
            request = rita.request(
                "tiny", "v1", "deploy after the evaluations", 600, 1 << 20, "deploy"
            )
        assert request["gate"]["allowed"], request["gate"]
        relied = set(request["gate"]["relied_on"])
        assert len(relied) == 2
        with service.admin as admin:
            export = admin.audit_export()
            log_key = admin.audit_key()["log_key"]
    finally:
        service.stop()
    root_digest = first["root_digest"]
    # Offline, against the exported log: no service, the same decision.
    folder = tmp_path / "attestations"
    folder.mkdir()
    (folder / "v1-eval.json").write_bytes(base_result)
    (folder / "tuned-eval.json").write_bytes(tuned_result)
    (tmp_path / "audit.json").write_bytes(export)
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    env = {**os.environ, "WEIGHTVAULT_URL": url}

    def offline(policy_file: Path, attestations: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "weightvault",
                "gate",
                "check",
                "tiny@v1",
                "--json",
                "--offline",
                str(attestations),
                "--policy",
                str(policy_file),
                "--root-digest",
                root_digest,
                "--log-export",
                str(tmp_path / "audit.json"),
                "--log-key",
                log_key,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    passed = offline(tmp_path / "policy.json", folder)
    assert passed.returncode == 0, passed.stderr
    assert set(json.loads(passed.stdout)["relied_on"]) == relied
    # A score over a stricter threshold is refused and named.
    strict = json.loads(json.dumps(policy))
    strict["release"]["evaluations"][0]["thresholds"] = {"loss": {"max": 0.001}}
    (tmp_path / "strict.json").write_text(json.dumps(strict))
    refused = offline(tmp_path / "strict.json", folder)
    assert refused.returncode == 1
    failing = [f for f in json.loads(refused.stdout)["findings"] if not f["ok"]]
    assert [f["failure"] for f in failing] == ["failed-thresholds"]
    assert "> max 0.001" in failing[0]["message"]
    # A policy can pin the evaluation's inputs, so a requester cannot choose an easy dataset.
    inputs = json.loads(base64.b64decode(json.loads(base_result)["payload"]))["predicate"][
        "inputs_digest"
    ]
    for pinned, expected in ((inputs, 0), ("sha256:" + "0" * 64, 1)):
        strict["release"]["evaluations"][0].update(
            thresholds={"loss": {"max": 50}}, inputs_digest=pinned
        )
        (tmp_path / "pinned.json").write_text(json.dumps(strict))
        checked = offline(tmp_path / "pinned.json", folder)
        assert checked.returncode == expected, checked.stdout
    assert "wrong-inputs" in checked.stdout
    # An edited metric in a custody result: its signature no longer verifies.
    envelope = json.loads(base_result)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["outputs"]["metrics"]["loss"] = 0.0
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "v1-eval.json").write_text(json.dumps(envelope))
    (forged / "tuned-eval.json").write_bytes(tuned_result)
    caught = offline(tmp_path / "policy.json", forged)
    assert caught.returncode == 1
    failing = [f for f in json.loads(caught.stdout)["findings"] if not f["ok"]]
    assert [f["failure"] for f in failing] == ["bad-signature"]
    # Without the log, a custody result cannot be checked and does not count.
    (tmp_path / "empty").mkdir()
    none = offline(tmp_path / "policy.json", tmp_path / "empty")
    assert none.returncode == 1
    assert {f["failure"] for f in json.loads(none.stdout)["findings"]} == {"missing"}
