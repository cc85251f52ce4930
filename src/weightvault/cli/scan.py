"""``weightvault scan``: its options, parsing and output, defined once.

CI loops and pre-commit hooks run the scanner once per file, so start-up is most of its time.
This module therefore imports only the standard library at load time, and the command has one
definition with two parsers over it:

* :data:`OPTIONS` is the command's interface (names, kinds, defaults, limits, help);
  :func:`execute` is its behaviour (checks, scan, output), given a :class:`ScanOptions`.
* :func:`run` is what the console script calls for ``weightvault scan ...``: a small parser that
  reads the command line exactly as click would (:func:`parse`) and runs :func:`execute`, with no
  Typer, click or Rich imported. Whatever it does not read exactly as click does (``--help``,
  usage errors, clusters of short options, values that look like options) it leaves to click.
* :func:`register` builds the Typer command from the same :data:`OPTIONS` (its ``--help``,
  usage errors and shell completion) and runs the same :func:`execute`.

``tests/cli/test_scan_dispatch.py`` runs both on the same inputs and compares every byte; a
property test checks that whatever :func:`parse` accepts, click parses to the same options.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import typer

    from weightvault.scan.report import ScanReport

__all__ = ["OPTIONS", "ORDER", "Option", "ScanOptions", "execute", "parse", "register", "run"]

ORDER = 20

HELP = (
    "Scan model files for code-execution payloads without loading them.\n\n"
    "Formats are recognized by content: pickle (protocols 0-5), PyTorch zip / legacy, joblib, "
    "NumPy, Keras (.keras, .h5), ONNX, GGUF, safetensors, and zip/tar/gzip archives of them. "
    "Every import is safe, unknown or dangerous, with its evidence.\n\n"
    "Exit codes: 0 every file safe, 1 findings at or above --fail-on, 2 a file could not be "
    "scanned."
)
PATHS_HELP = "Model files or folders to scan."


class ScanOptions(NamedTuple):
    """What one ``weightvault scan`` command line asks for (the defaults are the command's).

    (Named tuples, not dataclasses: importing :mod:`dataclasses` costs start-up time.)"""

    paths: list[str]
    json: bool = False
    sarif: bool = False
    fail_on: str = "unknown"
    allow: tuple[str, ...] = ()
    policy: str | None = None
    verbose: bool = False
    workers: int = 1


class Option(NamedTuple):
    """One option of the command: its :class:`ScanOptions` field, names and kind."""

    dest: str
    names: tuple[str, ...]
    help: str
    kind: str = "value"
    """``flag`` (no value), ``value`` (the last one given wins) or ``multiple`` (repeatable)."""
    value_type: type = str
    limits: tuple[int, int] | None = None
    """For integers: the inclusive range click enforces."""


OPTIONS: tuple[Option, ...] = (
    Option("json", ("--json",), "Print a JSON report.", "flag"),
    Option("sarif", ("--sarif",), "Print a SARIF 2.1.0 report.", "flag"),
    Option(
        "fail_on", ("--fail-on",),
        "Exit 1 when a finding is at or above this verdict: unknown (default) or dangerous "
        "(suspicious is the old name of unknown).",
    ),
    Option(
        "allow", ("--allow",), "Trust this import (module.name, or module.* for a whole module).",
        "multiple",
    ),
    Option("policy", ("--policy",), "A TOML policy file of trusted (or denied) globals."),
    Option("verbose", ("--verbose", "-v"), "List clean files too.", "flag"),
    Option(
        "workers", ("--workers",), "Processes for big folders (0: one per CPU).", value_type=int,
        limits=(0, 64),
    ),
)
_BY_NAME = {name: option for option in OPTIONS for name in option.names}
_DEFAULTS = ScanOptions(paths=[])


def _value_option_names() -> list[str]:
    """The options that take a value (an error about a path can then name its option)."""
    return [name for option in OPTIONS if option.kind != "flag" for name in option.names]


# -- the console script's parser -------------------------------------------------------------------


def parse(argv: Sequence[str]) -> ScanOptions | None:
    """``argv`` (the arguments after ``scan``) as click reads them, or ``None`` where click must
    read them itself: help, anything click refuses, and forms this parser does not try to
    mirror (clusters of short options, a separate value that starts with ``-``, an existing path
    that cannot be read or a path with a NUL byte).

    Click's rules kept here: options and paths may be mixed; after ``--`` everything is a path;
    ``-`` alone is a path; ``--name=value`` or ``--name value``; no abbreviations; a repeated
    single-value option keeps its last value.
    """
    values: dict[str, Any] = {}
    paths: list[str] = []
    index = 0
    while index < len(argv):
        argument = argv[index]
        index += 1
        if argument == "--":
            paths += argv[index:]
            break
        if argument[:1] != "-" or argument == "-":
            paths.append(argument)
            continue
        name, equals, inline = (
            argument.partition("=") if argument[:2] == "--" else (argument, "", "")
        )
        option = _BY_NAME.get(name)
        if option is None:
            return None
        if option.kind == "flag":
            if equals:
                return None
            values[option.dest] = True
            continue
        if equals:
            text = inline
        elif index < len(argv) and argv[index][:1] != "-":
            text = argv[index]
            index += 1
        else:
            return None
        value: str | int = text
        if option.value_type is int:
            try:
                value = int(text)
            except ValueError:
                return None
            if option.limits is not None and not option.limits[0] <= value <= option.limits[1]:
                return None
        if option.kind == "multiple":
            values[option.dest] = (*values.get(option.dest, ()), value)
        else:
            values[option.dest] = value
    if not paths:
        return None
    for path in paths:  # Typer's Path arguments: an existing path must be readable
        try:
            os.stat(path)
        except OSError:
            continue  # a missing path is an error in the report, not a usage error
        except ValueError:
            return None
        if not os.access(path, os.R_OK):
            return None
    from weightvault.scan import display_path

    return ScanOptions([display_path(path) for path in paths], **values)


def run(argv: Sequence[str]) -> int | None:
    """Run ``weightvault scan ARGV...`` and return its exit code, or ``None`` when click must
    parse ``argv`` (see :func:`parse`). What the scan raises becomes one line on standard
    error, exactly as the Typer application reports it."""
    options = parse(argv)
    if options is None:
        return None
    try:
        return execute(options)
    except (Exception, KeyboardInterrupt) as exc:
        from weightvault.cli._exit import report_exception

        return report_exception(exc, ["scan", *argv], _value_option_names)


# -- the command -----------------------------------------------------------------------------------


def execute(options: ScanOptions) -> int:
    """The command's behaviour, whichever parser read the command line: check the options,
    scan, print the report, and return the exit code."""
    from weightvault.errors import UsageError
    from weightvault.scan import Severity, scan_paths

    if options.json and options.sarif:
        raise UsageError("--json and --sarif are exclusive; pick one")
    try:
        threshold = Severity.parse(options.fail_on)
    except ValueError as exc:
        raise UsageError(f"--fail-on: {exc}") from exc
    if threshold == Severity.SAFE:
        raise UsageError("--fail-on: use unknown or dangerous")
    try:
        report = scan_paths(
            options.paths, allow=options.allow, policy_file=options.policy,
            workers=options.workers,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if options.json or options.sarif:
        import json

        document = report.to_sarif() if options.sarif else report.to_json()
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
        sys.stdout.flush()
    else:
        _render(report, verbose=options.verbose)
    return report.exit_code(threshold)


def _render(report: ScanReport, *, verbose: bool) -> None:
    """A table (or, with nothing to tabulate, one summary line without Rich) on standard output,
    then one line per error on standard error."""
    from weightvault.scan.report import render_summary, render_table

    if not (verbose or report.findings or report.errors):
        render_summary(report)
        return
    from weightvault._console import plain_console

    render_table(report, plain_console(), verbose=verbose)
    if report.errors:
        console = plain_console(stderr=True)
        for path, message in report.errors:
            console.print(f"error: {path}: {message}", markup=False, highlight=False)


# -- the Typer command -----------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add ``scan`` to ``app``: a Typer command whose parameters are built from :data:`OPTIONS`
    (help, usage errors and completion come from them) and whose body is :func:`execute`."""
    import inspect
    from pathlib import Path

    import typer

    def scan_command(**values: Any) -> None:
        paths = [str(path) for path in values.pop("paths")]
        for option in OPTIONS:
            if option.kind == "multiple":
                values[option.dest] = tuple(values[option.dest])
        raise typer.Exit(execute(ScanOptions(paths, **values)))

    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [
        inspect.Parameter(
            "paths", keyword, default=typer.Argument(..., help=PATHS_HELP), annotation=list[Path]
        )
    ]
    for option in OPTIONS:
        default = getattr(_DEFAULTS, option.dest)
        annotation: Any = {"flag": bool, "multiple": list[str]}.get(option.kind, option.value_type)
        if default is None:
            annotation = annotation | None
        low, high = option.limits or (None, None)
        info = typer.Option(
            [] if option.kind == "multiple" else default, *option.names, help=option.help,
            min=low, max=high,
        )
        parameters.append(inspect.Parameter(option.dest, keyword, default=info,
                                            annotation=annotation))
    scan_command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    scan_command.__annotations__ = {p.name: p.annotation for p in parameters}
    scan_command.__doc__ = HELP
    app.command("scan")(scan_command)
