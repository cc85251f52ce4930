"""Fixed seeds give identical results: deterministic kernels, a fixed thread count, seeded RNGs.

Bit-identical results need the same thread count too (reductions split differently across
threads), so the thread count is part of the context, not left to the machine.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import torch

__all__ = ["deterministic", "set_default_threads"]

_DEFAULT_THREADS = [1]


def set_default_threads(threads: int) -> None:
    """The torch thread count :func:`deterministic` uses when none is given (default 1)."""
    if threads < 1:
        raise ValueError("threads must be >= 1")
    _DEFAULT_THREADS[0] = threads


@contextlib.contextmanager
def deterministic(seed: int, threads: int | None = None) -> Iterator[None]:
    """Seed torch and ``random``, force deterministic algorithms and a fixed thread count."""
    previous_threads = torch.get_num_threads()
    previous_flag = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads or _DEFAULT_THREADS[0])
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous_flag)
        torch.set_num_threads(previous_threads)
