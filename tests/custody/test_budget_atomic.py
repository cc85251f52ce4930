"""Budget debits are single conditional statements: many threads in several processes spend one
grant's, one principal's and one model's budget at once, on a real PostgreSQL and on SQLite, and
the bytes spent equal the budget to the byte: never more (no overspend), never less (no debit
lost or counted twice).

Each worker debits random sizes until refused, then halves the largest size it asks, down to
single bytes until refused: when the last worker stops, the budget is full to the byte, so
``spent == budget`` is exact, not a bound.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from tests.postgres import PostgresServer

from weightvault.custody.budgets import spend, window_used
from weightvault.custody.store import (
    Egress,
    EgressTotal,
    GrantRequest,
    Store,
    core_table,
)

BUDGET = 60_000
HUGE = 1 << 50
WINDOW = dt.timedelta(days=1)
NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)

# scenario -> the grants (id, requester, model), and the budget that binds: (grant, principal,
# model); two grants share the principal or the model where a window budget binds, so two
# different grant rows race on one window counter.
SCENARIOS = {
    "grant": ([("g1", "rita", "m1")], (BUDGET, HUGE, HUGE)),
    "principal": ([("g1", "rita", "m1"), ("g2", "rita", "m2")], (HUGE, BUDGET, HUGE)),
    "model": ([("g1", "rita", "m1"), ("g2", "sam", "m1")], (HUGE, HUGE, BUDGET)),
}


def _grant(grant_id: str, requester: str, model: str, budget: int) -> GrantRequest:
    return GrantRequest(
        id=grant_id,
        model=model,
        version="v1",
        requester=requester,
        justification="load test",
        duration_s=3600,
        byte_budget=budget,
        created_at=NOW,
        request_expires_at=NOW + dt.timedelta(hours=1),
        status="active",
        approvals_required=2,
        activated_at=NOW,
        grant_expires_at=NOW + dt.timedelta(days=2),
        bytes_used=0,
    )


def _setup(url: str, scenario: str) -> Store:
    store = Store(url)
    store.create_schema()
    grants, (grant_budget, _p, _m) = SCENARIOS[scenario]
    with store.session() as session:
        for grant_id, requester, model in grants:
            session.add(_grant(grant_id, requester, model, grant_budget))
    return store


def _worker(store: Store, scenario: str, seed: int, clock: dt.datetime) -> tuple[int, int]:
    """Debit until refused at one byte; the bytes it was granted, and its debits."""
    grants, (_g, principal_budget, model_budget) = SCENARIOS[scenario]
    rng = random.Random(seed)
    since = clock - WINDOW
    spent = debits = 0
    size_max = 3000
    while True:
        grant_id, requester, model = grants[rng.randrange(len(grants))]
        windows = (("principal", requester, principal_budget), ("model", model, model_budget))
        nbytes = rng.randint(1, size_max)
        with store.session() as session:
            debit = spend(session, grant_id, nbytes, clock, since, windows)
        if debit.refused is None:
            spent += nbytes
            debits += 1
        elif size_max > 1:
            size_max //= 2  # the budget is nearly full: fill it with smaller debits
        else:
            return spent, debits


def _hammer(url: str, scenario: str, threads: int, seed: int) -> tuple[int, int]:
    """One process: ``threads`` workers on their own connections (run in child processes)."""
    store = Store(url)
    try:
        with ThreadPoolExecutor(threads) as pool:
            results = list(
                pool.map(
                    lambda i: _worker(store, scenario, seed * 1000 + i, NOW),
                    range(threads),
                )
            )
        return sum(r[0] for r in results), sum(r[1] for r in results)
    finally:
        store.dispose()


def _check(store: Store, scenario: str, spent: int) -> None:
    grants, _budgets = SCENARIOS[scenario]
    assert spent == BUDGET  # to the byte: nothing over, nothing lost
    with store.session(read_only=True) as session:
        rows = int(session.scalar(select(func.coalesce(func.sum(Egress.nbytes), 0))) or 0)
        assert rows == BUDGET  # one egress row per successful debit
        used = dict(session.execute(select(GrantRequest.id, GrantRequest.bytes_used)).all())
        assert sum(used.values()) == BUDGET  # each grant's counter agrees with its rows
        for grant_id, _requester, _model in grants:
            by_grant = session.scalar(
                select(func.coalesce(func.sum(Egress.nbytes), 0)).where(Egress.grant_id == grant_id)
            )
            assert used[grant_id] == by_grant
        binding = {"grant": None, "principal": "rita", "model": "m1"}[scenario]
        if binding is not None:
            assert window_used(session, scenario, binding, NOW - WINDOW) == BUDGET


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_many_processes_spend_a_postgres_budget_to_the_byte(
    postgres: PostgresServer, scenario: str
) -> None:
    url = postgres.create_schema()
    store = _setup(url, scenario)
    try:
        with ProcessPoolExecutor(3, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_hammer, url, scenario, 6, seed) for seed in range(3)]
            results = [f.result(timeout=120) for f in futures]
        spent = sum(r[0] for r in results)
        assert sum(r[1] for r in results) > 3 * 6  # every worker got some debits through
        _check(store, scenario, spent)
    finally:
        store.dispose()


def test_many_threads_spend_a_sqlite_budget_to_the_byte(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'custody.db'}"
    for scenario in sorted(SCENARIOS):
        (tmp_path / "custody.db").unlink(missing_ok=True)
        store = _setup(url, scenario)
        try:
            spent, _debits = _hammer(url, scenario, 8, 7)
            _check(store, scenario, spent)
        finally:
            store.dispose()


def test_a_refused_window_undoes_the_grant_debit(tmp_path: Path) -> None:
    store = _setup(f"sqlite:///{tmp_path / 'c.db'}", "principal")
    windows = (("principal", "rita", 100), ("model", "m1", HUGE))
    with store.session() as session:
        assert spend(session, "g1", 60, NOW, NOW - WINDOW, windows).refused is None
        refused = spend(session, "g1", 41, NOW, NOW - WINDOW, windows)
        assert refused.refused == "principal"
    with store.session(read_only=True) as session:
        assert session.get(GrantRequest, "g1").bytes_used == 60  # type: ignore[union-attr]
        assert window_used(session, "principal", "rita", NOW - WINDOW) == 60
        assert window_used(session, "model", "m1", NOW - WINDOW) == 60
    store.dispose()


def test_windows_slide_and_count_history_and_orm_egress(tmp_path: Path) -> None:
    store = _setup(f"sqlite:///{tmp_path / 'c.db'}", "principal")
    old = NOW - dt.timedelta(hours=30)  # outside the window
    recent = NOW - dt.timedelta(hours=2)
    with store.session() as session:
        # Rows written before the counters existed: counted when the counter is made.
        for when, nbytes in ((old, 500), (recent, 30)):
            session.execute(
                insert(core_table(Egress)).values(
                    time=when, principal="rita", model="m1", grant_id="g1", nbytes=nbytes
                )
            )
    windows = (("principal", "rita", 100), ("model", "m1", HUGE))
    with store.session() as session:
        first = spend(session, "g1", 70, NOW, NOW - WINDOW, windows)
        assert first.refused is None and first.window_before["principal"] == 30
        assert spend(session, "g1", 1, NOW, NOW - WINDOW, windows).refused == "principal"
        total = session.get(EgressTotal, ("principal", "rita"))
        assert total is not None and total.total == 600  # history included
    with store.session() as session:
        # Egress another room records through the ORM (a job's result) counts too.
        session.add(Egress(time=NOW, principal="rita", model="m2", grant_id="j1", nbytes=5))
    later = NOW + dt.timedelta(hours=23)  # the 30 bytes of ``recent`` have left the window
    with store.session() as session:
        assert window_used(session, "principal", "rita", later - WINDOW) == 75
        assert spend(session, "g1", 25, later, later - WINDOW, windows).refused is None
        assert spend(session, "g1", 1, later, later - WINDOW, windows).refused == "principal"
    store.dispose()


def test_concurrent_first_debits_agree_on_one_counter(postgres: PostgresServer) -> None:
    """Two replicas making a subject's counter at once: one row, every byte counted once."""
    url = postgres.create_schema()
    store = _setup(url, "model")
    barrier = threading.Barrier(8)
    windows_for = {"g1": "rita", "g2": "sam"}

    def first(i: int) -> bool:
        grant_id = ("g1", "g2")[i % 2]
        windows = (("principal", windows_for[grant_id], HUGE), ("model", "m1", HUGE))
        barrier.wait()
        with store.session() as session:
            return spend(session, grant_id, 10, NOW, NOW - WINDOW, windows).refused is None

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(first, range(8)))
    with store.session(read_only=True) as session:
        assert window_used(session, "model", "m1", NOW - WINDOW) == 80
    store.dispose()
