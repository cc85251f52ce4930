"""Structured access through the real service: jobs on a real (tiny) transformers model pushed
encrypted into custody, run in isolated workers; results released once, within budgets, after
their log entry, and verified offline. Every worker run costs a few seconds (a fresh Python that
imports PyTorch), so each test runs as few jobs as it can."""

from __future__ import annotations

import base64
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from tests.access.helpers import (
    REPEAT,
    lm_dataset,
    make_tiny_lm,
    scan_for_marker,
    scan_recent_for_marker,
)
from tests.custody.helpers import Service, public_pem, sign_model, start_service

from weightvault._json import canonical
from weightvault.access.result import verify_job_result
from weightvault.custody.approvals import ApprovalSigner
from weightvault.custody.client import VaultClient, VaultHTTPError
from weightvault.errors import VerificationError

ACCESS = {
    "tiers": {
        "researcher": ["query", "evaluate"],
        "auditor": ["query", "evaluate", "finetune", "inspect"],
    },
    "approvals": {"query": 1, "evaluate": 1, "finetune": 2, "inspect": 1},
    "output_bytes_per_window": 1 << 20,
    "inspect_bytes_total": 64 * 1024,
    "cpu_s": 120,
    "wall_s": 120,
}


@dataclass
class JobsWorld:
    service: Service
    root: Path
    tokens: dict[str, str]
    keys: dict[str, ed25519.Ed25519PrivateKey]
    policy: dict[str, Any]

    def client(self, who: str) -> VaultClient:
        return self.service.client(self.tokens[who])

    def approve(self, who: str, job_id: str, decision: str = "approve") -> dict[str, Any]:
        with self.client(who) as client:
            return client.decide_job(
                job_id, ApprovalSigner(private_key=self.keys[who]), approver=who, decision=decision
            )

    def set_access(self, **changes: Any) -> None:
        self.policy["access"] = {**self.policy["access"], **changes}
        with self.client("olivia") as olivia:
            olivia.set_policy("tiny", self.policy)


