"""Group commit hands the lead on: a caller commits one batch, the one holding its own entry, and
never keeps committing for others (the custody service's tail latency depends on it)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from weightvault.tlog import GroupCommitter, TransparencyLog


class _SlowLog(TransparencyLog):
    """A real log whose commits take a while (so that callers pile up), recording who commits."""

    def __init__(self, log: TransparencyLog) -> None:
        super().__init__(log.store)
        self.batches: list[tuple[str, list[bytes]]] = []

    def append_many(self, entries: Sequence[bytes]) -> int:
        time.sleep(0.005)
        first = super().append_many(entries)
        self.batches.append((threading.current_thread().name, [bytes(e) for e in entries]))
        return first


def test_every_commit_holds_the_committing_callers_own_entry(tmp_path: Path) -> None:
    log = _SlowLog(TransparencyLog.create(tmp_path / "log.db", "example.com/log"))
    committer = GroupCommitter(log, max_batch=64)
    indices: dict[bytes, int] = {}
    lock = threading.Lock()

    def writer() -> None:
        name = threading.current_thread().name
        for i in range(15):
            entry = f"{name}/{i}".encode()
            index = committer.append(entry)
            with lock:
                indices[entry] = index

    threads = [threading.Thread(target=writer, name=f"w{k}") for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(indices.values()) == list(range(120))
    assert log.store.read_entries(0, 120) == sorted(indices, key=indices.__getitem__)
    assert committer.commits == len(log.batches) < 120  # batches were shared
    assert any(len(batch) > 1 for _name, batch in log.batches)
    for name, batch in log.batches:
        assert any(entry.startswith(f"{name}/".encode()) for entry in batch), (name, batch)
