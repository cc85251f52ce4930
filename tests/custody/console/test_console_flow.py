"""The approver console end to end, in a real browser: passkey registration and sign-in, a
request filed from the command line approved in the browser by two approvers and pulled, a
denial, a revocation, and the audit log checked offline (every passkey approval verified
against the public key logged at its registration)."""

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
from tests.custody.console.browser import Approver, axe_source, axe_violations, new_approver
from tests.custody.helpers import World

from weightvault.custody.audit import verify_audit
from weightvault.custody.client.errors import VaultHTTPError
from weightvault.custody.console.signatures import sign_enrolment


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
    carol.page.set_viewport_size({"width": 390, "height": 844})
    for name, path in pages.items():
        carol.page.goto(carol.origin + path)
        assert axe_violations(carol.page, axe) == [], name
        width = carol.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (name, width)
        if not name.endswith("-phone"):
            carol.page.set_viewport_size({"width": 1100, "height": 900})
        carol.screenshot(name)
        carol.page.set_viewport_size({"width": 390, "height": 844})
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
