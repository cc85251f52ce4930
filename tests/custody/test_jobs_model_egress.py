"""A job's release spends the model's egress window, the one pulls spend on every replica
(``policy.egress_bytes_per_window``): through the real service, a release that would cross the
window is refused to the byte, a refusal releases and spends nothing and is on record as a
refusal, and every requester's releases and every reader's pulls of the model share the window
until it expires. Each test has its own model (its own window); four worker runs in all."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from sqlalchemy import select
from tests.access.helpers import REPEAT, make_tiny_lm
from tests.custody.helpers import Service, enroll, public_pem, sign_model, start_service
from tests.custody.test_jobs import ACCESS, wait_for

from weightvault.custody.approvals import ApprovalSigner
from weightvault.custody.client import VaultClient, VaultHTTPError
from weightvault.custody.store import Egress, Store

_REFUSED = re.compile(
    r"server refused \(403\): release refused: the model egress byte budget would be exceeded "
    r"\((\d+) of (\d+) bytes used, (\d+) more needed\); nothing was released"
)


@dataclass
class EgressWorld:
    service: Service
    root: Path
    tokens: dict[str, str]
    keys: dict[str, ed25519.Ed25519PrivateKey]
    signing_key: ec.EllipticCurvePrivateKey
    policies: dict[str, dict[str, Any]]

    def client(self, who: str) -> VaultClient:
        return self.service.client(self.tokens[who])

    def new_model(self, name: str) -> None:
        """A tiny language model of its own (its own egress window), jobs and pulls allowed."""
        policy = {
            "approvers": ["alice", "bob"],
            "approvals_required": 2,
            "signers": [{"name": "release-key", "public_key_pem": public_pem(self.signing_key)}],
            "max_grant_bytes": 1 << 40,
            "access": {**ACCESS, "tiers": {"researcher": ["query"]}},
        }
        folder = make_tiny_lm(self.root / name)
        with self.client("olivia") as olivia:
            olivia.create_model(name, policy)
            olivia.push(name, "v1", folder, sign_model(folder, self.signing_key).read_bytes())
        self.policies[name] = policy

    def set_window(self, model: str, budget: int) -> None:
        self.policies[model]["egress_bytes_per_window"] = budget
        with self.client("olivia") as olivia:
            olivia.set_policy(model, self.policies[model])

    def succeeded(self, model: str, *jobs: tuple[str, int, int]) -> list[str]:
        """Query jobs (``(requester, prompts, new tokens)`` each) that ran and succeeded, their
        results not released yet (they run side by side)."""
        ids = []
        for who, prompts, tokens in jobs:
            job = {
                "model": model,
                "version": "v1",
                "kind": "query",
                "parameters": {"max_new_tokens": tokens},
                "inputs": {"prompts": [REPEAT[: 2 + i] for i in range(prompts)]},
            }
            with self.client(who) as client, self.client("alice") as alice:
                submitted = client.submit_job(job, "probe for the egress review")
                signer = ApprovalSigner(private_key=self.keys["alice"])
                alice.decide_job(submitted["id"], signer, approver="alice")
            ids.append(str(submitted["id"]))
        for (who, _prompts, _tokens), job_id in zip(jobs, ids, strict=True):
            with self.client(who) as client:
                done = wait_for(client, job_id)
            assert done["status"] == "succeeded", done
        return ids

    def granted(self, model: str) -> str:
        """Rita's active grant to pull ``model`` (approved by alice and bob)."""
        with self.client("rita") as rita:
            request = rita.request(model, "v1", "evaluation run for safety", 3600, 1 << 30)
        for who in ("alice", "bob"):
            with self.client(who) as approver:
                signer = ApprovalSigner(private_key=self.keys[who])
                decided = approver.decide(request["id"], signer, approver=who)
        assert decided["status"] == "active", decided
        return str(request["id"])

    def pull(self, grant_id: str, nbytes: int) -> httpx.Response:
        """A ranged pull of the first ``nbytes`` bytes of the grant's largest file."""
        with self.client("rita") as rita:
            files = rita.grant_files(grant_id)["files"]
        largest = max(files, key=lambda f: f["delivered_size"])
        assert largest["delivered_size"] >= nbytes
        return httpx.get(
            f"{self.service.url}/v1/grants/{grant_id}/files/{largest['index']}",
            headers={
                "Authorization": f"Bearer {self.tokens['rita']}",
                "Range": f"bytes=0-{nbytes - 1}",
            },
            timeout=60,
        )

    def release(self, who: str, job_id: str) -> bytes | VaultHTTPError:
        with self.client(who) as client:
            try:
                return client.job_result(job_id)
            except VaultHTTPError as exc:
                return exc

    def release_entries(self, job_id: str) -> list[dict[str, Any]]:
        """The log's ``job.release`` entries of ``job_id`` (a refusal's detail names no job:
        its request path does)."""
        with self.client("admin") as admin:
            export = admin.audit_export()
        events = [json.loads(base64.b64decode(e)) for e in json.loads(export)["entries"]]
        return [
            e
            for e in events
            if e["action"] == "job.release" and e["path"] == f"/v1/jobs/{job_id}/result"
        ]


