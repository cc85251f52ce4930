"""The custody rooms' small parts, without a server: the one grant authorization function, HTTP
Range parsing, alert events, the service KEK, and the import graph (no cycles, no private doors).
"""

from __future__ import annotations

import ast
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from weightvault.crypt import KeyringKey, X25519Identity
from weightvault.custody.alerts import AlertEvent, AlertSink
from weightvault.custody.egress import Pull
from weightvault.custody.errors import AuthenticationError, NotFoundError
from weightvault.custody.grants import GrantUse, authorize_grant_use
from weightvault.custody.http.ranges import RangeNotSatisfiable, parse_range, pull_headers
from weightvault.custody.kek import ServiceKek
from weightvault.custody.store import Alert, Store
from weightvault.errors import FormatError, PolicyError, UsageError

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(hours=1)
CUSTODY = Path(__file__).resolve().parents[2] / "src" / "weightvault" / "custody"

# (use, in_flight, expected error class or None, message)
AUTHORIZATION_CASES = [
    (GrantUse("active", LATER), False, None, ""),
    (GrantUse("active", LATER), True, None, ""),
    (GrantUse(None, None), False, NotFoundError, "grant not found"),
    (GrantUse(None, None), True, PolicyError, "grant was revoked"),
    (GrantUse("pending", None), False, PolicyError, "grant is pending, not active"),
    (GrantUse("revoked", LATER), False, PolicyError, "grant is revoked, not active"),
    (GrantUse("denied", None), True, PolicyError, "grant was revoked"),
    (GrantUse("active", NOW), False, PolicyError, "grant has expired"),
    (GrantUse("active", None), True, PolicyError, "grant has expired"),
    (
        GrantUse("active", LATER, token_valid=False),
        True,
        AuthenticationError,
        "token was revoked during the transfer",
    ),
    (
        GrantUse("active", LATER, principal_enabled=False),
        True,
        AuthenticationError,
        "principal was disabled during the transfer",
    ),
    # The grant decides first: a revoked grant says so even when the token is gone too.
    (GrantUse("revoked", LATER, token_valid=False), True, PolicyError, "grant was revoked"),
    (GrantUse("active", NOW, principal_enabled=False), True, PolicyError, "grant has expired"),
]


@pytest.mark.parametrize(("use", "in_flight", "error", "message"), AUTHORIZATION_CASES)
def test_the_one_grant_check(
    use: GrantUse, in_flight: bool, error: type[Exception] | None, message: str
) -> None:
    if error is None:
        authorize_grant_use(use, NOW, in_flight=in_flight)
        return
    with pytest.raises(error) as excinfo:
        authorize_grant_use(use, NOW, in_flight=in_flight)
    assert type(excinfo.value) is error
    assert str(excinfo.value) == message


def test_the_grant_check_is_written_once() -> None:
    """On the service side, only grants.py compares a grant's expiry (models.py lists who holds
    access now, for the inventory): egress decides through authorize_grant_use alone.

    A grant's expiry is ``grant_expires_at`` on the row or ``expires_at`` on a grant (or its
    ``use``); a job request's or an approval statement's own ``expires_at`` is another clock.
    budgets.py guards the spending ``UPDATE`` with the grant's status and expiry (so a grant
    revoked or expired after it was authorized spends nothing); when that guard refuses, egress
    asks authorize_grant_use for the refusal, so the decision is still made in one place."""

    def grant_expiry(side: ast.expr) -> bool:
        if not isinstance(side, ast.Attribute):
            return False
        if side.attr == "grant_expires_at":
            return True
        owner = side.value
        return side.attr == "expires_at" and isinstance(owner, ast.Name) and (
            owner.id == "use" or "grant" in owner.id
        )

    readers = set()
    for path in sorted(CUSTODY.rglob("*.py")):
        if "client" in path.relative_to(CUSTODY).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare) and any(
                grant_expiry(side) for side in (node.left, *node.comparators)
            ):
                readers.add(path.name)
    assert readers == {"grants.py", "models.py", "budgets.py"}


@pytest.mark.parametrize(
    ("header", "total", "expected"),
    [
        ("bytes=0-", 10, (0, 10)),
        ("bytes=3-", 10, (3, 10)),
        ("bytes=3-5", 10, (3, 6)),
        ("bytes=3-99", 10, (3, 10)),
        ("bytes=9-9", 10, (9, 10)),
    ],
)
def test_a_range_header_names_a_half_open_span(
    header: str, total: int, expected: tuple[int, int]
) -> None:
    assert parse_range(header, total) == expected


