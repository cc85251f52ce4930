"""The approver console end to end, in a real browser: passkey registration and sign-in, a
request filed from the command line approved in the browser by two approvers and pulled, a
denial, a revocation, and the audit log checked offline (every passkey approval verified
against the public key logged at its registration). Structured-access jobs: listed by status
with the requester's output budget used and left, approved and denied with passkey assertions
over their terms (checked offline the same way), stale terms and replayed answers refused. The
release gate's assessment summary and evaluation results beside a deploy request. Every page
checked with axe-core on a 375 px wide screen, and used with the keyboard alone."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests.custody.console.browser import Approver, axe_source, axe_violations, new_approver
from tests.custody.helpers import Person, World, make_model, public_pem, sign_model
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

from weightvault.custody.audit import verify_audit
from weightvault.custody.client.errors import VaultHTTPError
from weightvault.custody.console.signatures import sign_enrolment

PHONE = {"width": 375, "height": 812}
"""A small phone's screen (iPhone SE/mini width)."""


def cli(
    world: World, who: str, *args: str, home: Path, group: str = "vault"
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "WEIGHTVAULT_URL": world.service.url,
        "WEIGHTVAULT_TOKEN": world.people[who].token,
        "WEIGHTVAULT_HOME": str(home),
    }
    return subprocess.run(
        [sys.executable, "-m", "weightvault", group, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def file_request(world: World, home: Path, *, who: str = "rita", budget: str = "2M") -> str:
    done = cli(
        world,
        who,
        "request",
        "--model",
        "llama",
        "--version",
        "v1",
        "--duration-s",
        "3600",
        "--bytes",
        budget,
        "--justification",
        "red-team eval, ticket SEC-42",
        "--json",
        home=home,
    )
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["id"])


def test_passkey_session_cookie_is_secure_httponly_strict(approvers: dict[str, Approver]) -> None:
    alice = approvers["alice"]
    cookie = next(c for c in alice.context.cookies() if c["name"] == "wv_session")
    assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console" and cookie["domain"] == "localhost"
    assert len(alice.credentials()) == 1  # one resident passkey in alice's authenticator
    # Asked for at 127.0.0.1 (not a valid WebAuthn RP id), the console answers at localhost.
    loopback = alice.origin.replace("localhost", "127.0.0.1")
    response = alice.page.goto(f"{loopback}/console/requests")
    assert response is not None and alice.page.url == f"{alice.origin}/console/requests"
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp


def test_two_approvers_approve_in_the_browser_and_the_pull_succeeds(
    world: World, approvers: dict[str, Approver], tmp_path: Path
) -> None:
    request_id = file_request(world, tmp_path)
    alice, bob = approvers["alice"], approvers["bob"]
    alice.page.goto(f"{alice.origin}/console/requests")
    card = alice.page.locator(".card", has_text="red-team eval, ticket SEC-42").first
    assert "red-team eval, ticket SEC-42" in card.inner_text()
    alice.screenshot("pending")
    alice.open_request(request_id)
    alice.screenshot("request")
    assert alice.decide(request_id) == "Status: pending"
    assert bob.decide(request_id) == "Status: active"
    bob.screenshot("request-approved")
    rows = bob.page.locator("table tbody tr").all_inner_texts()
    assert any("alice" in r and "passkey" in r for r in rows)
    assert any("bob" in r and "passkey" in r for r in rows)

    identity = world.people["rita"].identity_path
    assert identity is not None
    pulled = cli(
        world, "rita", "pull", request_id, "-o", str(tmp_path / "out"),
        "--identity", str(identity), home=tmp_path,
    )  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    assert (tmp_path / "out" / "model.safetensors").exists()

    with world.client("audrey") as auditor:
        export = auditor.audit_export()
        key = auditor.audit_key()["log_key"]
    report = verify_audit(export, key)
    assert report.passkey_approvals >= 2


def test_deny_needs_a_reason_and_refuses_the_pull(
    world: World, approvers: dict[str, Approver], tmp_path: Path
) -> None:
    request_id = file_request(world, tmp_path)
    alice = approvers["alice"]
    alice.open_request(request_id)
    # The browser will not submit an empty reason, and the service refuses a short one itself.
    alice.page.get_by_role("button", name="Deny with passkey").click()
    assert alice.page.locator(".badge").inner_text() == "Status: pending"
    digest = alice.page.locator("#request-digest").inner_text()
    refused = alice.fetch(
        f"/console/requests/{request_id}/options",
        {"decision": "deny", "reason": "no", "digest": digest},
    )
    assert refused["status"] == 400 and "reason" in refused["body"]["error"]
    assert alice.decide(request_id, "deny", "no ticket covers this model") == "Status: denied"
    identity = world.people["rita"].identity_path
    assert identity is not None
    pulled = cli(
        world, "rita", "pull", request_id, "-o", str(tmp_path / "out"),
        "--identity", str(identity), home=tmp_path,
    )  # fmt: skip
    assert pulled.returncode != 0 and "denied" in pulled.stderr


def test_revoke_from_the_grants_page(
    world: World, approvers: dict[str, Approver], tmp_path: Path
) -> None:
    grant_id = world.granted("ravi")  # approved with Ed25519 keys from the command line
    alice = approvers["alice"]
    alice.page.goto(f"{alice.origin}/console/grants")
    alice.screenshot("grants")
    button = alice.page.get_by_role("button", name="Revoke ravi's grant to llama@v1")
    assert button.count() >= 1
    with alice.page.expect_navigation():
        alice.page.locator(f"form[action='/console/grants/{grant_id}/revoke'] button").click()
    assert alice.page.url.endswith("/console/grants"), alice.page.content()
    with world.client("ravi") as ravi:
        assert ravi.get_request(grant_id)["status"] == "revoked"


def test_a_passkey_approval_and_a_cli_approval_make_a_grant(
    world: World, approvers: dict[str, Approver], tmp_path: Path
) -> None:
    request_id = file_request(world, tmp_path)
    assert approvers["alice"].decide(request_id) == "Status: pending"
    assert world.approve("bob", request_id)["status"] == "active"


def test_approvers_are_told_when_a_request_waits(
    world: World, webhook: tuple[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    request_id = file_request(world, tmp_path)
    deadline = time.monotonic() + 10
    while not any(n.get("request_id") == request_id for n in webhook[1]):
        assert time.monotonic() < deadline, webhook[1]
        time.sleep(0.05)
    notice = next(n for n in webhook[1] if n.get("request_id") == request_id)
    assert notice["notification"] == "approval.needed"
    assert notice["path"] == f"/console/requests/{request_id}"
    assert (notice["requester"], notice["model"], notice["byte_budget"]) == (
        "rita",
        "llama",
        2 << 20,
    )


def test_pages_are_accessible_and_fit_a_phone(
    world: World, approvers: dict[str, Approver], tmp_path: Path
) -> None:
    """axe-core (WCAG 2.1 A/AA and best practices) finds nothing serious or critical on any
    page; on a phone-sized screen nothing is wider than the screen; screenshots of each page."""
    axe = axe_source()
    request_id = file_request(world, tmp_path)
    carol = approvers["carol"]
    pages = {
        "requests": "/console/requests",
        "request-phone": f"/console/requests/{request_id}",
        "grants-phone": "/console/grants",
        "jobs": "/console/jobs",
        "audit": "/console/audit",
        "alerts": "/console/alerts",
        "refused": "/console/requests/" + "0" * 32,
    }
    carol.page.set_viewport_size(PHONE)
    for name, path in pages.items():
        carol.page.goto(carol.origin + path)
        assert axe_violations(carol.page, axe) == [], name
        width = carol.page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (name, width)
        if not name.endswith("-phone"):
            carol.page.set_viewport_size({"width": 1100, "height": 900})
        carol.screenshot(name)
        carol.page.set_viewport_size(PHONE)
    # The decision forms work from the keyboard alone: tab to the reason, type, submit.
    carol.page.goto(f"{carol.origin}/console/requests/{request_id}")
    carol.page.get_by_label("Reason for denying").focus()
    carol.page.keyboard.type("not before the review board meets")
    carol.page.keyboard.press("Tab")
    focused = carol.page.evaluate("document.activeElement.textContent")
    assert focused == "Deny with passkey"
    carol.page.keyboard.press("Enter")
    assert carol.outcome() == "Status: denied"
    carol.page.set_viewport_size({"width": 1100, "height": 900})

    # The pages before sign-in, in a fresh browser context.
    visitor = new_approver(carol.context.browser, "visitor", "", carol.origin)  # type: ignore[arg-type]
    try:
        visitor.page.goto(f"{carol.origin}/console/login")
        assert axe_violations(visitor.page, axe) == []
        visitor.screenshot("login")
        key = tmp_path / "bob.pem"
        key.write_bytes(
            world.people["bob"].approval_key.private_bytes(  # type: ignore[union-attr]
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        linked = cli(
            world, "bob", "link", "--key", str(key), "--json", home=tmp_path, group="console"
        )
        assert linked.returncode == 0, linked.stderr
        link = json.loads(linked.stdout)["url"]
        assert link.startswith(f"{carol.origin}/console/register?code=")
        visitor.page.goto(link)
        assert "Register a passkey for bob" in visitor.page.content()
        assert axe_violations(visitor.page, axe) == []
        visitor.screenshot("register")
    finally:
        visitor.context.close()


def test_a_token_alone_cannot_register_an_approvers_passkey(world: World) -> None:
    """A stolen API token must not become a passkey that approves: approvers prove they hold
    their approval key (once per request for a link), or an admin issues the link."""
    now = dt.datetime.now(dt.UTC)
    alice, bob = world.people["alice"], world.people["bob"]

    def refused(who: str, proof: bytes | None, principal: str | None = None) -> str:
        with world.client(who) as client:
            with pytest.raises(VaultHTTPError) as caught:
                client.console_link(proof, principal)
        return f"{caught.value.status} {caught.value}"

    assert "403" in refused("alice", None) and "approval key" in refused("alice", None)
    assert "not signed by your approval key" in refused(
        "alice", sign_enrolment("alice", bob.signer, now)
    )
    assert "for someone else" in refused("alice", sign_enrolment("bob", alice.signer, now))
    stale = sign_enrolment("alice", alice.signer, now - dt.timedelta(minutes=10))
    assert "too old" in refused("alice", stale)
    proof = sign_enrolment("alice", alice.signer, now)
    with world.client("alice") as client:
        assert client.console_link(proof)["principal"] == "alice"
    assert "409" in refused("alice", proof)  # each signed request gives one link
    assert "403" in refused("alice", None, "bob")  # only admins ask for someone else

    with world.client("admin") as admin:
        admin.create_principal("dana", ["approver"])  # an approver with no approval key
        assert admin.console_link(None, "dana")["principal"] == "dana"
    dana_token = admin_token_for(world, "dana")
    with world.service.client(dana_token) as dana:
        with pytest.raises(VaultHTTPError, match="from an admin"):
            dana.console_link()
    with world.client("ravi") as ravi:  # a reader: the console only shows them their own
        assert ravi.console_link()["principal"] == "ravi"


def admin_token_for(world: World, name: str) -> str:
    with world.client("admin") as admin:
        return str(admin.issue_token(name, "console test")["token"])


# -- structured-access jobs, release gates, phone and keyboard ----------------------------------

ACCESS = {
    "tiers": {"researcher": ["query", "evaluate"]},
    "approvals": {"query": 2, "evaluate": 1},
    "output_bytes_per_window": 1 << 20,
}


def jobs_model(world: World) -> str:
    """A model ``atlas`` whose policy allows researchers' query jobs (two approvals), and a
    researcher ``rosa``; idempotent within the module."""
    with world.client("admin") as admin:
        if "rosa" not in world.people:
            made = admin.create_principal("rosa", ["researcher"])
            world.people["rosa"] = Person("rosa", made["token"])
    if not (world.root / "atlas").exists():
        folder = make_model(world.root / "atlas", seed=7)
        assert world.signing_key is not None
        signature = sign_model(folder, world.signing_key)
        policy = {
            "approvers": ["alice", "bob", "carol"],
            "approvals_required": 2,
            "signers": [{"name": "release-key", "public_key_pem": public_pem(world.signing_key)}],
            "approval_validity_s": 7200,
            "access": ACCESS,
        }
        with world.client("olivia") as olivia:
            olivia.create_model("atlas", policy)
            olivia.push("atlas", "v1", folder, signature.read_bytes())
    return "atlas"


def submit(world: World, prompt: int = 1) -> str:
    job = {
        "model": jobs_model(world),
        "version": "v1",
        "kind": "query",
        "parameters": {"max_new_tokens": 4, "temperature": 0.7},
        "inputs": {"prompts": [[prompt, 2, 3]]},
    }
    with world.client("rosa") as rosa:
        return str(rosa.submit_job(job, "black-box probe for the eval report")["id"])


def job_of(world: World, job_id: str) -> dict[str, Any]:
    with world.client("admin") as admin:
        return admin.get_job(job_id)


def decide_job(person: Approver, job_id: str, decision: str = "approve", reason: str = "") -> str:
    person.page.goto(f"{person.origin}/console/jobs/{job_id}")
    if decision == "deny":
        person.page.get_by_label("Reason for denying").fill(reason)
        person.page.get_by_role("button", name="Deny with passkey").click()
    else:
        person.page.get_by_role("button", name="Approve with passkey").click()
    return person.outcome()


def test_jobs_are_approved_and_denied_with_passkeys(
    world: World, approvers: dict[str, Approver]
) -> None:
    denied, approved = submit(world, 1), submit(world, 2)
    alice, bob = approvers["alice"], approvers["bob"]
    alice.page.goto(f"{alice.origin}/console/jobs")
    card = alice.page.locator(".card", has=alice.page.locator(f"a[href='/console/jobs/{denied}']"))
    text = card.inner_text()
    assert "query on atlas@v1 for rosa" in text and "black-box probe" in text
    assert "0 bytes of 1 MiB used (0%), 1 MiB left" in text
    assert "0 of 2" in text
    alice.screenshot("jobs")

    assert decide_job(alice, denied) == "Status: pending"
    alice.screenshot("job")
    assert decide_job(bob, denied, "deny", "prompts not covered by the study") == "Status: denied"
    assert job_of(world, denied)["status"] == "denied"
    rows = bob.page.locator("table tbody tr").all_inner_texts()
    assert any("alice" in r and "approve" in r and "passkey" in r for r in rows)
    assert any("bob" in r and "deny" in r and "passkey" in r for r in rows)

    assert decide_job(alice, approved) == "Status: pending"
    assert decide_job(bob, approved) != "Status: pending"  # the second approval starts it
    assert job_of(world, approved)["status"] != "pending"
    bob.page.goto(f"{bob.origin}/console/jobs?status=done")
    assert f"/console/jobs/{denied}" in bob.page.content()

    # The passkey decisions on jobs verify offline against the logged passkeys, like requests'.
    with world.client("audrey") as auditor:
        report = verify_audit(auditor.audit_export(), auditor.audit_key()["log_key"])
    assert report.passkey_approvals >= 4


def test_stale_job_terms_and_replayed_answers_are_refused(
    world: World, approvers: dict[str, Approver]
) -> None:
    job_id = submit(world, 3)
    carol = approvers["carol"]
    carol.page.goto(f"{carol.origin}/console/jobs/{job_id}")
    digest = carol.page.locator("#request-digest").inner_text()
    stale = carol.fetch(
        f"/console/jobs/{job_id}/options",
        {"decision": "approve", "reason": "", "digest": "0" * 64},
    )
    assert stale["status"] == 409 and "changed after this page was loaded" in stale["body"]["error"]
    # An answer to a job's question offered as the answer for another job.
    other = submit(world, 4)
    with carol.page.expect_request("**/decision") as captured:
        carol.page.get_by_role("button", name="Approve with passkey").click()
    assert carol.outcome() == "Status: pending"
    carol.page.goto(f"{carol.origin}/console/jobs/{other}")
    other_digest = carol.page.locator("#request-digest").inner_text()
    assert other_digest != digest
    asked = carol.fetch(
        f"/console/jobs/{other}/options",
        {"decision": "approve", "reason": "", "digest": other_digest},
    )
    assert asked["status"] == 200
    replayed = carol.fetch(f"/console/jobs/{other}/decision", captured.value.post_data_json)
    assert replayed["status"] == 403 and "does not verify" in replayed["body"]["error"]
    assert job_of(world, other)["approvals"] == []
    # An approver's second decision on the same job, signed by their passkey, is refused.
    carol.page.goto(f"{carol.origin}/console/jobs/{job_id}")
    answer = carol.page.evaluate(
        """async ([id, digest]) => {
            const csrf = document.querySelector('meta[name="csrf-token"]').content;
            const options = await post(`/console/jobs/${id}/options`, csrf,
                {decision: "deny", reason: "changed my mind about it", digest});
            const credential = await assertion(options);
            try {
                await post(`/console/jobs/${id}/decision`, csrf,
                    {credential: credentialJSON(credential)});
                return "accepted";
            } catch (error) { return error.message; }
        }""",
        [job_id, digest],
    )
    assert "already decided this job" in answer
    assert [a["approver"] for a in job_of(world, job_id)["approvals"]] == ["carol"]


def test_the_release_gate_is_shown_beside_a_deploy_request(
    world: World, approvers: dict[str, Approver]
) -> None:
    keys = Keys(*(ec.generate_private_key(ec.SECP256R1()) for _ in range(4)))
    root = new_model(world, "gated-console", release_policy(keys))
    attach(
        world,
        "gated-console",
        evaluation(root, keys.evals),
        risk_assessment(root, keys.board),
        audit_statement(root, keys.auditor),
    )
    request = request_deploy(world, "gated-console")
    alice = approvers["alice"]
    alice.open_request(request["id"])
    gate = alice.page.locator("section:has(h2#gate)").inner_text()
    assert "Release gate: deploy" in gate
    assert "Every required attestation is present" in gate
    assert "bio misuse: low uplift after fine-tuning" in gate  # the assessment summary
    assert "uplift 0.05" in gate  # the evaluation results
    assert "third-party pre-deployment audit" in gate
    assert "safety-board" in gate and "acme-audit" in gate
    facts = alice.page.locator(".facts").first.inner_text()
    assert "deploy" in facts and "release gate passed: 3 attestations" in facts
    alice.screenshot("request-gated")
    # A plain pull shows no gate.
    with world.client("rita") as rita:
        pull = rita.request("gated-console", "v1", "pull for offline analysis", 3600, 1 << 20)
    alice.open_request(pull["id"])
    assert alice.page.locator("h2#gate").count() == 0


def test_new_pages_fit_a_phone_and_work_from_the_keyboard(
    world: World, approvers: dict[str, Approver]
) -> None:
    """At 375 px wide: axe-core finds nothing serious, nothing is wider than the screen; from
    the keyboard alone an approver reaches the jobs page and approves a job."""
    axe = axe_source()
    job_id = submit(world, 5)
    bob = approvers["bob"]
    bob.page.set_viewport_size(PHONE)
    try:
        gated = [r for r in _requests(world) if r.get("purpose") == "deploy"]
        paths = {
            "jobs-phone": "/console/jobs",
            "job-phone": f"/console/jobs/{job_id}",
            "jobs-done": "/console/jobs?status=done",
        }
        if gated:
            paths["request-gated-phone"] = f"/console/requests/{gated[0]['id']}"
        for name, path in paths.items():
            bob.page.goto(bob.origin + path)
            assert axe_violations(bob.page, axe) == [], name
            width = bob.page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], (name, width)
            bob.screenshot(name)

        # Keyboard only: Tab from the top of the requests page to the Jobs link, Enter.
        bob.page.goto(f"{bob.origin}/console/requests")
        assert _tab_to(bob, "Jobs") and bob.page.keyboard.press("Enter") is None
        bob.page.wait_for_url("**/console/jobs")
        assert _tab_to(bob, "query on atlas@v1 for rosa", href=f"/console/jobs/{job_id}")
        bob.page.keyboard.press("Enter")
        bob.page.wait_for_url(f"**/console/jobs/{job_id}")
        assert _tab_to(bob, "Approve with passkey")
        bob.page.keyboard.press("Enter")
        assert bob.outcome() == "Status: pending"
    finally:
        bob.page.set_viewport_size({"width": 1100, "height": 900})
    assert [a["approver"] for a in job_of(world, job_id)["approvals"]] == ["bob"]


def _requests(world: World) -> list[dict[str, Any]]:
    with world.client("admin") as admin:
        return admin.list_requests()


def _tab_to(person: Approver, text: str, href: str | None = None, presses: int = 60) -> bool:
    """Press Tab until the focused element is ``text`` (and links to ``href``); whether it was
    reached."""
    for _ in range(presses):
        person.page.keyboard.press("Tab")
        focused = person.page.evaluate(
            "[document.activeElement.textContent.trim(),"
            " document.activeElement.getAttribute('href')]"
        )
        if focused[0] == text and (href is None or focused[1] == href):
            return True
    return False