@pytest.fixture(scope="module")
def ew(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EgressWorld]:
    root = tmp_path_factory.mktemp("jobs-egress")
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
                "remy": ["researcher"],
                "rita": ["reader"],
            },
        )
        tokens, keys = enrolled.tokens, enrolled.approval_keys
        signing_key = ec.generate_private_key(ec.SECP256R1())
        yield EgressWorld(service, root, tokens, keys, signing_key, {})
    finally:
        service.stop()


def _refusal(answer: bytes | VaultHTTPError) -> tuple[int, int, int]:
    """(bytes used in the window, the window, bytes the release needs) of a model-window
    refusal."""
    assert isinstance(answer, VaultHTTPError), "the release was not refused"
    found = _REFUSED.fullmatch(answer.message)
    assert found is not None, answer.message
    used, budget, needed = (int(g) for g in found.groups())
    return used, budget, needed


def _unreleased(ew: EgressWorld, who: str, job_id: str) -> None:
    """Nothing of the job left: it is still succeeded, its result still held, and the log has
    refusals of it only."""
    with ew.client(who) as client:
        job = client.get_job(job_id)
    assert job["status"] == "succeeded" and job["output_bytes"], job
    entries = ew.release_entries(job_id)
    assert entries and {e["outcome"] for e in entries} == {"denied"}
    assert all("model egress byte budget" in e["detail"]["error"] for e in entries)
    assert all(e["detail"]["status"] == 403 and e["principal"] == who for e in entries)


def test_a_release_crossing_the_window_pulls_spent_is_refused_to_the_byte_and_spends_nothing(
    ew: EgressWorld,
) -> None:
    ew.new_model("m-byte")
    large, small = ew.succeeded("m-byte", ("rosa", 4, 8), ("rosa", 1, 1))
    grant = ew.granted("m-byte")
    for nbytes in (1000, 2345):  # earlier pulls of the same model spend its window
        assert ew.pull(grant, nbytes).status_code == 206
    pulled = 3345
    ew.set_window("m-byte", pulled)  # spent whole: each release says what it needs
    used, budget, need_large = _refusal(ew.release("rosa", large))
    assert (used, budget) == (pulled, pulled)
    used, budget, need_small = _refusal(ew.release("rosa", small))
    assert (used, budget) == (pulled, pulled) and need_small < need_large

    # One byte short for the large release: refused, however often it is asked.
    ew.set_window("m-byte", pulled + need_large - 1)
    for _attempt in range(2):
        assert _refusal(ew.release("rosa", large)) == (
            pulled, pulled + need_large - 1, need_large
        )  # fmt: skip
    _unreleased(ew, "rosa", large)
    # The refusals spent nothing: exactly the small release's bytes left, and it fits.
    ew.set_window("m-byte", pulled + need_small)
    assert isinstance(ew.release("rosa", small), bytes)
    # Exactly the large release's bytes left: it passes, to the byte.
    ew.set_window("m-byte", pulled + need_small + need_large)
    result = ew.release("rosa", large)
    assert isinstance(result, bytes) and len(result) <= need_large
    outcomes = [e["outcome"] for e in ew.release_entries(large)]
    assert outcomes == ["denied"] * 3 + ["allowed"]
    # The window is full: the releases spent the pulls' window too.
    refused = ew.pull(grant, 1)
    assert refused.status_code == 403
    assert "the model byte budget is exhausted" in refused.json()["error"]


def test_a_second_requesters_release_shares_the_window_until_it_expires(
    ew: EgressWorld,
) -> None:
    ew.new_model("m-shared")
    first, second = ew.succeeded("m-shared", ("rosa", 1, 4), ("remy", 1, 4))
    assert isinstance(ew.release("rosa", first), bytes)
    (entry,) = ew.release_entries(first)
    rosa_bytes = entry["detail"]["released_bytes"]
    grant = ew.granted("m-shared")
    assert ew.pull(grant, 1500).status_code == 206
    # Rosa's release and Rita's pull count against Remy's release of the same model.
    ew.set_window("m-shared", 1500)
    used, _budget, needed = _refusal(ew.release("remy", second))
    assert used == 1500 + rosa_bytes
    ew.set_window("m-shared", used + needed - 1)
    assert _refusal(ew.release("remy", second)) == (used, used + needed - 1, needed)
    _unreleased(ew, "remy", second)

    # The window passes: the service's clock cannot be set, so its rows are moved back by a
    # window (as time would leave them); the counter is the service's own.
    store = Store(f"sqlite:///{ew.service.data_dir / 'custody.db'}")
    try:
        with store.session() as session:
            old = dt.datetime.now(dt.UTC) - dt.timedelta(days=1, minutes=1)
            for row in session.scalars(select(Egress).where(Egress.model == "m-shared")):
                row.time = old
    finally:
        store.dispose()
    assert isinstance(ew.release("remy", second), bytes)  # same window size, now free
    # Only Remy's release is in the window now: what is left is exact, to the byte.
    left = used + needed - 1 - needed
    assert ew.pull(grant, left + 1).status_code == 403
    assert ew.pull(grant, left).status_code == 206
