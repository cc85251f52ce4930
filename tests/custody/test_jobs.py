"""Structured access through the real service: jobs on a real (tiny) transformers model pushed
encrypted into custody, run in isolated workers; results released once, within budgets, after
their log entry, and verified offline. Every worker run costs a few seconds (a fresh Python that
imports PyTorch), so each test runs as few jobs as it can."""

from __future__ import annotations

import base64
import getpass
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from tests.access.helpers import (
    REPEAT,
    lm_dataset,
    make_tiny_lm,
    scan_for_marker,
    scan_recent_for_marker,
)
from tests.custody.helpers import Service, enroll, public_pem, sign_model, start_service

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
    # Far above what a tiny job needs (a few seconds): under a loaded CI host a worker that
    # imports PyTorch can take a minute; the limits' own tests set them low on purpose.
    "cpu_s": 300,
    "wall_s": 600,
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


def wait_for(client: VaultClient, job_id: str, timeout: float = 600.0) -> dict[str, Any]:
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
    # The service's own temporary folder, scanned whole for plaintext (the system one is
    # shared with concurrent tests that write the same test model in plaintext on purpose).
    (root / "tmp").mkdir()
    service = start_service(root / "data", env={"TMPDIR": str(root / "tmp")})
    try:
        enrolled = enroll(
            service,
            {
                "olivia": ["owner"],
                "alice": ["approver"],
                "bob": ["approver"],
                "rosa": ["researcher"],
                "aude": ["auditor"],
            },
        )
        tokens, keys = enrolled.tokens, enrolled.approval_keys
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


def no_plaintext_on_disk(jw: JobsWorld, since: float) -> list[Path]:
    """Files holding the test model's plaintext marker: anywhere in the service's data folder
    and its own temporary folder, and files the system temporary folder gained since ``since``
    outside pytest's folders (other tests, maybe running right now on another worker, write
    the same plaintext test model there on purpose; the service never learns of those folders
    and its own, scanned whole above, are the only ones it is given)."""
    pytest_root = Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}"
    found = scan_for_marker(jw.service.data_dir, jw.root / "tmp")
    recent = scan_recent_for_marker(Path(tempfile.gettempdir()), since)
    return found + [p for p in recent if not p.is_relative_to(pytest_root)]


def _export(jw: JobsWorld) -> tuple[bytes, str]:
    with jw.client("admin") as admin:
        return admin.audit_export(), admin.audit_key()["log_key"]


def test_query_runs_isolated_is_released_once_and_verifies_offline(jw: JobsWorld) -> None:
    started = time.time()
    deadline = time.monotonic() + 600
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
            assert no_plaintext_on_disk(jw, started) == []
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        done = rosa.get_job(job["id"])
        assert done["status"] == "succeeded", done
        result = rosa.job_result(job["id"])
        with pytest.raises(VaultHTTPError) as again:
            rosa.job_result(job["id"])
        assert again.value.status == 409 and "released already" in again.value.message
    assert no_plaintext_on_disk(jw, started) == []
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
        # The genuine envelope works once; replayed, it is refused.
        for attempt in range(2):
            if attempt:
                with pytest.raises(VaultHTTPError) as replayed:
                    alice._call(
                        "POST",
                        f"/v1/jobs/{first['id']}/approvals",
                        json={"envelope": base64.b64encode(envelope).decode()},
                    )
                assert replayed.value.status == 409, replayed.value.message
                continue
            alice._call(
                "POST",
                f"/v1/jobs/{first['id']}/approvals",
                json={"envelope": base64.b64encode(envelope).decode()},
            )
        assert len(alice.get_job(first["id"])["approvals"]) == 1
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
            # Two requests at once (a retry racing the first): exactly one gets the result.
            with ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(lambda _i: _try_release(jw, done["id"]), range(2)))
            results = [a for a in answers if isinstance(a, bytes)]
            refusals = [a for a in answers if isinstance(a, VaultHTTPError)]
            assert len(results) == 1 and [r.status for r in refusals] == [409], answers
            result = results[0]
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
    # An altered metric is detected (re-signing it needs the log key).
    envelope = json.loads(result)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["outputs"]["metrics"]["loss"] += 1.0
    forged = dict(
        envelope, payload=base64.b64encode(canonical(statement, ascii_only=True)).decode()
    )
    with pytest.raises(VerificationError, match="signature"):
        verify_job_result(canonical(forged, ascii_only=True), export, log_key)


