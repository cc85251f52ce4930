"""Incident signals: what raises them, and that they reach the alert list and the audit log."""

from __future__ import annotations

import datetime as dt

import pytest
from tests.incident.conftest import History

from weightvault.custody.alerts import INCIDENT_SIGNALS, crossed, outside_hours


@pytest.mark.parametrize(
    ("hour", "hours", "outside"),
    [
        (7, (8, 18), True),
        (8, (8, 18), False),
        (17, (8, 18), False),
        (18, (8, 18), True),
        (23, (22, 6), False),
        (3, (22, 6), False),
        (12, (22, 6), True),
        (3, None, False),
    ],
)
def test_outside_hours(hour: int, hours: tuple[int, int] | None, outside: bool) -> None:
    when = dt.datetime(2026, 12, 6, hour, 30, tzinfo=dt.UTC)
    assert outside_hours(when, hours) is outside


def test_crossed_fires_once_at_the_threshold() -> None:
    assert crossed(70, 80, 100, 0.8) and crossed(0, 100, 100, 0.8)
    assert not crossed(80, 90, 100, 0.8)  # already past
    assert not crossed(10, 79, 100, 0.8)
    assert not crossed(0, 10, 0, 0.8)  # no budget


def test_signals_reach_the_alert_list_with_their_facts(history: History) -> None:
    with history.world.client("audrey") as auditor:
        alerts = auditor.alerts()
    by_kind: dict[str, list[dict[str, object]]] = {}
    for alert in alerts:
        by_kind.setdefault(str(alert["kind"]), []).append(alert)
    assert set(INCIDENT_SIGNALS) <= set(by_kind)
    (fraction,) = by_kind["egress.budget_fraction"]
    assert fraction["principal"] == "rita"
    assert fraction["detail"]["grant_id"] == history.grants["A"]  # type: ignore[index]
    off_hours = {a["detail"]["grant_id"] for a in by_kind["pull.off_hours"]}  # type: ignore[index]
    assert off_hours == {history.grants["A"], history.grants["C"]}  # once per grant, not per file
    (pair,) = by_kind["approvals.same_pair"]
    assert pair["detail"]["approvers"] == ["alice", "bob"]  # type: ignore[index]
    assert pair["detail"]["grant_id"] == history.grants["D"]  # type: ignore[index]
    (signature,) = by_kind["upload.signature_failed"]
    assert signature["detail"]["version"] == "v2"  # type: ignore[index]
    (scan,) = by_kind["scan.finding"]
    assert scan["detail"]["version"] == "v4" and "dangerous" in str(scan["detail"])  # type: ignore[index]
