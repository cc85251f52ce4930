"""The ``weightvault`` command line: thin Typer commands over the public API.

:func:`main` is the console-script entry point. ``weightvault scan ...`` first goes to the scan
command's own parser (:func:`weightvault.cli.scan.run`: no Typer, click or Rich at start-up),
because the scanner is run once per file by CI loops and pre-commit hooks, where start-up is
most of the time. It is the same command as the Typer one (one definition of its options and
behaviour, see :mod:`weightvault.cli.scan`); what that parser leaves to click (``--help``, usage
errors) and every other command go to the Typer application (:mod:`weightvault.cli.app`).

This module imports only the standard library at load time.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

__all__ = ["main", "run"]


def run(argv: Sequence[str]) -> int:
    """Run the command line ``weightvault ARGV...`` and return its exit code."""
    args = list(argv)
    if args[:1] == ["scan"]:
        from weightvault.cli.scan import run as scan_run

        code = scan_run(args[1:])
        if code is not None:
            return code
    return _typer(args)


def _typer(args: list[str]) -> int:
    from weightvault.cli.app import run as app_run

    return app_run(args)


def main() -> None:
    """Console-script entry point (``weightvault = "weightvault.cli:main"``).

    SIGINT and SIGTERM are handled from here on (:mod:`weightvault._interrupt`): the command
    removes its partial outputs, then one line says so and the exit code is 130 or 143.
    """
    from weightvault import _interrupt

    try:
        # Inside the try: a signal that lands while the handlers are being installed (the first
        # is already live) is reported like any other interrupt, not as a traceback.
        _interrupt.install()
        code = run(sys.argv[1:])
        _interrupt.finish()
    except BaseException as exc:
        # An interrupt may reach here wrapped in another exception (see _interrupt.delivered).
        signum = exc.signum if isinstance(exc, _interrupt.Interrupted) else _interrupt.delivered()
        if signum is None:
            raise
        interrupted = _interrupt.Interrupted(signum)
        _interrupt.undo_created()
        _interrupt.finish()
        sys.stderr.write(_interrupt.interrupted_line(interrupted) + "\n")
        # Everything is cleaned up: leave now. Tearing the interpreter down can take a second
        # or more once PyTorch is loaded, and daemon threads (hashing) are stopped this way.
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(interrupted.exit_code)
    sys.exit(code)