MALFORMED_RANGES = [
    "bytes 0-",
    "items=0-",
    "bytes=0-1,3-4",
    "bytes=5",
    "bytes=-5",
    "bytes=\u00b2-",
    "bytes=0-\u00b9",
    "bytes=" + "1" * 100 + "-",
]


@pytest.mark.parametrize("header", MALFORMED_RANGES)
def test_a_malformed_range_header_is_a_format_error(header: str) -> None:
    with pytest.raises(FormatError, match=r"^Range: "):
        parse_range(header, 10)


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=11-20", "bytes=5-4"])
def test_a_range_past_the_end_is_not_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as excinfo:
        parse_range(header, 10)
    assert excinfo.value.total == 10


def test_pull_headers_percent_encode_the_path_and_name_the_range() -> None:
    pull = Pull(path="dir/模型 1.json", start=3, end=6, total=10, body=iter(()))
    whole = pull_headers(pull, ranged=False)
    assert whole["Content-Length"] == "3"
    assert whole["X-Weightvault-Path"] == "dir/%E6%A8%A1%E5%9E%8B%201.json"
    assert "Content-Range" not in whole
    assert pull_headers(pull, ranged=True)["Content-Range"] == "bytes 3-5/10"


def test_an_alert_is_a_row_and_an_audit_entry(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'custody.db'}")
    store.create_schema()
    logged: list[dict[str, Any]] = []
    sink = AlertSink(logged.append, None, replica="r1")
    event = AlertEvent("volume.unusual", NOW, principal="rita", model="m", detail={"n": 1})
    with store.session() as session:
        sink.emit(session, event)
    with store.session(read_only=True) as session:
        rows = session.scalars(select(Alert)).all()
        assert [(a.kind, a.principal, a.model, a.detail) for a in rows] == [
            ("volume.unusual", "rita", "m", '{"n": 1}')
        ]
    assert len(logged) == 1
    assert logged[0]["action"] == "alert.volume.unusual"
    assert logged[0]["detail"] == {"model": "m", "n": 1}
    assert logged[0]["time"] == "2030-01-01T12:00:00Z"
    sink.close()
    store.dispose()
    with pytest.raises(ValueError, match="unknown alert kind"):
        AlertEvent("made.up", NOW)


def test_an_alert_that_cannot_be_logged_is_not_recorded(tmp_path: Path) -> None:
    """The audit append fails: the alert's transaction fails with it (fail closed)."""
    store = Store(f"sqlite:///{tmp_path / 'custody.db'}")
    store.create_schema()

    def unwritable(_event: dict[str, Any]) -> None:
        raise OSError("log is gone")

    sink = AlertSink(unwritable, None)
    with pytest.raises(OSError), store.session() as session:
        sink.emit(session, AlertEvent("denials.repeated", NOW))
    with store.session(read_only=True) as session:
        assert session.scalars(select(Alert)).all() == []
    store.dispose()


def test_the_service_kek_must_be_able_to_wrap() -> None:
    kek = ServiceKek(KeyringKey(os.urandom(32)))
    dek = os.urandom(32)
    assert kek.unwrap(kek.wrap(dek)) == dek
    with pytest.raises(UsageError, match="cannot wrap keys"):
        ServiceKek(X25519Identity.generate())


def test_alerts_do_not_import_the_service() -> None:
    code = (
        "import sys, weightvault.custody.alerts, weightvault.custody.egress;"
        "assert 'weightvault.custody.service' not in sys.modules, 'service imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_custody_imports_no_private_name_of_another_package() -> None:
    """Only weightvault's shared root helpers (weightvault._b64, ._json, ._fs, ._interrupt) and
    custody's own private modules may be imported by a leading-underscore name."""
    offenders = []
    for path in sorted(CUSTODY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] != "weightvault" or len(parts) < 3:
                    continue  # weightvault._b64 and friends are the shared root layer
                if parts[1] == "custody":
                    continue
                if any(part.startswith("_") for part in parts[2:]):
                    offenders.append(f"{path.relative_to(CUSTODY)}: {name}")
    assert offenders == []
