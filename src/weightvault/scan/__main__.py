"""``python -m weightvault.scan``: the ``weightvault scan`` command without the Typer shell.

The ``weightvault`` console script runs ``weightvault scan ...`` through :func:`main` too (see
:mod:`weightvault.cli`), because CI loops and pre-commit hooks call the scanner once per file and
then interpreter start-up dominates: this module imports only the standard library and the
scanner (no Typer, no Rich unless a table has rows to show or an error line is printed).

Same options, output, error lines and exit codes as the Typer command
(:func:`weightvault.cli.scan.scan_command`, the reference): the same checks in the same order,
the same renderers, the same Rich console settings for tables and error lines, and the same
last-line-of-defence exception handling as :func:`weightvault.cli.app.run`.
``tests/cli/test_scan_dispatch.py`` runs both on the same inputs and compares every byte.

Parsing is deliberately no more lenient than click's: no option abbreviations, no positional
argument that looks like an option, ``--workers`` in 0..64, and an existing path must be readable
(Typer's ``Path`` arguments check that). What argparse refuses is a usage error here (one line,
exit 2); the console script hands such arguments to the Typer command instead, so the message is
click's, word for word.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import argparse

    from weightvault.scan.report import ScanReport

__all__ = ["main"]

_PROG = "python -m weightvault.scan"
_WORKERS_MAX = 64  # Typer's range for --workers: min=0, max=64


class _ArgumentError(Exception):
    """A usage error found while parsing the command line (the message has no ``error:``)."""


class _HelpRequested(Exception):
    """``-h``/``--help``, alone or in a cluster of short options (``-vh``)."""


def _parser(prog: str) -> argparse.ArgumentParser:
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:  # argparse prints a usage block, exits
            raise _ArgumentError(message)

    class Formatter(argparse.HelpFormatter):
        # An explicit width keeps argparse from importing shutil (and bz2, lzma) at start-up.
        def __init__(self, prog: str) -> None:
            try:
                columns = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size().columns
            except (ValueError, OSError):
                columns = 80
            super().__init__(prog, width=max(columns - 2, 20))

    parser = Parser(
        prog=prog,
        description="Scan model files for code-execution payloads without loading them. "
        "Exit codes: 0 every file safe, 1 findings at or above --fail-on, 2 a file could not "
        "be scanned.",
        allow_abbrev=False,  # click matches option names exactly
        formatter_class=Formatter,
        add_help=False,  # help is a flag here, so that the console script can leave it to Typer
    )
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    parser.add_argument("paths", nargs="*", help="model files or folders")
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    parser.add_argument("--sarif", action="store_true", help="print a SARIF 2.1.0 report")
    parser.add_argument(
        "--fail-on", default="unknown", help="unknown (default) or dangerous; suspicious is the "
        "old name of unknown"
    )
    parser.add_argument("--allow", action="append", default=[], help="trust module.name")
    parser.add_argument("--policy", default=None, help="a TOML policy file of trusted globals")
    parser.add_argument("-v", "--verbose", action="store_true", help="list clean files too")
    parser.add_argument(
        "--workers", type=int, default=1, help="processes for big folders (0: one per CPU)"
    )
    return parser


def parse_args(argv: Sequence[str] | None, prog: str = _PROG) -> argparse.Namespace:
    """Parse the ``scan`` arguments; raises :class:`_ArgumentError` for a usage error and
    :class:`_HelpRequested` for ``-h``/``--help``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first ``--`` is a path, as click reads it. argparse's intermixed
    # parsing does not keep that promise (``-- a --json`` loses the path ``--json``, ``-- -h``
    # prints the help), so only the part before it goes through argparse.
    after: list[str] = []
    if "--" in args_list:
        cut = args_list.index("--")
        args_list, after = args_list[:cut], args_list[cut + 1 :]
    args = _parser(prog).parse_intermixed_args(args_list)
    if args.help:
        raise _HelpRequested
    if not args.paths and not after:
        raise _ArgumentError("Missing argument 'PATHS...'.")
    for path in args.paths:
        if path.startswith("-") and path != "-":
            raise _ArgumentError(f"No such option '{path}'.")
    args.paths += after
    if not 0 <= args.workers <= _WORKERS_MAX:
        raise _ArgumentError(
            f"Invalid value for '--workers': {args.workers} is not in the range "
            f"0<=x<={_WORKERS_MAX}."
        )
    for path in args.paths:
        try:
            os.stat(path)
        except OSError:
            continue  # a missing path is an error in the report, not a usage error
        except ValueError as exc:  # an embedded NUL byte: click fails on it too
            raise _ArgumentError(f"Invalid value for 'PATHS...': {exc}") from exc
        if not os.access(path, os.R_OK):
            raise _ArgumentError(f"Invalid value for 'PATHS...': Path {path!r} is not readable.")
    from weightvault.scan import display_path

    args.paths = [display_path(path) for path in args.paths]  # as Typer's Path arguments print
    return args


