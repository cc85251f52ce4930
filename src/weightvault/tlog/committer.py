"""Group commit: many concurrent single appends, few durable transactions."""

from __future__ import annotations

import threading

from weightvault.tlog.log import TransparencyLog

__all__ = ["GroupCommitter"]


class GroupCommitter:
    """Batches concurrent single appends into shared durable commits (group commit).

    A service appends one audit event per request and must not answer before the event is
    durable. One fsync per event caps throughput at the disk's fsync rate; here the first
    caller to arrive becomes the leader and commits everything queued (up to ``max_batch``) in
    one transaction, while the others wait for their index. Every :meth:`append` still returns
    only after its entry is committed.

    A leader commits one batch (its own entry is in it) and then hands the lead to the oldest
    waiting caller, whose batch holds everything that arrived meanwhile: under steady load no
    caller keeps committing for the others, so no request waits for more than its own batch
    and the one before it.
    """

    def __init__(self, log: TransparencyLog, *, max_batch: int = 1000) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.log = log
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[_PendingAppend] = []
        self._leader_active = False
        self.commits = 0
        """Transactions committed so far (for tests and metrics)."""

    def append(self, entry: bytes) -> int:
        """Append ``entry`` durably; returns its index."""
        slot = _PendingAppend(bytes(entry))
        with self._lock:
            self._pending.append(slot)
            lead = not self._leader_active
            if lead:
                self._leader_active = True
        if not lead:
            slot.wake.wait()  # committed, or handed the lead
        if not slot.finished:
            self._lead()
        if slot.error is not None:
            raise slot.error
        return slot.index

    def _lead(self) -> None:
        """Commit the oldest pending entries (the leader's own first), then hand the lead on."""
        with self._lock:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
        try:
            first = self.log.append_many([slot.entry for slot in batch])
        except BaseException as exc:  # every waiter learns why its append failed
            for slot in batch:
                slot.finish(error=exc)
            self._hand_on()
            raise
        self.commits += 1
        for offset, slot in enumerate(batch):
            slot.finish(index=first + offset)
        self._hand_on()

    def _hand_on(self) -> None:
        """Wake the oldest waiting caller to lead the next batch, or stand down."""
        with self._lock:
            if self._pending:
                self._pending[0].wake.set()
            else:
                self._leader_active = False


class _PendingAppend:
    __slots__ = ("entry", "error", "finished", "index", "wake")

    def __init__(self, entry: bytes) -> None:
        self.entry = entry
        self.index = -1
        self.error: BaseException | None = None
        self.finished = False
        self.wake = threading.Event()
        """Set when the entry is committed (or failed), or when its caller is to lead."""

    def finish(self, *, index: int = -1, error: BaseException | None = None) -> None:
        self.index = index
        self.error = error
        self.finished = True
        self.wake.set()
