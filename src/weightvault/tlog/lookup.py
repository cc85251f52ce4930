"""Finding entries by leaf hash: did an append whose commit was in doubt land after all?

A writer whose connection dies during ``COMMIT`` cannot tell whether its entries were made
durable. It knows their bytes (hence their leaf hashes) and a size the log had before it began,
so the answer is in the stored leaf hashes from that size on. :func:`find_leaves` reads only
those (a range read per 50,000 entries; no entry bytes), never the whole log.
"""

from __future__ import annotations

from collections.abc import Collection

from weightvault.errors import InputError
from weightvault.tlog.log import TransparencyLog
from weightvault.tlog.merkle import stored_hash_id

__all__ = ["find_leaves"]

_CHUNK = 50_000


def find_leaves(
    log: TransparencyLog, wanted: Collection[bytes], start: int, end: int | None = None
) -> dict[bytes, int]:
    """The first index in ``[start, end)`` (default: up to the log's size) of each leaf hash of
    ``wanted`` that the log holds there; hashes it does not hold are absent from the result.

    Leaf hashes are :func:`~weightvault.tlog.merkle.leaf_hash` of the entry bytes. The stored
    leaf hash is what the signed tree commits to; a caller that must be sure of the bytes reads
    the entry at the index found (:meth:`TransparencyLog.entry`).
    """
    size = log.size()
    end = size if end is None else end
    for name, value in (("start", start), ("end", end)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= size:
            raise InputError(f"{name} {value} is not in [0, {size}] (the log's size)")
    remaining = set(wanted)
    found: dict[bytes, int] = {}
    for lo in range(start, end, _CHUNK):
        if not remaining:
            break
        hi = min(end, lo + _CHUNK)
        ids = range(stored_hash_id(0, lo), stored_hash_id(0, hi - 1) + 1)  # leaves and nodes
        stored = log.store.read_hash_ranges([(ids.start, ids.stop)])
        for index in range(lo, hi):
            leaf = stored.get(stored_hash_id(0, index))
            if leaf is not None and leaf in remaining:
                found[leaf] = index
                remaining.discard(leaf)
    return found
