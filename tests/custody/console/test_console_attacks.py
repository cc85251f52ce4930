"""Attacks on the approver console, in a real browser against the real service: a forged form
from another origin, approving one's own request, a replayed assertion, terms changed after the
page was loaded, session fixation, script in a justification. Each must be refused, and the
request or grant must be exactly as it was."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from tests.custody.console.browser import Approver
from tests.custody.helpers import World

XSS = (
    '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
    ' "quoted" & <b>bold</b> evaluation'
)


def request(world: World, who: str = "rita", justification: str = "safety evaluation run") -> str:
    with world.client(who) as client:
        return str(client.request("llama", "v1", justification, 3600, 1 << 20)["id"])


def status_of(world: World, request_id: str) -> dict[str, Any]:
    with world.client("admin") as admin:
        return admin.get_request(request_id)


@pytest.fixture(scope="module")
def attacker_site() -> Iterator[dict[str, Any]]:
    """A page on another origin (127.0.0.1, another port) that posts a form to the console."""
    state: dict[str, Any] = {"html": b""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(state["html"])

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        yield state
    finally:
        server.shutdown()


def test_a_form_from_another_origin_cannot_revoke(
    world: World, approvers: dict[str, Approver], attacker_site: dict[str, Any]
) -> None:
    grant_id = world.granted("ravi")
    alice = approvers["alice"]
    target = f"{alice.origin}/console/grants/{grant_id}/revoke"
    attacker_site["html"] = (
        f'<form id="f" method="post" action="{target}">'
        '<input name="csrf" value="guessed"></form>'
        '<script>document.getElementById("f").submit()</script>'
    ).encode()
    with alice.page.expect_navigation(url=target):
        alice.page.goto(attacker_site["url"])
    assert "Refused" in alice.page.content()  # SameSite=Strict: no session came with it
    assert status_of(world, grant_id)["status"] == "active"

    # Even with the session cookie in hand, the origin and the CSRF token are checked.
    alice.page.goto(f"{alice.origin}/console/grants")
    csrf = alice.page.locator('meta[name="csrf-token"]').get_attribute("content")
    cookie = {"wv_session": alice.session_cookie() or ""}
    url = f"{world.service.url}/console/grants/{grant_id}/revoke"
    forged = httpx.post(
        url, data={"csrf": csrf}, cookies=cookie, headers={"Origin": "http://evil.example"}
    )
    assert forged.status_code == 403 and "cross-origin" in forged.text
    no_token = httpx.post(url, data={}, cookies=cookie, headers={"Origin": alice.origin})
    assert no_token.status_code == 403 and "CSRF" in no_token.text
    cross_site = httpx.post(
        url,
        data={"csrf": csrf},
        cookies=cookie,
        headers={"Origin": alice.origin, "Sec-Fetch-Site": "cross-site"},
    )
    assert cross_site.status_code == 403
    assert status_of(world, grant_id)["status"] == "active"
    # The same request from the console's own origin with the token goes through.
    done = httpx.post(url, data={"csrf": csrf}, cookies=cookie, headers={"Origin": alice.origin})
    assert done.status_code == 303
    assert status_of(world, grant_id)["status"] == "revoked"


def test_an_approver_cannot_approve_their_own_request(
    world: World, approvers: dict[str, Approver]
) -> None:
    request_id = request(world, "carol")  # carol is an approver and a reader
    carol = approvers["carol"]
    carol.open_request(request_id)
    assert carol.page.get_by_role("button", name="Approve with passkey").count() == 0
    assert "your own request" in carol.page.content()
    digest = carol.page.locator("#request-digest").inner_text()
    refused = carol.fetch(
        f"/console/requests/{request_id}/options",
        {"decision": "approve", "reason": "", "digest": digest},
    )
    assert refused["status"] == 403 and "self-approval" in refused["body"]["error"]
    assert status_of(world, request_id)["approvals"] == []


def test_a_replayed_assertion_is_refused(world: World, approvers: dict[str, Approver]) -> None:
    first, second = request(world), request(world)
    alice = approvers["alice"]
    alice.open_request(first)
    with alice.page.expect_request("**/decision") as captured:
        alice.page.get_by_role("button", name="Approve with passkey").click()
    assert alice.outcome() == "Status: pending"
    body = captured.value.post_data_json
    # The same answer again: its ceremony is spent.
    again = alice.fetch(f"/console/requests/{first}/decision", body)
    assert again["status"] == 409 and "under way" in again["body"]["error"]
    # The answer to the first request's challenge, offered for the second request's.
    alice.open_request(second)
    digest = alice.page.locator("#request-digest").inner_text()
    asked = alice.fetch(
        f"/console/requests/{second}/options",
        {"decision": "approve", "reason": "", "digest": digest},
    )
    assert asked["status"] == 200
    replayed = alice.fetch(f"/console/requests/{second}/decision", body)
    assert replayed["status"] == 403 and "does not verify" in replayed["body"]["error"]
    assert status_of(world, second)["approvals"] == []
    assert [a["approver"] for a in status_of(world, first)["approvals"]] == ["alice"]


def _set_budget(world: World, request_id: str, budget: int) -> None:
    """What an insider with database access (or a buggy amendment) would do."""
    with sqlite3.connect(world.service.data_dir / "custody.db", timeout=30) as db:
        db.execute("UPDATE grant_requests SET byte_budget = ? WHERE id = ?", (budget, request_id))


def test_terms_changed_after_the_page_loaded_are_not_signed(
    world: World, approvers: dict[str, Approver]
) -> None:
    request_id = request(world)
    bob = approvers["bob"]
    bob.open_request(request_id)
    _set_budget(world, request_id, 1 << 40)  # 1 MiB became 1 TiB while bob was reading
    bob.page.get_by_role("button", name="Approve with passkey").click()
    outcome = bob.outcome()
    assert outcome.startswith("error:") and "changed after this page was loaded" in outcome
    assert status_of(world, request_id)["approvals"] == []

    # Changed between the question and the passkey's answer: the statement no longer binds.
    bob.open_request(request_id)
    digest = bob.page.locator("#request-digest").inner_text()
    bob.page.evaluate(
        """async ([id, digest]) => {
            const csrf = document.querySelector('meta[name="csrf-token"]').content;
            window.wvOptions = await post(`/console/requests/${id}/options`, csrf,
                {decision: "approve", reason: "", digest});
        }""",
        [request_id, digest],
    )
    _set_budget(world, request_id, 1 << 41)
    answer = bob.page.evaluate(
        """async (id) => {
            const csrf = document.querySelector('meta[name="csrf-token"]').content;
            const credential = await assertion(window.wvOptions);
            try {
                await post(`/console/requests/${id}/decision`, csrf,
                    {credential: credentialJSON(credential)});
                return "accepted";
            } catch (error) { return error.message; }
        }""",
        request_id,
    )
    assert "approval is for another request (byte_budget differs)" in answer
    assert status_of(world, request_id)["approvals"] == []


def test_session_fixation_is_refused(world: World, approvers: dict[str, Approver]) -> None:
    bob = approvers["bob"]
    planted = "attacker-chosen-session-value-0123456789abcdef"
    # The attacker's own page cookie, from loading the sign-in page themselves.
    page_cookie = httpx.get(f"{bob.origin}/console/login").cookies["wv_page"]
    bob.page.goto(f"{bob.origin}/console/requests")
    bob.page.get_by_role("button", name="Sign out").click()
    bob.page.wait_for_url("**/console/login")
    bob.context.add_cookies(  # for "/", so the browser keeps them beside the console's own
        [
            {"name": name, "value": value, "domain": "localhost", "path": "/"}
            for name, value in (("wv_session", planted), ("wv_page", page_cookie))
        ]
    )
    bob.login()
    issued = bob.session_cookie()
    assert issued is not None and issued not in (planted, page_cookie)
    for value in (planted, page_cookie):
        attacker = httpx.get(
            f"{world.service.url}/console/requests",
            cookies={"wv_session": value},
            headers={"Host": bob.origin.removeprefix("http://")},
        )
        assert attacker.status_code == 303 and attacker.headers["location"] == "/console/login"
    mine = httpx.get(
        f"{world.service.url}/console/requests",
        cookies={"wv_session": issued},
        headers={"Host": bob.origin.removeprefix("http://")},
    )
    assert mine.status_code == 200 and "Signed in as" in mine.text


def test_script_in_a_justification_is_shown_as_text(
    world: World, approvers: dict[str, Approver]
) -> None:
    request_id = request(world, justification=XSS)
    alice = approvers["alice"]
    for path in (f"/console/requests/{request_id}", "/console/requests"):
        alice.page.goto(alice.origin + path)
        assert alice.page.evaluate("window.__xss") is None
        assert alice.page.locator(".justification img, .justification script").count() == 0
        assert XSS in alice.page.locator(".justification").first.inner_text()
    alice.screenshot("xss-shown-as-text")


def test_decisions_need_a_session(world: World, approvers: dict[str, Approver]) -> None:
    request_id = request(world)
    origin = approvers["alice"].origin
    answer = httpx.post(
        f"{world.service.url}/console/requests/{request_id}/options",
        json={"decision": "approve", "reason": "", "digest": "0" * 64},
        headers={"Origin": origin},
    )
    assert answer.status_code == 401
    assert status_of(world, request_id)["approvals"] == []


def test_a_revoked_passkey_signs_in_no_more(world: World, approvers: dict[str, Approver]) -> None:
    carol = approvers["carol"]
    with world.client("carol") as client:
        mine = client.passkeys()
    assert [p["principal"] for p in mine] == ["carol"] and mine[0]["revoked_at"] is None
    env = {**os.environ, "WEIGHTVAULT_URL": world.service.url}
    env["WEIGHTVAULT_TOKEN"] = world.people["admin"].token
    command = [sys.executable, "-m", "weightvault", "console"]
    revoked = subprocess.run(  # by the first 16 hex digits, as 'console passkeys' shows them
        [*command, "revoke", mine[0]["key_id"][:16]], env=env, capture_output=True, text=True
    )
    assert revoked.stdout == f"revoked passkey {mine[0]['key_id'][:16]} of carol\n", revoked.stderr
    listed = subprocess.run([*command, "passkeys"], env=env, capture_output=True, text=True)
    line = next(x for x in listed.stdout.splitlines() if x.startswith(mine[0]["key_id"][:16]))
    assert " carol  ES256  registered " in line and "  revoked 20" in line
    again = subprocess.run([*command, "revoke", mine[0]["key_id"]], env=env, capture_output=True)
    assert again.returncode == 2 and b"revoked already" in again.stderr
    carol.page.goto(f"{carol.origin}/console/requests")
    assert carol.page.url.endswith("/console/login")  # the session ended with the passkey
    carol.page.get_by_role("button", name="Sign in with a passkey").click()
    carol.page.wait_for_selector("#status.error")
    assert "unknown or revoked passkey" in carol.page.locator("#status").inner_text()