def wait_for(client: VaultClient, job_id: str, timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get_job(job_id)
        if job["status"] not in ("pending", "approved", "running"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


@pytest.fixture(scope="module")
def jw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobsWorld]:
    root = tmp_path_factory.mktemp("jobs")
    service = start_service(root / "data")
    try:
        tokens = {"admin": service.admin_token}
        keys = {}
        with service.admin as admin:
            for name, roles in {
                "olivia": ["owner"],
                "alice": ["approver"],
                "bob": ["approver"],
                "rosa": ["researcher"],
                "aude": ["auditor"],
            }.items():
                key = ed25519.Ed25519PrivateKey.generate() if "approver" in roles else None
                if key is not None:
                    keys[name] = key
                made = admin.create_principal(
                    name, roles, approval_key_pem=public_pem(key) if key else None
                )
                tokens[name] = made["token"]
        signing_key = ec.generate_private_key(ec.SECP256R1())
        policy = {
            "approvers": ["alice", "bob"],
            "approvals_required": 2,
            "signers": [{"name": "release-key", "public_key_pem": public_pem(signing_key)}],
            "access": dict(ACCESS),
        }
        model = make_tiny_lm(root / "tiny")
        signature = sign_model(model, signing_key)
        world = JobsWorld(service, root, tokens, keys, policy)
        with world.client("olivia") as olivia:
            olivia.create_model("tiny", policy)
            olivia.push("tiny", "v1", model, signature.read_bytes())
        yield world
    finally:
        service.stop()


def _query(client: VaultClient, prompts: list[list[int]] | None = None) -> dict[str, Any]:
    job = {
        "model": "tiny",
        "version": "v1",
        "kind": "query",
        "parameters": {"max_new_tokens": 8},
        "inputs": {"prompts": prompts or [REPEAT[:3]]},
    }
    return client.submit_job(job, "black-box probe for the eval report")


def _export(jw: JobsWorld) -> tuple[bytes, str]:
    with jw.client("admin") as admin:
        return admin.audit_export(), admin.audit_key()["log_key"]


def test_query_runs_isolated_is_released_once_and_verifies_offline(jw: JobsWorld) -> None:
    data = jw.service.data_dir
    started = time.time()
    with jw.client("rosa") as rosa:
        job = _query(rosa)
        assert job["status"] == "pending" and job["approvals_required"] == 1
        with pytest.raises(VaultHTTPError) as early:
            rosa.job_result(job["id"])
        assert early.value.status == 409
        jw.approve("alice", job["id"])
        seen_running = False
        while (status := rosa.get_job(job["id"])["status"]) in ("approved", "running"):
            # While the worker holds the plaintext weights, none of it is on disk.
            seen_running |= status == "running"
            assert scan_for_marker(data) == []
            time.sleep(0.2)
        done = rosa.get_job(job["id"])
        assert done["status"] == "succeeded", done
        result = rosa.job_result(job["id"])
        with pytest.raises(VaultHTTPError) as again:
            rosa.job_result(job["id"])
        assert again.value.status == 409 and "released already" in again.value.message
    assert scan_for_marker(data) == []
    assert scan_recent_for_marker(Path(tempfile.gettempdir()), started) == []
    export, log_key = _export(jw)
    verified = verify_job_result(result, export, log_key)
    completion = verified.outputs["completions"][0]
    assert len(completion) == 8 and completion[:3] == REPEAT[3:6]  # the model learned REPEAT
    assert verified.predicate["kind"] == "query"
    assert verified.predicate["parameters"]["max_new_tokens"] == 8
    assert [a["approver"] for a in verified.predicate["approvals"]] == ["alice"]
    entry = json.loads(base64.b64decode(json.loads(export)["entries"][verified.log_index]))
    environment = entry["detail"]["environment"]
    assert environment["network"] == ["lo"] and environment["isolation"]["network_namespace"]
    assert environment["landlock_applied"] >= 1
    # Altering a metric, the signed payload, or the log entry is detected.
    envelope = json.loads(result)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["outputs"]["completions"][0][0] ^= 1
    forged = dict(
        envelope, payload=base64.b64encode(canonical(statement, ascii_only=True)).decode()
    )
    with pytest.raises(VerificationError, match="signature"):
        verify_job_result(canonical(forged, ascii_only=True), export, log_key)
    doc = json.loads(export)
    event = json.loads(base64.b64decode(doc["entries"][verified.log_index]))
    event["detail"]["outputs_digest"] = "sha256:" + "0" * 64
    doc["entries"][verified.log_index] = base64.b64encode(json.dumps(event).encode()).decode()
    with pytest.raises(VerificationError):
        verify_job_result(result, json.dumps(doc).encode(), log_key)


def test_a_researcher_cannot_run_a_kind_their_tier_lacks(jw: JobsWorld) -> None:
    with jw.client("rosa") as rosa, pytest.raises(VaultHTTPError) as refused:
        rosa.submit_job(
            {"model": "tiny", "version": "v1", "kind": "inspect", "inputs": {"prompts": [[1, 2]]}},
            "looking at the internals please",
        )
    assert refused.value.status == 403 and "may not run inspect jobs" in refused.value.message
    with jw.client("olivia") as olivia, pytest.raises(VaultHTTPError) as no_role:
        _query(olivia)
    assert no_role.value.status == 403


def test_replayed_or_altered_job_approvals_are_refused(jw: JobsWorld) -> None:
    with jw.client("rosa") as rosa:
        first = _query(rosa, [[1, 2, 3]])
        second = _query(rosa, [[1, 2, 4]])
    # Alice signs an approval of the first job; it is submitted for the second.
    from weightvault.custody.approvals import ApprovalStatement, RequestTerms, sign_statement
    from weightvault.custody.client import resolve_config  # noqa: F401 - the client's own module

    job = jw.client("alice").get_job(first["id"])
    terms = RequestTerms(
        request_id=job["id"], model="tiny", version="v1", grantee="rosa",
        justification=f"query job {job['request_digest']}: {job['justification']}",
        duration_s=job["wall_s"], byte_budget=job["output_limit"],
    )  # fmt: skip
    import datetime as dt

    statement = ApprovalStatement.for_request(
        terms, approver="alice", decision="approve", issued_at=dt.datetime.now(dt.UTC),
        valid_for=dt.timedelta(hours=1),
    )  # fmt: skip
    envelope = sign_statement(statement, ApprovalSigner(private_key=jw.keys["alice"]))
    with jw.client("alice") as alice:
        for target, blob in (
            (second["id"], envelope),
            (first["id"], envelope.replace(b'"sig":"', b'"sig":"A')),
        ):
            with pytest.raises(VaultHTTPError) as refused:
                alice._call(
                    "POST",
                    f"/v1/jobs/{target}/approvals",
                    json={"envelope": base64.b64encode(blob).decode()},
                )
            assert refused.value.status in (400, 403), refused.value.message
        assert alice.get_job(second["id"])["status"] == "pending"
        # The genuine envelope works once; the same approver again is a conflict.
        alice._call(
            "POST",
            f"/v1/jobs/{first['id']}/approvals",
            json={"envelope": base64.b64encode(envelope).decode()},
        )
    with jw.client("rosa") as rosa:
        assert rosa.cancel_job(first["id"])["status"] == "cancelled"
        assert rosa.cancel_job(second["id"])["status"] == "cancelled"
    with jw.client("rosa") as rosa, pytest.raises(VaultHTTPError) as self_approval:
        rosa.decide_job(first["id"], ApprovalSigner(private_key=jw.keys["bob"]), approver="rosa")
    assert self_approval.value.status in (403, 409)


def _run_approved(
    jw: JobsWorld, who: str, job: dict[str, Any], justification: str
) -> dict[str, Any]:
    with jw.client(who) as client:
        submitted = client.submit_job(job, justification)
        approvers = ["alice", "bob"][: submitted["approvals_required"]]
        for approver in approvers:
            jw.approve(approver, submitted["id"])
        return wait_for(client, submitted["id"])


def _released_entries(export: bytes, job_id: str) -> list[dict[str, Any]]:
    events = [json.loads(base64.b64decode(e)) for e in json.loads(export)["entries"]]
    return [
        e for e in events if e["action"] == "job.release" and e["detail"].get("job_id") == job_id
    ]


def test_the_output_budget_refuses_before_anything_leaves_and_nothing_leaves_twice(
    jw: JobsWorld,
) -> None:
    jw.set_access(output_bytes_per_window=300)  # smaller than any signed result
    try:
        job = {
            "model": "tiny",
            "version": "v1",
            "kind": "evaluate",
            "inputs": {"dataset": lm_dataset(3)},
        }
        done = _run_approved(jw, "rosa", job, "held-out loss for the audit report")
        assert done["status"] == "succeeded", done
        with jw.client("rosa") as rosa:
            for _attempt in range(2):
                with pytest.raises(VaultHTTPError) as refused:
                    rosa.job_result(done["id"])
                assert refused.value.status == 403
                assert "output byte budget would be exceeded" in refused.value.message
            assert rosa.get_job(done["id"])["status"] == "succeeded"
            assert _released_entries(_export(jw)[0], done["id"]) == []
            jw.set_access(output_bytes_per_window=1 << 20)
            result = rosa.job_result(done["id"])
            with pytest.raises(VaultHTTPError) as twice:
                rosa.job_result(done["id"])
            assert twice.value.status == 409
            assert rosa.get_job(done["id"])["status"] == "released"
    finally:
        jw.set_access(output_bytes_per_window=ACCESS["output_bytes_per_window"])
    export, log_key = _export(jw)
    verified = verify_job_result(result, export, log_key)
    assert set(verified.outputs["metrics"]) == {"loss", "accuracy", "perplexity", "scored"}
    entries = _released_entries(export, done["id"])
    assert len(entries) == 1 and entries[0]["detail"]["released_bytes"] >= len(result)


def test_finetune_keeps_the_tuned_weights_in_custody_and_releases_only_metrics(
    jw: JobsWorld,
) -> None:
    job = {
        "model": "tiny",
        "version": "v1",
        "kind": "finetune",
        "parameters": {"steps": 3, "batch_size": 2, "learning_rate": 0.01},
        "inputs": {"train": lm_dataset(2)},
    }
    done = _run_approved(jw, "aude", job, "pre-deployment audit: fine-tuning attack")
    assert done["status"] == "succeeded" and done["approvals_required"] == 2, done
    derived = done["derived_version"]
    assert derived == "v1-ft1"
    with jw.client("aude") as aude:
        result = aude.job_result(done["id"])
    export, log_key = _export(jw)
    outputs = verify_job_result(result, export, log_key).outputs
    assert set(outputs) == {"metrics_before", "metrics_after", "steps", "derived_version"}
    with jw.client("olivia") as olivia:
        versions = {v["version"]: v for v in olivia.inventory()[0]["versions"]}
    assert versions[derived]["signer"] == f"custody:finetune job {done['id']}"
    assert [f["path"] for f in versions[derived]["files"]] == ["config.json", "model.safetensors"]
    assert scan_for_marker(jw.service.data_dir) == []
    # The derived version is a model like any other: jobs run on it.
    query = {"model": "tiny", "version": derived, "kind": "query", "inputs": {"prompts": [[5]]}}
    assert _run_approved(jw, "aude", query, "compare the tuned model")["status"] == "succeeded"


def test_inspect_outputs_are_bounded_by_the_inspect_budget(jw: JobsWorld) -> None:
    jw.set_access(inspect_bytes_total=500)
    try:
        job = {
            "model": "tiny",
            "version": "v1",
            "kind": "inspect",
            "parameters": {"logit_lens_top_k": 2},
            "inputs": {"prompts": [REPEAT[:4]]},
        }
        done = _run_approved(jw, "aude", job, "logit lens on the repeat prompt")
        assert done["status"] == "succeeded", done
        with jw.client("aude") as aude:
            with pytest.raises(VaultHTTPError) as refused:
                aude.job_result(done["id"])
            assert "inspect byte budget" in refused.value.message
            jw.set_access(inspect_bytes_total=64 * 1024)
            result = aude.job_result(done["id"])
    finally:
        jw.set_access(inspect_bytes_total=ACCESS["inspect_bytes_total"])
    outputs = verify_job_result(result, *_export(jw)).outputs
    assert outputs["layers"] == 3 and len(outputs["activation_statistics"][0]) == 3
    lens = outputs["logit_lens"][0]
    assert len(lens) == 3 and all(len(position) == 2 for layer in lens for position in layer)
    assert lens[-1][0][0][0] == REPEAT[1]  # the last layer predicts the next token of REPEAT


def test_a_job_over_its_wall_time_is_killed_logged_and_releases_nothing(jw: JobsWorld) -> None:
    jw.set_access(wall_s=1)
    try:
        with jw.client("rosa") as rosa:
            job = _query(rosa)
            jw.approve("alice", job["id"])
            done = wait_for(rosa, job["id"])
            assert done["status"] == "killed" and "wall-time" in done["reason"]
            with pytest.raises(VaultHTTPError) as refused:
                rosa.job_result(job["id"])
            assert refused.value.status == 409
    finally:
        jw.set_access(wall_s=ACCESS["wall_s"])
    events = [json.loads(base64.b64decode(e)) for e in json.loads(_export(jw)[0])["entries"]]
    finished = [
        e for e in events if e["action"] == "job.finished" and e["detail"]["job_id"] == job["id"]
    ]
    assert [e["outcome"] for e in finished] == ["failed"]
    assert finished[0]["detail"]["status"] == "killed"
