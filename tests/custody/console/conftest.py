"""Fixtures for the console tests: one Chromium per module, approvers with passkeys, signed in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright
from tests.custody.console.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Approver,
    console_origin,
    new_approver,
)
from tests.custody.helpers import World


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
        person = new_approver(browser, name, world.people[name].token, origin)
        person.register(world.service.url)
        person.login()
        people[name] = person
    try:
        yield people
    finally:
        for person in people.values():
            person.context.close()
