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
        if lead:
            self._lead()
        slot.done.wait()
        if slot.error is not None:
            raise slot.error
        return slot.index

    def _lead(self) -> None:
        while True:
            with self._lock:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                if not batch:
                    self._leader_active = False
                    return
            try:
                first = self.log.append_many([slot.entry for slot in batch])
            except BaseException as exc:  # every waiter learns why its append failed
                for slot in batch:
                    slot.error = exc
                    slot.done.set()
                if not isinstance(exc, Exception):
                    with self._lock:
                        self._leader_active = False
                    raise
                continue
            self.commits += 1
            for offset, slot in enumerate(batch):
                slot.index = first + offset
                slot.done.set()


class _PendingAppend:
    __slots__ = ("done", "entry", "error", "index")

    def __init__(self, entry: bytes) -> None:
        self.entry = entry
        self.index = -1
        self.error: BaseException | None = None
        self.done = threading.Event()