def _try_release(jw: JobsWorld, job_id: str) -> bytes | VaultHTTPError:
    with jw.client("rosa") as rosa:
        try:
            return rosa.job_result(job_id)
        except VaultHTTPError as exc:
            return exc


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
    started = time.time()
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
    assert no_plaintext_on_disk(jw, started) == []
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


def test_the_job_commands_work_end_to_end_with_json(
    jw: JobsWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from cryptography.hazmat.primitives import serialization

    from weightvault.cli.app import run

    monkeypatch.setenv("WEIGHTVAULT_URL", jw.service.url)
    key = tmp_path / "alice.pem"
    key.write_bytes(
        jw.keys["alice"].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)

    def as_(who: str, *args: str) -> int:
        return run(["vault", "job", *args, "--token", jw.tokens[who]])

    submit = ("submit", "--model", "tiny", "--version", "v1", "--kind", "query")
    assert as_("rosa", *submit, "--prompt", "5 9 13", "--param", "max_new_tokens=4",
               "--justification", "cli probe, study R-8", "--json") == 0  # fmt: skip
    job = json.loads(capsys.readouterr().out)
    assert job["status"] == "pending" and job["parameters"]["max_new_tokens"] == 4
    assert as_("alice", "approve", job["id"], "--key", str(key), "--json") == 0
    assert json.loads(capsys.readouterr().out)["status"] == "approved"
    assert as_("rosa", "status", job["id"], "--wait", "600", "--json") == 0
    assert json.loads(capsys.readouterr().out)["status"] == "succeeded"
    out = tmp_path / "answer.json"
    assert as_("rosa", "result", job["id"], "-o", str(out), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["bytes"] == len(out.read_bytes()) and shown["predicate"]["kind"] == "query"
    assert len(shown["predicate"]["outputs"]["completions"][0]) == 4
    assert as_("rosa", "result", job["id"], "-o", str(tmp_path / "again.json")) != 0
    err = capsys.readouterr().err
    assert "released already" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "again.json").exists()
    export, log_key = _export(jw)
    (tmp_path / "audit.json").write_bytes(export)
    (tmp_path / "audit.pub").write_text(log_key)
    offline = [
        *("--log-export", str(tmp_path / "audit.json")),
        *("--log-key", str(tmp_path / "audit.pub")),
    ]
    assert run(["vault", "job", "verify-result", str(out), *offline, "--json"]) == 0
    verified = json.loads(capsys.readouterr().out)
    assert verified["predicate"]["job_id"] == job["id"] and verified["log_index"] > 0
    edited = tmp_path / "edited.json"
    edited.write_bytes(out.read_bytes().replace(b'"payload":"', b'"payload":"AAAA'))
    assert run(["vault", "job", "verify-result", str(edited), *offline]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    # Cancel a pending job; list shows both; a bad prompt is a one-line usage error.
    assert (
        as_("rosa", *submit, "--prompt", "1 2", "--justification", "to be cancelled", "--json") == 0
    )
    second = json.loads(capsys.readouterr().out)["id"]
    assert as_("rosa", "cancel", second, "--json") == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"
    assert as_("rosa", "list", "--json") == 0
    statuses = {j["id"]: j["status"] for j in json.loads(capsys.readouterr().out)}
    assert statuses[job["id"]] == "released" and statuses[second] == "cancelled"
    assert (
        as_("rosa", *submit, "--prompt", "five nine", "--justification", "ids that are words") == 2
    )
    err = capsys.readouterr().err
    assert "--prompt: expected token ids" in err and "Traceback" not in err


def test_a_tamper_lab_testbed_model_is_queried_and_evaluated_in_custody(jw: JobsWorld) -> None:
    import torch

    from weightvault.tamper.testbed import BUILTIN_TESTBEDS, save_model

    testbed = BUILTIN_TESTBEDS["digits"]()
    model = testbed.release(0).eval()
    folder = jw.root / "digits"
    folder.mkdir()
    save_model(folder / "model.safetensors", model, {"testbed": "digits", "defense": None})
    key = ec.generate_private_key(ec.SECP256R1())
    policy = {**jw.policy, "signers": [{"name": "lab-key", "public_key_pem": public_pem(key)}]}
    with jw.client("olivia") as olivia:
        olivia.create_model("digits", policy)
        olivia.push("digits", "v1", folder, sign_model(folder, key).read_bytes())
    test = testbed.data().test
    rows = test.x[:3]
    query = {"model": "digits", "version": "v1", "kind": "query",
             "inputs": {"features": rows.tolist()}}  # fmt: skip
    evaluate = {"model": "digits", "version": "v1", "kind": "evaluate",
                "parameters": {"evaluation": "builtin:testbed"}}  # fmt: skip
    released = []
    for job in (query, evaluate):
        done = _run_approved(jw, "rosa", job, "testbed probe for the tamper report")
        assert done["status"] == "succeeded", done
        with jw.client("rosa") as rosa:
            released.append(rosa.job_result(done["id"]))
    export, log_key = _export(jw)
    answers, metrics = (verify_job_result(r, export, log_key).outputs for r in released)
    with torch.no_grad():
        expected = torch.softmax(model(rows), dim=-1)
        accuracy = float((model(test.x).argmax(-1) == test.desired).float().mean())
    assert torch.allclose(torch.tensor(answers["probabilities"]), expected, atol=1e-4)
    assert metrics["metrics"]["scored"] == len(test)
    assert abs(metrics["metrics"]["accuracy"] - accuracy) < 1e-3 and accuracy > 0.8
    # A kind this model cannot run fails in the worker, and nothing is released.
    inspect = {"model": "digits", "version": "v1", "kind": "inspect", "inputs": {"prompts": [[1]]}}
    failed = _run_approved(jw, "aude", inspect, "internals of the testbed model")
    assert failed["status"] == "failed" and "tamper-lab digits model" in failed["reason"]


def test_the_job_routes_are_in_the_openapi_schema_and_fuzzing_them_finds_no_server_error(
    jw: JobsWorld,
) -> None:
    """The whole-service schemathesis run (tests/custody/test_fuzz.py) covers every operation of
    the schema; here the job operations are fuzzed against a model that allows jobs, as a
    researcher (who may submit) and an approver (who may decide)."""
    schema = httpx.get(f"{jw.service.url}/openapi.json", timeout=30).json()
    operations = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert {
        ("/v1/jobs", "post"),
        ("/v1/jobs", "get"),
        ("/v1/jobs/{job_id}", "get"),
        ("/v1/jobs/{job_id}/approvals", "post"),
        ("/v1/jobs/{job_id}/cancel", "post"),
        ("/v1/jobs/{job_id}/result", "post"),
    } <= operations
    assert set(schema["components"]["schemas"]["JobIn"]["properties"]["kind"]["enum"]) == {
        "query", "evaluate", "finetune", "inspect"
    }  # fmt: skip
    st = Path(sys.executable).parent / "st"
    for who in ("rosa", "alice"):
        result = subprocess.run(
            [
                str(st), "run", f"{jw.service.url}/openapi.json",
                "--include-path-regex", "^/v1/jobs",
                "--checks", "not_a_server_error",
                "--max-examples", "6", "--seed", "20261206",
                "--phases", "coverage,fuzzing",
                "-H", f"Authorization: Bearer {jw.tokens[who]}",
            ],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-4000:]
        assert "passed" in result.stdout
    assert "unexpected error" not in jw.service.log_path.read_text()
