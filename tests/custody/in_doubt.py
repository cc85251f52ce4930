"""Commits whose outcome the writer cannot know, made on purpose (for the audit trail's tests).

A real PostgreSQL crash cannot be timed to land between "the COMMIT is durable" and "the client
read the server's answer": the window is a few microseconds inside one round trip, so a test
that kills the server (or cuts the connection) gets a commit that plainly failed or plainly
succeeded almost every time (the load-and-fault runs saw the in-between 2 times in ~6,000
requests). :class:`CommitFaults` puts the fault exactly there instead, at the narrowest point:
the log store's write transaction commits for real and then raises, as a connection lost
during ``COMMIT`` does; or it raises just before the commit (a rollback), as a connection lost
earlier does. Everything else (the group committer, the trail, SQLite's durable commit) is
the real code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from weightvault.custody.audit import AuditTrail
from weightvault.tlog import TransparencyLog

__all__ = ["CommitFaults", "log_of"]


def log_of(trail: AuditTrail) -> TransparencyLog:
    """The trail's own log object (to read what landed, and to put faults under it)."""
    log: TransparencyLog = trail._log  # the test reaches under the trail
    return log


class CommitFaults:
    """The next write transactions of a trail's log fail as :attr:`plan` says, one word each:
    ``after`` (committed, then the error), ``before`` (the error, then a rollback), ``ok``."""

    def __init__(self, trail: AuditTrail) -> None:
        self.store = log_of(trail).store
        self._real: Callable[[], contextlib.AbstractContextManager[Any]] = self.store.writer
        self.plan: list[str] = []
        self.store.writer = self._writer  # type: ignore[method-assign]

    def _writer(self) -> contextlib.AbstractContextManager[Any]:
        return self._transaction(self.plan.pop(0) if self.plan else "ok")

    @contextlib.contextmanager
    def _transaction(self, mode: str) -> Iterator[Any]:
        with self._real() as writer:
            yield writer
            if mode == "before":
                raise ConnectionError("server closed the connection before COMMIT (simulated)")
        if mode == "after":
            raise ConnectionError("server closed the connection during COMMIT (simulated)")
