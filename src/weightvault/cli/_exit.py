"""How a command's failure becomes one line on standard error and an exit code.

Shared by the Typer application and the lean ``scan`` entry point, so both say the same words.
Standard library only: the lean entry point must not import click.
"""

from __future__ import annotations

import os
import sys

__all__ = ["fail", "report_exception"]


def fail(message: str, code: int) -> int:
    """Print ``error: MESSAGE`` on standard error and return ``code``.

    The message often names a file; control characters in it are shown as escapes, so it stays
    one line and cannot drive the terminal.
    """
    from weightvault._console import printable

    sys.stderr.write(f"error: {printable(message)}\n")
    sys.stderr.flush()
    return code


def report_exception(exc: BaseException) -> int:
    """The exit code for what a command raised, after printing its one-line message.

    :class:`~weightvault.errors.WeightvaultError` keeps its message and code; anything else is
    an internal error (exit 3) that still never prints a traceback, unless ``WEIGHTVAULT_DEBUG``
    is set, in which case it is re-raised.
    """
    from weightvault.errors import WeightvaultError

    if isinstance(exc, WeightvaultError):
        return fail(exc.one_line(), exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        return fail("interrupted", 130)
    if isinstance(exc, BrokenPipeError):
        return 0
    if not isinstance(exc, Exception) or os.environ.get("WEIGHTVAULT_DEBUG"):
        raise exc
    text = " ".join(str(exc).split()) or type(exc).__name__
    return fail(
        f"internal error ({type(exc).__name__}): {text}; "
        "please report it (WEIGHTVAULT_DEBUG=1 shows the traceback)",
        3,
    )
