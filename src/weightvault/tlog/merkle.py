"""RFC 6962 / RFC 9162 Merkle tree math: hashing, proof shapes, and proof verification.

Everything here is pure: no storage, no I/O. Proof *generation* is expressed as the list of
subtree ranges ``[lo, hi)`` whose hashes make up the proof, so a storage backend can fetch exactly
those hashes (O(log n) of them) and nothing else. Verification follows RFC 9162 §2.1.3.2
(inclusion) and §2.1.4.2 (consistency) step by step.

Error kinds, as in Go's ``sumdb/tlog``:

* caller misuse (negative sizes, wrong types) -> :class:`ValueError` / :class:`TypeError`;
* hostile or corrupt data (a proof that does not verify, a wrong-length hash, an index past the
  tree size) -> :class:`~weightvault.errors.VerificationError` with one opaque message, so a
  verifier never tells an attacker which byte was wrong;
* our own bugs -> :class:`AssertionError`-free ``RuntimeError("bad math")``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence

from weightvault.errors import VerificationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_PROOF_HASHES",
    "MAX_TREE_SIZE",
    "consistency_ranges",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "range_blocks",
    "root_from_inclusion",
    "root_of_leaf_hashes",
    "stored_hash_count",
    "stored_hash_id",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Bytes in a SHA-256 hash."""

MAX_TREE_SIZE = (1 << 63) - 1
"""Largest tree size accepted anywhere (sizes are signed 64-bit integers in storage)."""

MAX_PROOF_HASHES = 126
"""Upper bound on hashes in any proof for a tree below :data:`MAX_TREE_SIZE` (2 x 63)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256() — the root of the empty tree (RFC 9162 §2.1.1)."""

INCLUSION_FAILED = "inclusion proof failed"
CONSISTENCY_FAILED = "consistency proof failed"

