"""The append-only log: O(log n) appends and proofs over stored subtree hashes.

Every complete subtree's hash is stored once, when its last leaf is appended (amortized two hashes
per entry). An append reads only the right edge of the tree (one hash per set bit of the size); an
inclusion or consistency proof reads at most ~2 log2(n) stored hashes in one query. Nothing ever
reads the whole log except :meth:`TransparencyLog.export`.

The log refuses to sign a checkpoint that is not consistent with the last one it signed: before
signing, it proves (from its own storage) that the previous signed tree is a prefix of the current
one and checks that proof against the previous checkpoint's signed root. An insider who edits
stored entries or hashes therefore cannot get a new signature over the altered history.
"""

from __future__ import annotations

import hmac
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

from weightvault.errors import FormatError, InputError, KeyMaterialError, VerificationError
from weightvault.tlog.checkpoint import Checkpoint, verify_checkpoint
from weightvault.tlog.export import LogExport, verify_export
from weightvault.tlog.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    consistency_ranges,
    leaf_hash,
    node_hash,
    range_blocks,
    stored_hash_id,
    verify_consistency,
    verify_inclusion,
)
from weightvault.tlog.note import NoteSigner, VerifierKey, sign_note
from weightvault.tlog.proof import ConsistencyProof, TlogProof
from weightvault.tlog.storage import LogStore, StoreWriter, open_store

__all__ = ["MAX_ENTRY_BYTES", "TransparencyLog"]

MAX_ENTRY_BYTES = 1 << 20
"""Largest entry accepted (1 MiB): entries are digests and audit events, not blobs."""
_CACHE_LIMIT = 1 << 16  # upper-level hashes kept (then the dict is cleared): <= ~10 MiB
_TILE_HEIGHT = 8
"""Proof tiles are complete subtrees of 2**8 = 256 leaves; the upper cache holds levels >= 8."""
_CACHE_MIN_LEVEL = _TILE_HEIGHT
_TILE_HASHES = (2 << _TILE_HEIGHT) - 1  # 511 stored hashes (levels 0..8) per tile
_TILE_BYTES = _TILE_HASHES * HASH_SIZE  # 16,352 bytes
_TILE_FETCH_MAX = 8  # tiles fetched per proof call; indices beyond that read single hashes
_APPEND_CHUNK = 50_000


def _check_origin(origin: str) -> None:
    if (
        not isinstance(origin, str)
        or not origin
        or origin != origin.strip()
        or any(c.isspace() or c == "+" or ord(c) < 0x20 for c in origin)
    ):
        raise ValueError(
            "origin must be a non-empty name without spaces or '+' (e.g. example.com/log)"
        )


