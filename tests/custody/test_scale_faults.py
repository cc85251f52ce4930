"""Scale-out faults: the transparency log's one sequencer across replicas on a real PostgreSQL.

Several processes (as replicas' group committers are) append to one PostgreSQL log at once and
one of them is killed with SIGKILL in its append loop: every acknowledged entry is in the log
exactly once, at the index it was acknowledged at, the indexes have no gap, and the tree after
the kill is an extension of the tree before it (consistency proof). The appends serialize on the
size row (``SELECT ... FOR UPDATE``) and each commit is fenced by a compare-and-set on the size
it read, so two sequencers can never write the same index.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.postgres import PostgresServer

from weightvault.tlog import TransparencyLog
from weightvault.tlog.merkle import verify_consistency

WRITER = Path(__file__).resolve().parents[1] / "tlog" / "tlog_writer_process.py"


def _acks(output: bytes) -> dict[int, str]:
    acks = {}
    for line in output.decode().splitlines():
        if line.startswith("ack "):
            _ack, index, entry = line.split(" ", 2)
            acks[int(index)] = entry
    return acks


def test_one_sequencer_across_processes_survives_sigkill(postgres: PostgresServer) -> None:
    url = postgres.create_database()
    log = TransparencyLog.create(url, "scale.test/log")
    log.append_many([b"genesis"])
    before_size, before_root = log.size(), log.root()
    steady = [
        subprocess.Popen(
            [sys.executable, str(WRITER), url, f"w{i}", "60", "3"], stdout=subprocess.PIPE
        )
        for i in range(3)
    ]
    victim = subprocess.Popen([sys.executable, str(WRITER), url, "victim", "0", "5"],
                              stdout=subprocess.PIPE)  # fmt: skip
    time.sleep(1.5)
    victim.send_signal(signal.SIGKILL)
    victim_out, _ = victim.communicate(timeout=30)
    outputs = [p.communicate(timeout=120)[0] for p in steady]
    assert all(p.returncode == 0 for p in steady)
    acked: dict[int, str] = {}
    for output in [*outputs, victim_out]:
        for index, entry in _acks(output).items():
            assert index not in acked, f"index {index} acknowledged twice"
            acked[index] = entry
    size = log.size()
    stored = [e.decode() for e in log.store.read_entries(0, size)]
    assert len(stored) == size == len(set(stored))  # no gap, no entry twice
    for index, entry in acked.items():
        assert stored[index] == entry  # every acknowledged entry, where it was acknowledged
    assert sum(1 for e in stored if e.startswith("w")) == 3 * 60
    verify_consistency(
        before_size, size, log.consistency_proof(before_size, size), before_root, log.root()
    )
