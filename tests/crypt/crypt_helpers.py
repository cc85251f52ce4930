"""Helpers shared by the encryption tests (import as tests.crypt.crypt_helpers)."""

from __future__ import annotations

import os
from pathlib import Path


def write_model(root: Path, sizes: dict[str, int], *, seed: int = 1) -> Path:
    """A model folder with files of the given sizes (deterministic pseudo-random bytes)."""
    import random

    rng = random.Random(seed)
    for name, size in sizes.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    return root


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative POSIX name."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def all_files(root: Path) -> list[str]:
    """Every file name under ``root``, hidden ones included (to catch leftovers)."""
    return sorted(
        os.path.relpath(os.path.join(d, f), root) for d, _s, fs in os.walk(root) for f in fs
    )