def main(
    argv: Sequence[str] | None = None,
    *,
    prog: str = _PROG,
    fallback: Callable[[], int] | None = None,
) -> int:
    """Run the scan command; returns the exit code (errors become one line on stderr).

    ``fallback`` runs instead when the arguments ask for help or the parser refuses them (the
    console script passes one that lets the Typer command print its help or word the usage
    error). Without it, help is argparse's and a usage error is ``error: ... (see --help)``,
    exit code 2.
    """
    try:
        args = parse_args(argv, prog)
    except _HelpRequested:
        if fallback is not None:
            return fallback()
        _parser(prog).print_help()
        return 0
    except _ArgumentError as exc:
        if fallback is not None:
            return fallback()
        from weightvault.cli._exit import fail

        return fail(f"{' '.join(str(exc).split())} (see --help)", 2)
    return _guarded(lambda: _scan(args))


def _guarded(command: Callable[[], int]) -> int:
    """:func:`weightvault.cli.app.run`'s handling of what a command raises, without click."""
    from weightvault.cli._exit import report_exception

    try:
        return command()
    except (Exception, KeyboardInterrupt) as exc:
        return report_exception(exc)


def _scan(args: argparse.Namespace) -> int:
    """The body of ``weightvault scan`` (the Typer command's checks, in its order)."""
    from weightvault.errors import UsageError
    from weightvault.scan import Severity, scan_paths

    if args.json and args.sarif:
        raise UsageError("--json and --sarif are exclusive; pick one")
    try:
        threshold = Severity.parse(args.fail_on)
    except ValueError as exc:
        raise UsageError(f"--fail-on: {exc}") from exc
    if threshold == Severity.SAFE:
        raise UsageError("--fail-on: use unknown or dangerous")
    try:
        report = scan_paths(
            args.paths, allow=args.allow, policy_file=args.policy, workers=args.workers
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.json or args.sarif:
        import json

        document = report.to_sarif() if args.sarif else report.to_json()
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
        sys.stdout.flush()
    else:
        _render(report, verbose=args.verbose)
    return report.exit_code(threshold)


def _render(report: ScanReport, *, verbose: bool) -> None:
    """Table or summary on stdout, then one line per error on stderr, as the Typer command
    prints them (the same Rich console settings as :mod:`weightvault.cli._ui`)."""
    from weightvault.scan.report import render_summary, render_table

    if not (verbose or report.findings or report.errors):
        render_summary(report)  # nothing to tabulate: no Rich needed
        return
    from weightvault._console import plain_console

    render_table(report, plain_console(), verbose=verbose)
    if report.errors:
        console = plain_console(stderr=True)
        for path, message in report.errors:
            console.print(f"error: {path}: {message}", markup=False, highlight=False)


if __name__ == "__main__":
    sys.exit(main())
