"""Alerts (first-time principal, unusual volume, budget exhaustion, repeated denials) reach the
audit log, the alerts list and a real webhook receiver; budgets hold per principal and per model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from tests.custody.helpers import World, build_world, start_service
from tests.servers import loopback_http_server

from weightvault.custody.client import VaultHTTPError
from weightvault.tlog.log import LogExport


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def alerting(tmp_path: Path) -> Iterator[tuple[World, list[dict[str, Any]]]]:
    received: ClassVar[list[dict[str, Any]]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    with loopback_http_server(handler) as base_url:
        service = start_service(
            tmp_path / "data", args=("--webhook", f"{base_url}/hook", "--principal-budget", "600K")
        )
        try:
            yield build_world(tmp_path, service), received
        finally:
            service.stop()


def _wait_for(received: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for alert in received:
            if alert.get("alert") == kind:  # the webhook also gets approval.needed notices
                return alert
        time.sleep(0.05)
    raise AssertionError(f"no {kind} alert; got {[a.get('alert') for a in received]}")


def test_alerts_reach_the_webhook_the_alert_list_and_the_audit_log(
    alerting: tuple[World, list[dict[str, Any]]], tmp_path: Path
) -> None:
    world, received = alerting
    grant_id = world.granted("rita")
    identity = world.people["rita"].identity
    with world.client("rita") as client:
        client.pull(grant_id, tmp_path / "one", identity)  # ~265 KB: first pull
        assert _wait_for(received, "principal.first_pull")["principal"] == "rita"
        client.pull(grant_id, tmp_path / "two", identity)  # crosses half of the 600 KB budget
        assert _wait_for(received, "volume.unusual")["principal"] == "rita"
        with pytest.raises(VaultHTTPError) as excinfo:
            client.pull(grant_id, tmp_path / "three", identity)
    assert excinfo.value.status == 403
    assert "principal byte budget is exhausted" in str(excinfo.value)
    exhausted = _wait_for(received, "budget.exhausted")
    assert exhausted["detail"]["budget"] == "principal"
    for _ in range(5):
        response = httpx.get(
            world.service.url + "/v1/whoami", headers={"Authorization": "Bearer wvt_bad"}
        )
        assert response.status_code == 401
    _wait_for(received, "denials.repeated")
    with world.client("audrey") as auditor:
        kinds = {a["kind"] for a in auditor.alerts()}
        export = auditor.audit_export()
    assert kinds >= {
        "principal.first_pull",
        "volume.unusual",
        "budget.exhausted",
        "denials.repeated",
    }
    logged = {json.loads(e)["action"] for e in LogExport.from_json(export).entries}
    assert {f"alert.{kind}" for kind in kinds} <= logged


def test_model_budget_caps_all_principals_together(
    alerting: tuple[World, list[dict[str, Any]]], tmp_path: Path
) -> None:
    world, received = alerting
    with world.client("olivia") as owner:
        policy = {
            "approvers": ["alice", "bob", "carol"],
            "approvals_required": 2,
            "signers": [],
            "egress_bytes_per_window": 400_000,
        }
        owner.set_policy("llama", policy)
    rita = world.granted("rita")
    ravi = world.granted("ravi")
    with world.client("rita") as client:
        client.pull(rita, tmp_path / "rita", world.people["rita"].identity)
    with world.client("ravi") as client, pytest.raises(VaultHTTPError) as excinfo:
        client.pull(ravi, tmp_path / "ravi", world.people["ravi"].identity)
    assert "model byte budget is exhausted" in str(excinfo.value)
    assert _wait_for(received, "budget.exhausted")["detail"]["budget"] == "model"
