"""A real browser for the console tests: Debian's Chromium driven by Playwright, one browser per
test module, one context (cookie jar) and one virtual WebAuthn authenticator (Chrome DevTools
protocol) per approver, so each approver has their own passkey and session.

``axe_source()`` gives axe-core's script, installed from the npm registry into a cache folder
the first time (``npm pack``), and injected into pages through DevTools (the console's
Content-Security-Policy, which stays on, refuses inline scripts).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, BrowserContext, CDPSession, Page

from weightvault.custody.approvals import ApprovalSigner
from weightvault.custody.console.signatures import sign_enrolment

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE_VERSION = "4.10.2"
ARTIFACTS = Path(os.environ.get("WEIGHTVAULT_CONSOLE_ARTIFACTS", tempfile.gettempdir())) / (
    "weightvault-console-screens"
)


def console_origin(service_url: str) -> str:
    """The console's origin for a service on ``http://127.0.0.1:PORT``."""
    return "http://localhost:" + service_url.rsplit(":", 1)[1]


@dataclass
class Approver:
    """One person at their own browser, with their own passkey."""

    name: str
    token: str
    origin: str
    context: BrowserContext
    page: Page
    cdp: CDPSession
    authenticator: str
    signer: ApprovalSigner | None = None

    def enrol_link(self, api_url: str) -> str:
        """A registration link, asked for with the token and signed with the approval key."""
        proof = ""
        if self.signer is not None:
            signed = sign_enrolment(self.name, self.signer, dt.datetime.now(dt.UTC))
            proof = base64.b64encode(signed).decode()
        response = httpx.post(
            f"{api_url}/v1/console/enrol",
            headers={"Authorization": f"Bearer {self.token}"},
            json={"proof": proof},
        )
        response.raise_for_status()
        return str(response.json()["url"])

    def register(self, api_url: str) -> None:
        self.page.goto(self.enrol_link(api_url))
        self.page.get_by_role("button", name="Create a passkey").click()
        self.page.wait_for_url("**/console/login")

    def login(self) -> None:
        self.page.goto(f"{self.origin}/console/login")
        self.page.get_by_role("button", name="Sign in with a passkey").click()
        self.page.wait_for_url("**/console/requests")

    def open_request(self, request_id: str) -> None:
        self.page.goto(f"{self.origin}/console/requests/{request_id}")

    def decide(self, request_id: str, decision: str = "approve", reason: str = "") -> str:
        """Approve or deny in the page; return the status badge once the decision shows, or
        ``error: ...`` with the page's message when it was refused."""
        self.open_request(request_id)
        if decision == "deny":
            self.page.get_by_label("Reason for denying").fill(reason)
            self.page.get_by_role("button", name="Deny with passkey").click()
        else:
            self.page.get_by_role("button", name="Approve with passkey").click()
        return self.outcome()

    def outcome(self) -> str:
        """After a decision's button: the badge once this approver's row shows, or the error."""
        mine = f"table tbody tr:has(td:text-is('{self.name}'))"
        self.page.wait_for_selector(f"{mine}, #status.error")
        error = self.page.locator("#status.error")
        if error.count():
            return f"error: {error.inner_text()}"
        return self.page.locator(".badge").inner_text()

    def credentials(self) -> list[dict[str, Any]]:
        result = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.authenticator})
        return list(result["credentials"])

    def session_cookie(self) -> str | None:
        for cookie in self.context.cookies():
            if cookie["name"] == "wv_session" and cookie["path"] == "/console":
                return str(cookie["value"])
        return None

    def fetch(self, path: str, body: dict[str, Any], csrf: str | None = None) -> dict[str, Any]:
        """POST JSON from inside the page (same origin, the session's cookie), with the page's
        CSRF token unless another is given; returns ``{"status", "body"}``."""
        return dict(
            self.page.evaluate(
                """async ([path, body, csrf]) => {
                    const token = csrf ?? document.querySelector('meta[name="csrf-token"]').content;
                    const r = await fetch(path, {method: "POST", credentials: "same-origin",
                        headers: {"Content-Type": "application/json", "X-CSRF-Token": token},
                        body: JSON.stringify(body)});
                    return {status: r.status, body: await r.json().catch(() => ({}))};
                }""",
                [path, body, csrf],
            )
        )

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"console-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def new_approver(
    browser: Browser,
    name: str,
    token: str,
    origin: str,
    *,
    signer: ApprovalSigner | None = None,
    viewport: dict[str, int] | None = None,
) -> Approver:
    context = browser.new_context(viewport=viewport or {"width": 1100, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    authenticator = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
            }
        },
    )["authenticatorId"]
    return Approver(name, token, origin, context, page, cdp, authenticator, signer)


def axe_source() -> str:
    """axe-core's ``axe.min.js``, fetched once from the npm registry into a cache folder."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "weightvault" / "npm"
    script = cache / f"axe-core-{AXE_VERSION}" / "axe.min.js"
    if not script.exists():
        npm = shutil.which("npm")
        assert npm is not None, "npm is needed once to fetch axe-core"
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as scratch:
            subprocess.run(
                [npm, "pack", f"axe-core@{AXE_VERSION}", "--silent"],
                cwd=scratch,
                check=True,
                capture_output=True,
                timeout=120,
            )
            tarball = next(Path(scratch).glob("axe-core-*.tgz"))
            with tarfile.open(tarball) as archive:
                member = archive.getmember("package/axe.min.js")
                extracted = archive.extractfile(member)
                assert extracted is not None
                data = extracted.read()
            script.parent.mkdir(parents=True, exist_ok=True)
            partial = script.with_suffix(".part")
            partial.write_bytes(data)
            partial.replace(script)
    return script.read_text()


def axe_violations(page: Page, source: str) -> list[dict[str, Any]]:
    """Serious and critical axe-core violations on the page as it is now (WCAG 2.x A/AA)."""
    page.evaluate(source)
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {runOnly: {type: "tag",
                values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}));
        }"""
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]
