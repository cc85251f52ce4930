"""Shared bits of the transparency-log tests (a plain module, imported explicitly)."""

from __future__ import annotations

import hashlib

ORIGIN = "example.com/test-log"


def reference_root(entries: list[bytes]) -> bytes:
    """MTH straight from RFC 9162 §2.1.1's recursive definition (independent of the code)."""
    if not entries:
        return hashlib.sha256(b"").digest()
    if len(entries) == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = 1
    while k * 2 < len(entries):
        k *= 2
    return hashlib.sha256(
        b"\x01" + reference_root(entries[:k]) + reference_root(entries[k:])
    ).digest()
