"""Fixtures for the console tests: the service with a webhook receiver, one Chromium per module,
approvers with passkeys, signed in."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.sync_api import Browser, sync_playwright
from tests.custody.console.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Approver,
    console_origin,
    new_approver,
)
from tests.custody.helpers import World, build_world, start_service


@pytest.fixture(scope="module")
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP receiver: (its URL, the JSON bodies POSTed to it so far)."""
    received: list[dict[str, Any]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, webhook: tuple[str, list[dict[str, Any]]]
) -> Iterator[World]:
    """The custody tests' world, its service posting alerts and approval notices to ``webhook``."""
    root = tmp_path_factory.mktemp("console")
    service = start_service(root / "data", args=("--webhook", webhook[0]))
    try:
        yield build_world(root, service)
    finally:
        service.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def approvers(world: World, browser: Browser) -> Iterator[dict[str, Approver]]:
    """alice, bob and carol (approver and reader), each with a passkey, signed in."""
    origin = console_origin(world.service.url)
    people = {}
    for name in ("alice", "bob", "carol"):
        who = world.people[name]
        person = new_approver(browser, name, who.token, origin, signer=who.signer)
        person.register(world.service.url)
        person.login()
        people[name] = person
    try:
        yield people
    finally:
        for person in people.values():
            person.context.close()
