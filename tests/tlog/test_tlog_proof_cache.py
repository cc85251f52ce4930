"""The in-process proof cache (upper levels + 256-leaf tiles) never changes what a proof says.

Every test runs on SQLite and on the real PostgreSQL test server (the ``log`` fixture).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from tests.tlog.tlog_helpers import ORIGIN, reference_root

from weightvault.errors import VerificationError
from weightvault.tlog import Ed25519NoteSigner, TransparencyLog, merkle, verify_export
from weightvault.tlog.log import _TILE_BYTES

TILE = 256
CACHE = 64 << 20


def _entries(lo: int, hi: int) -> list[bytes]:
    return [b"entry-%d" % i for i in range(lo, hi)]


def _uncached_proofs(location: str, size: int) -> list[list[bytes]]:
    """Every proof at ``size`` from a freshly opened log with no tiles and nothing cached."""
    fresh = TransparencyLog.open(location, cache_bytes=0)
    try:
        out = []
        for start in range(0, size, 97):  # batches: single-id reads, no tile path at all
            fresh.clear_cache()
            out.extend(fresh.inclusion_proofs(list(range(start, min(size, start + 97))), size))
        assert not fresh._tiles
        return out
    finally:
        fresh.close()


def _location(log: TransparencyLog) -> str:
    store = log.store
    return str(getattr(store, "dsn", None) or store.location)


@pytest.fixture
def log(log_location: str) -> Iterator[TransparencyLog]:
    """A log with the tile cache on, on both backends (SQLite's default is off)."""
    created = TransparencyLog.create(log_location, ORIGIN, cache_bytes=CACHE)
    yield created
    created.close()


def test_cached_proofs_equal_uncached_ones_for_every_index_across_growth(
    log: TransparencyLog,
) -> None:
    location = _location(log)
    # Another writer (its own connection, as another process would have) appends too.
    other = TransparencyLog.open(location, cache_bytes=CACHE)
    sizes = [1, 2, 255, 256, 257, 300, 511, 512, 513, 767, 768, 1000, 1024, 1025, 1300]
    grown = 0
    checked_sizes: list[int] = []
    try:
        for step, size in enumerate(sizes):
            writer = other if step % 2 else log
            writer.append_many(_entries(grown, size))
            grown = size
            checked_sizes.append(size)
            # The current size and every earlier one, from the same long-lived cached log:
            # tiles fetched at a smaller size stay right after the log grows.
            for n in (size, *random.Random(size).sample(checked_sizes, min(3, step + 1))):
                expected = _uncached_proofs(location, n)
                root = reference_root(_entries(0, n))
                singles = [log.inclusion_proof(i, n) for i in range(n)]
                assert singles == expected, n
                batched = log.inclusion_proofs(list(range(n))[::-1], n)[::-1]
                assert batched == expected, n
                for i in random.Random(n).sample(range(n), min(n, 20)):
                    leaf = merkle.leaf_hash(b"entry-%d" % i)
                    merkle.verify_inclusion(leaf, i, n, singles[i], root)
            # Only complete tiles are cached: never the ragged right edge.
            assert all((t + 1) * TILE <= size for t in log._tiles)
            assert set(log._tiles) == set(range(size // TILE))
        # The other writer's cache agrees too (it only ever appended and now proves).
        assert [other.inclusion_proof(i) for i in range(grown)] == _uncached_proofs(location, grown)
    finally:
        other.close()


def test_warm_proofs_read_nothing_and_the_cache_stays_bounded(
    log_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = TransparencyLog.create(log_location, ORIGIN, cache_bytes=3 * _TILE_BYTES)
    try:
        log.append_many(_entries(0, 5000))
        calls: list[str] = []
        for name in ("read_hashes", "read_hash_ranges"):
            original = getattr(log.store, name)

            def counting(arg, _original=original, _name=name):  # type: ignore[no-untyped-def]
                calls.append(_name)
                return _original(arg)

            monkeypatch.setattr(log.store, name, counting)
        first = log.inclusion_proof(1234, 5000)
        # The tile, the upper levels, and the ragged right edge at 5000 (cached per size).
        assert calls == ["read_hash_ranges", "read_hashes", "read_hashes"]
        calls.clear()
        assert log.inclusion_proof(1234 ^ 7, 5000) is not None  # same tile, same upper path
        assert log.inclusion_proof(1234, 5000) == first
        assert calls == []  # served entirely from memory
        for index in range(0, 5000, 100):
            log.inclusion_proof(index, 5000)
            assert len(log._tiles) <= 3
        expected = _uncached_proofs(log_location, 5000)
        assert [log.inclusion_proof(i, 5000) for i in (7, 2100, 4999)] == [
            expected[i] for i in (7, 2100, 4999)
        ]
    finally:
        log.close()
    with pytest.raises(ValueError, match="cache_bytes"):
        TransparencyLog.open(log_location, cache_bytes=-1)
    default = TransparencyLog.open(log_location)
    try:
        expect = 0 if log_location.endswith(".db") else CACHE // _TILE_BYTES
        assert default._tile_limit == expect  # on by default only where reads are round trips
    finally:
        default.close()


def _raw(log: TransparencyLog, statement: str) -> None:
    """Edit the database behind the log's back WITHOUT clearing its caches."""
    conn = log.store._conn()  # type: ignore[attr-defined]
    conn.execute(statement)
    if hasattr(conn, "commit") and not getattr(conn, "autocommit", True):
        conn.commit()


def _blob(log: TransparencyLog, hex_bytes: str) -> str:
    if str(log.store.location).endswith(".db"):
        return f"X'{hex_bytes}'"
    return f"'\\x{hex_bytes}'::bytea"


def test_tampering_is_detected_although_the_cache_holds_the_old_hashes(
    log: TransparencyLog, log_signer: Ed25519NoteSigner
) -> None:
    log.append_many(_entries(0, 600))
    trusted = log.sign_checkpoint(log_signer)
    for i in range(600):
        log.inclusion_proof(i)  # tiles 0 and 1 cached
    assert set(log._tiles) == {0, 1}
    # An insider edits entry 300 and its stored leaf hash consistently (tile 1 is cached).
    leaf_id = merkle.stored_hash_id(0, 300)
    forged = merkle.leaf_hash(b"forged")
    _raw(log, f"UPDATE tlog_entries SET data = {_blob(log, b'forged'.hex())} WHERE idx = 300")
    # Export verification reads storage, not the proof cache: the change is named.
    with pytest.raises(VerificationError, match="entry 300: "):
        verify_export(log.export(), log_signer.verifier_key, trusted_checkpoint=trusted)
    _raw(log, f"UPDATE tlog_hashes SET hash = {_blob(log, forged.hex())} WHERE id = {leaf_id}")
    with pytest.raises(VerificationError, match="does not match its signed checkpoints"):
        verify_export(log.export(), log_signer.verifier_key, trusted_checkpoint=trusted)
    # prove() re-reads the entry, so the cached (authentic) path does not vouch for it.
    with pytest.raises(VerificationError, match="entry 300 is not in the tree"):
        log.prove(300)
    # Signing checks consistency from storage, not from the warm tiles: an insider who rewrites
    # the whole history consistently (entries and every stored hash) is refused.
    for statement in (
        "DELETE FROM tlog_entries",
        "DELETE FROM tlog_hashes",
        "UPDATE tlog_state SET size = 0",
    ):
        _raw(log, statement)
    log.append_many([b"rewritten-%d" % i for i in range(610)])
    assert set(log._tiles) == {0, 1}  # still warm with the old, signed history
    with pytest.raises(VerificationError, match="refusing to sign"):
        log.sign_checkpoint(log_signer)
