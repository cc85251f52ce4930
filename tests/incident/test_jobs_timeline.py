"""Jobs run on a model (structured access) appear in its incident timeline: who submitted,
approved or denied them, that they ran, and how many bytes their released results carried.

One real job runs in an isolated worker (a few seconds: a fresh Python that imports PyTorch)."""

from __future__ import annotations

import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from tests.access.helpers import REPEAT, make_tiny_lm
from tests.custody.helpers import public_pem, sign_model, start_service

from weightvault.custody.approvals import ApprovalSigner
from weightvault.incident import build_timeline, read_log_key, verify_line
from weightvault.incident.evidence import evidence_from_export

ACCESS = {
    "tiers": {"researcher": ["query", "evaluate"]},
    "approvals": {"query": 1, "evaluate": 1, "finetune": 2, "inspect": 1},
    "output_bytes_per_window": 1 << 20,
    "inspect_bytes_total": 64 * 1024,
    "cpu_s": 120,
    "wall_s": 120,
}


def test_jobs_are_in_the_timeline_with_their_released_bytes(tmp_path: Path) -> None:
    service = start_service(tmp_path / "data")
    try:
        tokens = {}
        keys = {name: ed25519.Ed25519PrivateKey.generate() for name in ("alice", "bob")}
        with service.admin as admin:
            for name, roles in {"olivia": ["owner"], "alice": ["approver"], "bob": ["approver"],
                                "rosa": ["researcher"]}.items():  # fmt: skip
                key = keys.get(name)
                made = admin.create_principal(
                    name, roles, approval_key_pem=public_pem(key) if key else None
                )
                tokens[name] = made["token"]
        signing_key = ec.generate_private_key(ec.SECP256R1())
        policy = {
            "approvers": ["alice", "bob"],
            "approvals_required": 2,
            "signers": [{"name": "release-key", "public_key_pem": public_pem(signing_key)}],
            "access": ACCESS,
        }
        model = make_tiny_lm(tmp_path / "tiny", steps=0, layers=1)  # its outputs do not matter
        with service.client(tokens["olivia"]) as olivia:
            olivia.create_model("tiny", policy)
            olivia.push("tiny", "v1", model, sign_model(model, signing_key).read_bytes())
        job = {
            "model": "tiny",
            "version": "v1",
            "kind": "query",
            "parameters": {"max_new_tokens": 4},
            "inputs": {"prompts": [REPEAT[:3]]},
        }
        with service.client(tokens["rosa"]) as rosa:
            ran = rosa.submit_job(job, "probe for the eval report")
            refused = rosa.submit_job(job, "a second probe")
        with service.client(tokens["alice"]) as alice:
            alice.decide_job(ran["id"], ApprovalSigner(private_key=keys["alice"]), approver="alice")
        with service.client(tokens["bob"]) as bob:
            bob.decide_job(refused["id"], ApprovalSigner(private_key=keys["bob"]), approver="bob",
                           decision="deny")  # fmt: skip
        with service.client(tokens["rosa"]) as rosa:
            deadline = time.monotonic() + 180
            while rosa.get_job(ran["id"])["status"] in ("approved", "running"):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            result = rosa.job_result(ran["id"])
        with service.admin as admin:
            export, key = admin.audit_export(), admin.audit_key()["log_key"]
    finally:
        service.stop()
    log_key = read_log_key(key)
    timeline = build_timeline(evidence_from_export(export, log_key, source="test"), "tiny")
    jobs = [(e.kind, e.principal, e.version) for e in timeline.events if e.kind.startswith("job")]
    assert jobs == [
        ("job", "rosa", "v1"),
        ("job", "rosa", "v1"),
        ("job.approval", "alice", "v1"),
        ("job.denial", "bob", "v1"),
        ("job.ran", None, "v1"),
        ("job.release", "rosa", "v1"),
    ]
    (release,) = [e for e in timeline.events if e.kind == "job.release"]
    # What the service charged for this release: the result signed with the widest log index
    # and entry digest, so never below what left (a few bytes above it).
    assert release.nbytes == release.entry.detail["released_bytes"]
    assert len(result) <= release.nbytes < len(result) + 100
    assert release.entry.detail["job_id"] == ran["id"]
    for event in timeline.events:
        verify_line(event.entry.raw, event.proof, timeline.evidence.checkpoint.raw, log_key)