class TransparencyLog:
    """An RFC 9162 log over a :class:`~weightvault.tlog.storage.LogStore`. Thread-safe."""

    def __init__(self, store: LogStore, *, cache_bytes: int | None = None) -> None:
        """``cache_bytes`` bounds the proof-tile cache (0: no tiles; see :meth:`_tiles_for`).

        Default: the store's ``proof_cache_bytes``: 64 MiB on PostgreSQL, where every read is
        a server round trip; 0 on SQLite, where one indexed read costs less than a tile fetch.
        """
        if cache_bytes is None:
            cache_bytes = store.proof_cache_bytes
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise ValueError("cache_bytes must be a non-negative int")
        self.store = store
        meta = store.meta()
        self.origin = meta["origin"]
        self._cache: dict[int, bytes] = {}  # stored hashes at levels >= _CACHE_MIN_LEVEL
        self._known_size = 0
        self._ragged: dict[tuple[int, int], bytes] = {}  # MTH(D[lo:size]) at the right edge
        self._tile_limit = cache_bytes // _TILE_BYTES
        self._tiles: OrderedDict[int, bytes] = OrderedDict()  # tile number -> 511 hashes (LRU)
        self._tiles_lock = threading.Lock()

    def clear_cache(self) -> None:
        """Forget every cached hash (tests that edit the database behind the log's back)."""
        self._cache.clear()
        self._ragged.clear()
        with self._tiles_lock:
            self._tiles.clear()
        self._known_size = 0

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        location: str | Path | LogStore,
        origin: str,
        *,
        cache_bytes: int | None = None,
    ) -> TransparencyLog:
        """Create a new empty log at ``location`` (SQLite path or ``postgresql://`` URL)."""
        _check_origin(origin)
        store = location if isinstance(location, LogStore) else open_store(location)
        store.initialize(origin)
        return cls(store, cache_bytes=cache_bytes)

    @classmethod
    def open(
        cls, location: str | Path | LogStore, *, cache_bytes: int | None = None
    ) -> TransparencyLog:
        """Open an existing log."""
        store = location if isinstance(location, LogStore) else open_store(location)
        return cls(store, cache_bytes=cache_bytes)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> TransparencyLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- appends -----------------------------------------------------------------------------

    def size(self) -> int:
        """Entries committed so far."""
        return self.store.size()

    def append(self, entry: bytes) -> int:
        """Append one entry durably; returns its index once committed."""
        return self.append_many([entry])

    def append_many(self, entries: Sequence[bytes]) -> int:
        """Append entries in one durable transaction; returns the index of the first.

        Leaf hashes are computed before taking the write lock; under the lock only the right
        edge of the tree is read (one hash per set bit of the size) and the new hashes written.
        """
        for position, entry in enumerate(entries):
            if not isinstance(entry, bytes | bytearray | memoryview):
                raise TypeError(f"entries[{position}] must be bytes")
            if len(entry) > MAX_ENTRY_BYTES:
                raise InputError(
                    f"entries[{position}]: {len(entry)} bytes is larger than the "
                    f"{MAX_ENTRY_BYTES}-byte limit",
                    hint="log a digest of large data instead",
                )
        if not entries:
            raise ValueError("append_many needs at least one entry")
        blobs = [bytes(e) for e in entries]
        leaves = [leaf_hash(e) for e in blobs]
        with self.store.writer() as writer:
            first = writer.size()
            blocks = range_blocks(0, first)
            ids = [stored_hash_id(level, index) for level, index in blocks]
            found = writer.read_hashes(ids)
            if len(found) != len(ids):
                raise FormatError(f"{self.store.location}: stored hashes are missing; log corrupt")
            stack = [found[i] for i in ids]
            new_hashes: list[tuple[int, bytes]] = []
            for offset, leaf in enumerate(leaves):
                index = first + offset
                new_hashes.append((stored_hash_id(0, index), leaf))
                stack.append(leaf)
                level = 0
                while index & 1:  # this leaf completes subtrees: one per trailing one-bit
                    right = stack.pop()
                    parent = node_hash(stack.pop(), right)
                    stack.append(parent)
                    level += 1
                    index >>= 1
                    new_hashes.append((stored_hash_id(level, index), parent))
            writer.write(first, blobs, new_hashes)
        return first

    # -- reads and proofs --------------------------------------------------------------------

    def _hashes_for_ranges(
        self, ranges: Sequence[tuple[int, int]], reader: StoreWriter | None = None
    ) -> list[bytes]:
        """MTH(D[lo:hi]) for each range, from stored hashes fetched in one query."""
        per_range = [range_blocks(lo, hi) for lo, hi in ranges]
        wanted = {stored_hash_id(level, index) for blocks in per_range for level, index in blocks}
        have = self._lookup(wanted, reader)
        out = []
        for blocks in per_range:
            level, index = blocks[-1]
            value = have[stored_hash_id(level, index)]
            for level, index in reversed(blocks[:-1]):
                value = node_hash(have[stored_hash_id(level, index)], value)
            out.append(value)
        return out

    def _checked_size(self, size: int | None, what: str = "size") -> int:
        # A log only grows, so a size at or below one already seen needs no database read.
        if size is not None and not isinstance(size, bool) and isinstance(size, int):
            if 0 <= size <= self._known_size:
                return size
        current = self.size()
        self._known_size = max(self._known_size, current)
        if size is None:
            return current
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= current:
            raise InputError(f"{what} {size} is not in [0, {current}] (the log's size)")
        return size

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` entries (default: all)."""
        size = self._checked_size(size)
        if size == 0:
            return EMPTY_ROOT
        return self._hashes_for_ranges([(0, size)])[0]

    def entry(self, index: int) -> bytes:
        entries = self.store.read_entries(index, index + 1)
        if not entries:
            raise InputError(f"index {index}: no such entry (the log has {self.size()})")
        return entries[0]

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]) (RFC 9162 §2.1.3.1): at most ceil(log2 size) hashes."""
        return self.inclusion_proofs([index], size)[0]

    def inclusion_proofs(
        self, indices: Sequence[int], size: int | None = None
    ) -> list[list[bytes]]:
        """Inclusion proofs for many entries under one tree size.

        At most two storage reads: missing proof tiles (one range query) and the remaining
        stored hashes (one query); none when the tiles and upper levels are cached.
        """
        size = self._checked_size(size, "tree size")
        for index in indices:
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
                raise InputError(f"index {index} is not below the tree size {size}")
        tiles = self._tiles_for([index >> _TILE_HEIGHT for index in indices], size)
        upper: set[int] = set()
        plans = [
            self._inclusion_plan(index, size, upper, tiles.get(index >> _TILE_HEIGHT))
            for index in indices
        ]
        have = self._lookup({i for plan in plans for i in plan if isinstance(i, int)}, upper=upper)
        return [[have[i] if isinstance(i, int) else i for i in plan] for plan in plans]

    def _lookup(
        self,
        ids: Iterable[int],
        reader: StoreWriter | None = None,
        *,
        upper: set[int] | None = None,
    ) -> dict[int, bytes]:
        """Stored hashes by id: from the cache, the rest in one storage read.

        Only ids in ``upper`` (when given) are cached: nodes near the root are shared by many
        proofs, low ones almost never, and caching those would only push the others out.
        Returns its own dict, so another thread clearing the shared cache cannot pull a hash
        out from under this call.
        """
        cache = self._cache
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        found: dict[int, bytes] = {}
        missing: list[int] = []
        for row_id in ids:
            value = cache.get(row_id)
            if value is None:
                missing.append(row_id)
            else:
                found[row_id] = value
        if missing:
            fetched = (reader or self.store).read_hashes(missing)
            if len(fetched) != len(set(missing)):
                raise FormatError(f"{self.store.location}: stored hashes are missing; log corrupt")
            if upper is None:
                cache.update(fetched)
            else:
                cache.update((i, h) for i, h in fetched.items() if i in upper)
            found.update(fetched)
        return found

    def _tiles_for(self, numbers: Sequence[int], size: int) -> dict[int, bytes]:
        """Proof tiles for ``numbers``: the 511 stored hashes of leaves [256 t, 256 t + 256).

        A tile is a COMPLETE subtree: only tiles that end at or below ``size`` (a size the log
        has committed) are used or cached. A complete subtree's stored hashes never change
        (entries and hashes are append-only; every process computes the same hashes), so a
        cached tile stays right however the log grows and whoever appends; the ragged right
        edge is never tiled. Its hashes have consecutive ids (append order), so a missing tile
        is one range read; up to ``_TILE_FETCH_MAX`` missing tiles are fetched per call, in
        one query. Memory: at most ``cache_bytes // 16,352`` tiles, least recently used first
        out. Nothing that verifies a log (export verification, the consistency check before
        signing) reads tiles.
        """
        if self._tile_limit == 0:
            return {}
        complete = {t for t in numbers if (t + 1) << _TILE_HEIGHT <= size}
        out: dict[int, bytes] = {}
        missing: list[int] = []
        with self._tiles_lock:
            for t in complete:
                tile = self._tiles.get(t)
                if tile is None:
                    missing.append(t)
                else:
                    self._tiles.move_to_end(t)
                    out[t] = tile
        if not missing:
            return out
        missing = sorted(missing)[:_TILE_FETCH_MAX]
        bases = {t: stored_hash_id(0, t << _TILE_HEIGHT) for t in missing}
        found = self.store.read_hash_ranges([(b, b + _TILE_HASHES) for b in bases.values()])
        fetched: dict[int, bytes] = {}
        for t, base in bases.items():
            try:
                fetched[t] = b"".join(found[i] for i in range(base, base + _TILE_HASHES))
            except KeyError:
                raise FormatError(
                    f"{self.store.location}: stored hashes are missing; log corrupt"
                ) from None
            if len(fetched[t]) != _TILE_BYTES:
                raise FormatError(f"{self.store.location}: a stored hash is not 32 bytes")
        with self._tiles_lock:
            for t, tile in fetched.items():
                self._tiles[t] = tile
                self._tiles.move_to_end(t)
            while len(self._tiles) > self._tile_limit:
                self._tiles.popitem(last=False)
        out.update(fetched)
        return out

    def _inclusion_plan(
        self, index: int, size: int, upper: set[int], tile: bytes | None = None
    ) -> list[int | bytes]:
        """Stored-hash ids (or hashes) of PATH(index, D[0:size]), leaf first.

        Level by level (the same path as RFC 9162 §2.1.3.1, read bottom-up): the sibling of the
        node holding ``index`` is a stored complete subtree, or the one ragged subtree at the
        right edge (computed once per size and cached), or empty (no hash at that level).
        Below the tile height the siblings come from ``tile`` (the complete 256-leaf subtree
        holding ``index``) when one is given.
        """
        plan: list[int | bytes] = []
        level = 0
        width = 1  # 1 << level
        base = 0 if tile is None else stored_hash_id(0, index >> _TILE_HEIGHT << _TILE_HEIGHT)
        while width < size:
            sibling = ((index >> level) ^ 1) << level
            if sibling < size:
                last = sibling + width - 1
                if last < size:
                    row_id = 2 * last - last.bit_count() + level  # stored_hash_id(level, .)
                    if tile is not None and level < _TILE_HEIGHT:
                        offset = (row_id - base) * HASH_SIZE
                        plan.append(tile[offset : offset + HASH_SIZE])
                    else:
                        plan.append(row_id)
                    if level >= _CACHE_MIN_LEVEL:
                        upper.add(row_id)
                else:
                    plan.append(self._ragged_hash(sibling, size))
            level += 1
            width <<= 1
        return plan

    def _ragged_hash(self, lo: int, size: int) -> bytes:
        """MTH(D[lo:size]) for the right edge of a tree, cached per (lo, size)."""
        value = self._ragged.get((lo, size))
        if value is None:
            value = self._hashes_for_ranges([(lo, size)])[0]
            if len(self._ragged) > 1024:
                self._ragged.clear()
            self._ragged[(lo, size)] = value
        return value

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[0:new_size]) (RFC 9162 §2.1.4.1)."""
        new_size = self._checked_size(new_size, "new size")
        if isinstance(old_size, bool) or not isinstance(old_size, int):
            raise TypeError("old_size must be an int")
        if not 0 < old_size <= new_size:
            raise InputError(f"old size {old_size} is not in [1, {new_size}]")
        return self._hashes_for_ranges(consistency_ranges(old_size, new_size))

    def consistency(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        """A :class:`ConsistencyProof` file object (old size 0 gives an empty proof)."""
        new_size = self._checked_size(new_size, "new size")
        hashes = () if old_size == 0 else tuple(self.consistency_proof(old_size, new_size))
        return ConsistencyProof(old_size=old_size, new_size=new_size, hashes=hashes)

    # -- checkpoints -------------------------------------------------------------------------

    def sign_checkpoint(self, signer: NoteSigner, *, extensions: Sequence[str] = ()) -> bytes:
        """Sign and record a checkpoint of the current tree; returns the signed note.

        Refuses (``VerificationError``) when the current tree is not an extension of the last
        checkpoint this log signed, or when that checkpoint's signature does not verify.
        """
        if signer.name != self.origin:
            raise KeyMaterialError(
                f"key name {signer.name!r} is not this log's origin {self.origin!r}",
                hint="use the key created with 'weightvault log keygen' for this origin",
            )
        log_key = signer.verifier_key
        with self.store.writer() as writer:
            size = writer.size()
            root = EMPTY_ROOT if size == 0 else self._fresh_root(size, writer)
            previous = writer.latest_checkpoint()
            if previous is not None:
                self._check_extends(previous[1], log_key, size, root, writer)
            checkpoint = Checkpoint(
                origin=self.origin, size=size, root=root, extensions=tuple(extensions)
            )
            note = sign_note(checkpoint.to_text(), [signer]).to_bytes()
            writer.put_checkpoint(size, note)
        return note

    def _fresh_root(self, size: int, writer: StoreWriter) -> bytes:
        """The root read inside the writer transaction, bypassing the cache."""
        blocks = range_blocks(0, size)
        ids = [stored_hash_id(level, index) for level, index in blocks]
        found = writer.read_hashes(ids)
        if len(found) != len(ids):
            raise FormatError(f"{self.store.location}: stored hashes are missing; log corrupt")
        value = found[ids[-1]]
        for row_id in reversed(ids[:-1]):
            value = node_hash(found[row_id], value)
        return value

    def _check_extends(
        self,
        previous_note: bytes,
        log_key: VerifierKey,
        size: int,
        root: bytes,
        writer: StoreWriter,
    ) -> None:
        refusal = (
            "refusing to sign: the log's current tree is not consistent with the checkpoint "
            "it signed before"
        )
        hint = "the log storage was altered or rolled back; restore it from a verified export"
        try:
            previous = verify_checkpoint(previous_note, log_key, origin=self.origin).checkpoint
        except (VerificationError, FormatError) as exc:
            raise VerificationError(refusal, hint=hint) from exc
        if previous.size > size:
            raise VerificationError(refusal, hint=hint)
        if previous.size == 0:
            if not hmac.compare_digest(previous.root, EMPTY_ROOT):
                raise VerificationError(refusal, hint=hint)
            return
        if previous.size == size:
            if not hmac.compare_digest(previous.root, root):
                raise VerificationError(refusal, hint=hint)
            return
        self._cache.clear()
        self._ragged.clear()
        proof = self._hashes_for_ranges(consistency_ranges(previous.size, size), writer)
        try:
            verify_consistency(previous.size, size, proof, previous.root, root)
        except VerificationError as exc:
            raise VerificationError(refusal, hint=hint) from exc

    def add_cosignatures(self, cosigned: bytes, log_key: VerifierKey) -> bytes:
        """Store witness cosignatures of a checkpoint this log signed; returns the merged note.

        The note must carry a valid log signature and the exact body of the stored checkpoint
        of that size; its other signature lines are merged into the stored note, so later
        proofs and exports carry them (and verifiers can require k-of-n witnesses).
        """
        from weightvault.tlog.note import parse_note

        verified = verify_checkpoint(cosigned, log_key, origin=self.origin)
        size = verified.checkpoint.size
        with self.store.writer() as writer:
            stored = dict(self.store.checkpoints()).get(size)
            if stored is None:
                raise InputError(f"this log signed no checkpoint of size {size}")
            merged = parse_note(stored)
            if merged.text != verified.note.text:
                raise VerificationError(
                    f"the cosigned checkpoint differs from the one this log signed at size {size}"
                )
            for line in verified.note.signatures:
                if (line.name, line.key_id) != (log_key.name, log_key.key_id):
                    merged = merged.with_signature(line)
            note = merged.to_bytes()
            writer.put_checkpoint(size, note)
        return note

    def latest_checkpoint(self) -> bytes | None:
        """The most recent signed checkpoint note, if any."""
        checkpoints = self.store.checkpoints()
        return checkpoints[-1][1] if checkpoints else None

    def checkpoints(self) -> list[bytes]:
        return [note for _, note in self.store.checkpoints()]

    # -- offline proofs ----------------------------------------------------------------------

    def prove(
        self, index: int, *, checkpoint: bytes | None = None, extra: bytes | None = None
    ) -> TlogProof:
        """A ``tlog-proof`` for entry ``index`` under ``checkpoint`` (default: the latest).

        ``checkpoint`` may carry witness cosignatures; its body is parsed (not trusted) to learn
        the tree size, and the proof is checked against its root before it is returned.
        """
        note = checkpoint if checkpoint is not None else self.latest_checkpoint()
        if note is None:
            raise InputError(
                "the log has no signed checkpoint yet",
                hint="run 'weightvault log checkpoint' first",
            )
        from weightvault.tlog.note import parse_note

        body = Checkpoint.from_text(parse_note(note).text)
        if body.origin != self.origin:
            raise InputError(f"checkpoint is for log {body.origin!r}, not {self.origin!r}")
        if not 0 <= index < body.size:
            raise InputError(
                f"index {index} is not covered by the checkpoint (tree size {body.size})",
                hint="sign a newer checkpoint with 'weightvault log checkpoint'",
            )
        hashes = self.inclusion_proof(index, body.size)
        leaf = leaf_hash(self.entry(index))
        try:
            verify_inclusion(leaf, index, body.size, hashes, body.root)
        except VerificationError as exc:
            raise VerificationError(
                f"entry {index} is not in the tree the checkpoint signed",
                hint="the log storage was altered; verify an export against an earlier checkpoint",
            ) from exc
        return TlogProof(index=index, hashes=tuple(hashes), checkpoint=note, extra=extra)

    # -- export / import ---------------------------------------------------------------------

    def export(self) -> LogExport:
        """Everything a verifier needs, up to the latest signed checkpoint."""
        note = self.latest_checkpoint()
        if note is None:
            raise InputError(
                "the log has no signed checkpoint to export",
                hint="run 'weightvault log checkpoint' first",
            )
        from weightvault.tlog.note import parse_note

        size = Checkpoint.from_text(parse_note(note).text).size
        entries: list[bytes] = []
        for start in range(0, size, _APPEND_CHUNK):
            entries.extend(self.store.read_entries(start, min(size, start + _APPEND_CHUNK)))
        ids = [stored_hash_id(0, i) for i in range(size)]
        leaf_hashes: list[bytes] = []
        for start in range(0, size, _APPEND_CHUNK):
            chunk = ids[start : start + _APPEND_CHUNK]
            found = self.store.read_hashes(chunk)
            leaf_hashes.extend(found[i] for i in chunk if i in found)
        return LogExport(
            origin=self.origin,
            checkpoints=tuple(n for s, n in self.store.checkpoints() if s <= size),
            entries=tuple(entries),
            leaf_hashes=tuple(leaf_hashes),
        )

    @classmethod
    def import_export(
        cls,
        location: str | Path | LogStore,
        export: LogExport,
        log_key: VerifierKey,
        *,
        trusted_checkpoint: bytes | None = None,
    ) -> TransparencyLog:
        """Create a new log from an export after verifying it end to end."""
        verified = verify_export(export, log_key, trusted_checkpoint=trusted_checkpoint)
        log = cls.create(location, export.origin)
        for start in range(0, len(export.entries), _APPEND_CHUNK):
            log.append_many(export.entries[start : start + _APPEND_CHUNK])
        if not hmac.compare_digest(log.root(), verified.root):
            raise VerificationError("imported log's root does not match the export's checkpoint")
        with log.store.writer() as writer:
            for note in export.checkpoints:
                from weightvault.tlog.note import parse_note

                body = Checkpoint.from_text(parse_note(note).text)
                writer.put_checkpoint(body.size, note)
        return log
