"""Shared pieces of the command line: consoles, JSON output, progress bars, option parsing.

Only rendering lives here; decisions are made by the capability packages.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from weightvault._console import plain_console

if TYPE_CHECKING:
    from rich.console import Console

    from weightvault.hashing import ProgressDisplay

__all__ = ["emit_json", "err_console", "out_console", "progress_bytes", "progress_display"]

#: Models above this size get a progress bar (when standard error is a terminal).
PROGRESS_THRESHOLD_BYTES = 256 * 1024 * 1024


_consoles: dict[str, Console] = {}


def out_console() -> Console:
    """Rich console on standard output (created on first use: keeps ``--help`` fast).

    No markup, no emoji codes: what is printed (file names, identities, messages) often comes
    from files or servers we do not control, and must appear exactly as it is.
    """
    if "out" not in _consoles:
        _consoles["out"] = plain_console()
    return _consoles["out"]


def err_console() -> Console:
    """Rich console on standard error, for messages and progress."""
    if "err" not in _consoles:
        _consoles["err"] = plain_console(stderr=True)
    return _consoles["err"]


def emit_json(document: Any) -> None:
    """Print one JSON document on standard output (sorted keys, stable for scripts)."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def progress_display(description: str) -> ProgressDisplay:
    """A progress bar the library opens once it knows how many bytes it will hash."""
    return functools.partial(progress_bytes, description)


@contextmanager
def progress_bytes(description: str, total: int, *, enabled: bool | None = None) -> Iterator[Any]:
    """Yield a callback ``advance(nbytes)``; shows a Rich bar for large jobs on a terminal.

    ``enabled=None`` decides automatically: on when ``total`` exceeds
    :data:`PROGRESS_THRESHOLD_BYTES` and standard error is a TTY.
    """
    if enabled is None:
        enabled = total >= PROGRESS_THRESHOLD_BYTES and sys.stderr.isatty()
    if not enabled:
        yield lambda _n: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console(),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
