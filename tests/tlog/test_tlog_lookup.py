"""find_leaves: where given entries landed, from a known size on, by leaf hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from weightvault.errors import InputError
from weightvault.tlog import TransparencyLog, find_leaves, leaf_hash


def test_find_leaves_finds_the_first_index_from_start_and_nothing_else(tmp_path: Path) -> None:
    log = TransparencyLog.create(str(tmp_path / "log.db"), "example.com/log")
    entries = [f"entry {i}".encode() for i in range(700)] + [b"entry 3"]  # 3 again at 700
    log.append_many(entries)
    wanted = {leaf_hash(b"entry 3"), leaf_hash(b"entry 699"), leaf_hash(b"never logged")}
    assert find_leaves(log, wanted, 0) == {leaf_hash(b"entry 3"): 3, leaf_hash(b"entry 699"): 699}
    assert find_leaves(log, wanted, 4) == {leaf_hash(b"entry 3"): 700, leaf_hash(b"entry 699"): 699}
    assert find_leaves(log, wanted, 4, 699) == {}
    assert find_leaves(log, wanted, 701) == {}
    with pytest.raises(InputError, match="start 702 is not in"):
        find_leaves(log, wanted, 702)
    log.close()