_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d) (RFC 9162 §2.1.1)."""
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Interior node: SHA-256(0x01 || left || right) (RFC 9162 §2.1.1)."""
    return _sha256(b"\x01" + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """k = the largest power of two strictly smaller than ``n`` (n > 1), the RFC split point."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0 or value > MAX_TREE_SIZE:
        raise ValueError(f"{name} must be in [0, 2^63), got {value}")


def root_of_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves, in O(n) time and O(log n) memory.

    Keeps a stack of complete subtrees (sizes are the set bits of the count so far); the final
    fold right-to-left reproduces the RFC's "split at the largest power of two" shape.
    """
    if not hashes:
        return EMPTY_ROOT
    stack: list[bytes] = []
    for count, value in enumerate(hashes, start=1):
        stack.append(value)
        # Merge once per trailing zero bit of the new count: those subtrees just became complete.
        merges = (count & -count).bit_length() - 1
        for _ in range(merges):
            right = stack.pop()
            stack.append(node_hash(stack.pop(), right))
    root = stack.pop()
    while stack:
        root = node_hash(stack.pop(), root)
    return root


def range_blocks(lo: int, hi: int) -> list[tuple[int, int]]:
    """Split ``[lo, hi)`` into maximal aligned complete subtrees, left to right.

    Returns ``(level, index)`` pairs: the block covers leaves ``[index << level, (index+1) <<
    level)``. For the ranges that occur in RFC 9162 proofs (``lo`` aligned to the next power of
    two at or above ``hi - lo``) folding these right-to-left gives MTH(D[lo:hi]).
    """
    width = hi - lo
    if width > 0 and width & (width - 1) == 0 and lo & (width - 1) == 0:
        level = width.bit_length() - 1  # fast path: already one complete subtree
        return [(level, lo >> level)]
    blocks: list[tuple[int, int]] = []
    while lo < hi:
        # Largest power of two dividing lo (all of them when lo == 0), capped by what is left.
        align = (lo & -lo) if lo else 1 << 62
        size = 1 << ((hi - lo).bit_length() - 1)
        size = min(size, align)
        level = size.bit_length() - 1
        blocks.append((level, lo >> level))
        lo += size
    return blocks


def subtree_hash(lo: int, hi: int, block_hash: Callable[[int, int], bytes]) -> bytes:
    """MTH(D[lo:hi]) from the stored hashes of complete subtrees (``block_hash(level, index)``)."""
    if lo >= hi:
        raise ValueError(f"empty range [{lo}, {hi})")
    blocks = range_blocks(lo, hi)
    result = block_hash(*blocks[-1])
    for level, index in reversed(blocks[:-1]):
        result = node_hash(block_hash(level, index), result)
    return result


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The subtrees whose hashes form PATH(index, D[0:size]) (RFC 9162 §2.1.3.1), leaf first."""
    _check_size("size", size)
    _check_size("index", index)
    if index >= size:
        raise ValueError(f"index {index} is not below the tree size {size}")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _largest_power_of_two_below(hi - lo)
        if index - lo < k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The subtrees whose hashes form PROOF(m, D[0:n]) (RFC 9162 §2.1.4.1), bottom first."""
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    if not 0 < old_size <= new_size:
        raise ValueError(f"need 0 < old size <= new size, got {old_size} and {new_size}")
    ranges: list[tuple[int, int]] = []
    lo, hi, m, complete = 0, new_size, old_size, True
    # SUBPROOF(m, D[lo:hi], complete), unrolled.
    while m != hi:
        k = _largest_power_of_two_below(hi - lo)
        if m - lo <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            complete = False
    if not complete:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


def _int_ok(name: str, value: int) -> bool:
    """Type errors are caller misuse; out-of-range numbers are hostile data (False)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return 0 <= value <= MAX_TREE_SIZE


def _hash_ok(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof (RFC 9162 §2.1.3.2 steps 1-5, without step 6).

    Raises :class:`VerificationError` for any inconsistent input (hostile data).
    """
    sizes_ok = _int_ok("size", size) & _int_ok("index", index)
    # Step 1: the index must lie inside the tree.
    if not sizes_ok or index >= size or not _hash_ok(leaf) or len(proof) > MAX_PROOF_HASHES:
        raise VerificationError(INCLUSION_FAILED)
    # Steps 2-3.
    fn, sn, r = index, size - 1, leaf
    # Step 4.
    for p in proof:
        if not _hash_ok(p) or sn == 0:  # 4a: the proof is longer than the path
            raise VerificationError(INCLUSION_FAILED)
        if fn & 1 or fn == sn:  # 4b: p is a left sibling
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:  # 4c: p is a right sibling
            r = node_hash(r, p)
        fn >>= 1  # 4d
        sn >>= 1
    # Step 5: the proof must reach the root exactly (no missing, no extra hashes).
    if sn != 0:
        raise VerificationError(INCLUSION_FAILED)
    return r


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` (a leaf hash) is at ``index`` in the tree ``(size, root)``.

    RFC 9162 §2.1.3.2; raises :class:`VerificationError` ("inclusion proof failed") otherwise.
    """
    computed = root_from_inclusion(leaf, index, size, proof)
    # Step 6: compare with the trusted root.
    if not _hash_ok(root) or not hmac.compare_digest(computed, root):
        raise VerificationError(INCLUSION_FAILED)


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Check that the tree ``(old_size, old_root)`` is a prefix of ``(new_size, new_root)``.

    RFC 9162 §2.1.4.2. A proof from the empty tree proves nothing and is refused, like the
    transparency-dev reference; equal sizes need an empty proof and equal roots. Raises
    :class:`VerificationError` ("consistency proof failed").
    """
    sizes_ok = _int_ok("old_size", old_size) & _int_ok("new_size", new_size)
    if (
        not sizes_ok
        or old_size == 0
        or old_size > new_size
        or not _hash_ok(old_root)
        or not _hash_ok(new_root)
        or len(proof) > MAX_PROOF_HASHES
        or not all(_hash_ok(p) for p in proof)
    ):
        raise VerificationError(CONSISTENCY_FAILED)
    if old_size == new_size:
        if proof or not hmac.compare_digest(old_root, new_root):
            raise VerificationError(CONSISTENCY_FAILED)
        return
    # Step 1: a proof between different sizes is never empty.
    if not proof:
        raise VerificationError(CONSISTENCY_FAILED)
    path = list(proof)
    # Step 2: when the old tree is a complete subtree, its root is the path's first node.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # Step 3.
    fn, sn = old_size - 1, new_size - 1
    # Step 4.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        if sn == 0:  # 6a
            raise VerificationError(CONSISTENCY_FAILED)
        if fn & 1 or fn == sn:  # 6b
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:  # 6c
            sr = node_hash(sr, c)
        fn >>= 1  # 6d
        sn >>= 1
    # Step 7.
    if sn != 0 or not hmac.compare_digest(fr, old_root) or not hmac.compare_digest(sr, new_root):
        raise VerificationError(CONSISTENCY_FAILED)


def stored_hash_id(level: int, index: int) -> int:
    """Position of complete subtree ``(level, index)`` in append order of all stored hashes.

    Appending leaf n stores its leaf hash, then one parent per trailing one-bit of n. So the
    hashes stored before leaf n number 2n - popcount(n), and the subtree whose last leaf is n
    at ``level`` comes ``level`` slots after that leaf.
    """
    last_leaf = ((index + 1) << level) - 1
    return 2 * last_leaf - last_leaf.bit_count() + level


def stored_hash_count(size: int) -> int:
    """How many hashes a tree of ``size`` leaves stores: 2n - popcount(n)."""
    return 2 * size - size.bit_count()
