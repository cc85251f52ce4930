"""``python -m weightvault.scan``: the ``weightvault scan`` command without the Typer shell.

Same options, output and exit codes as ``weightvault scan``; it exists because CI loops and
pre-commit hooks call the scanner once per file, and then interpreter start-up dominates: this
entry point imports only the standard library and the scanner (no Typer, no Rich unless a table
has rows to show).
"""

from __future__ import annotations

import argparse
import sys

from weightvault.errors import WeightvaultError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m weightvault.scan",
        description="Scan model files for code-execution payloads without loading them. "
        "Exit codes: 0 clean, 1 findings at or above --fail-on, 2 a file could not be scanned.",
    )
    parser.add_argument("paths", nargs="+", help="model files or folders")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print a JSON report")
    output.add_argument("--sarif", action="store_true", help="print a SARIF 2.1.0 report")
    parser.add_argument("--fail-on", default="suspicious", help="suspicious or dangerous")
    parser.add_argument("--allow", action="append", default=[], help="trust module.name")
    parser.add_argument("-v", "--verbose", action="store_true", help="list clean files too")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes for big folders (0: one per CPU)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the scan command; returns the exit code (errors become one line on stderr)."""
    import json

    from weightvault.scan import Severity, scan_paths
    from weightvault.scan.report import render_plain_or_table

    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return 0 if exc.code == 0 else 2
    try:
        threshold = Severity.parse(args.fail_on)
        if threshold == Severity.CLEAN:
            raise ValueError("use suspicious or dangerous")
        report = scan_paths(args.paths, allow=args.allow, workers=max(0, args.workers))
    except ValueError as exc:
        sys.stderr.write(f"error: {' '.join(str(exc).split())}\n")
        return 2
    except WeightvaultError as exc:
        sys.stderr.write(f"error: {exc.one_line()}\n")
        return exc.exit_code
    if args.json or args.sarif:
        document = report.to_sarif() if args.sarif else report.to_json()
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    else:
        render_plain_or_table(report, verbose=args.verbose)
        for path, message in report.errors:
            sys.stderr.write(f"error: {path}: {message}\n")
    sys.stdout.flush()
    return report.exit_code(threshold)


if __name__ == "__main__":
    sys.exit(main())
