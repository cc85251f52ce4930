"""``weightvault scan`` and ``weightvault convert``: parsing and rendering only.

The decisions live in :mod:`weightvault.scan`; heavy imports stay inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import typer

ORDER = 20

_FAIL_ON_HELP = (
    "Exit 1 when a finding is at or above this verdict: unknown (default) or dangerous "
    "(suspicious is the old name of unknown)."
)


def scan_command(
    paths: list[Path] = typer.Argument(..., help="Model files or folders to scan."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON report."),
    sarif_output: bool = typer.Option(False, "--sarif", help="Print a SARIF 2.1.0 report."),
    fail_on: str = typer.Option("unknown", "--fail-on", help=_FAIL_ON_HELP),
    allow: list[str] = typer.Option(
        [], "--allow", help="Trust this import (module.name, or module.* for a whole module)."
    ),
    policy: str | None = typer.Option(
        None, "--policy", help="A TOML policy file of trusted (or denied) globals."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="List clean files too."),
    workers: int = typer.Option(
        1, "--workers", min=0, max=64, help="Processes for big folders (0: one per CPU)."
    ),
) -> None:
    """Scan model files for code-execution payloads without loading them.

    Formats are recognized by content: pickle (protocols 0-5), PyTorch zip / legacy, joblib, NumPy, Keras (.keras, .h5), ONNX, GGUF, safetensors, and zip/tar/gzip archives of them. Every import is safe, unknown or dangerous, with its evidence.

    Exit codes: 0 every file safe, 1 findings at or above --fail-on, 2 a file could not be scanned.
    """  # noqa: E501 - Typer keeps docstring line breaks, so a paragraph is one line
    from weightvault.cli._ui import emit_json, err_console, out_console
    from weightvault.errors import UsageError
    from weightvault.scan import Severity, scan_paths
    from weightvault.scan.report import render_summary, render_table

    if json_output and sarif_output:
        raise UsageError("--json and --sarif are exclusive; pick one")
    try:
        threshold = Severity.parse(fail_on)
    except ValueError as exc:
        raise UsageError(f"--fail-on: {exc}") from exc
    if threshold == Severity.SAFE:
        raise UsageError("--fail-on: use unknown or dangerous")
    try:
        report = scan_paths(paths, allow=allow, policy_file=policy, workers=workers)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if json_output:
        emit_json(report.to_json())
    elif sarif_output:
        emit_json(report.to_sarif())
    elif verbose or report.findings or report.errors:
        render_table(report, out_console(), verbose=verbose)
    else:  # nothing to tabulate: one summary line, the same words as the table's last line
        render_summary(report)
    if not json_output and not sarif_output:
        console = err_console()
        for path, message in report.errors:
            console.print(f"error: {path}: {message}", markup=False, highlight=False)
    raise typer.Exit(report.exit_code(threshold))


def convert_command(
    checkpoint: Path = typer.Argument(..., help="PyTorch checkpoint (zip or legacy pickle)."),
    output: Path = typer.Option(..., "--output", "-o", help="The .safetensors file to write."),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
    allow: list[str] = typer.Option(
        [], "--allow", help="Also accept this unknown import while converting (not dangerous)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Convert a PyTorch pickle checkpoint to safetensors without running any of its code.

    Only allow-listed globals (tensor rebuild helpers, storages, OrderedDict) are admitted and
    none of them is called; a checkpoint with other imports is refused, naming the finding.
    """
    from weightvault import _interrupt
    from weightvault.cli._ui import emit_json, out_console
    from weightvault.scan.convert import convert_checkpoint

    _interrupt.note_untouched(checkpoint)
    result = convert_checkpoint(checkpoint, output, force=force, allow=allow)
    if json_output:
        emit_json(result.to_json())
    else:
        console = out_console()
        console.print(
            f"wrote {output}: {len(result.tensors)} tensors, {result.total_bytes} bytes of data",
            markup=False,
        )
        for name in result.skipped:  # what the safetensors file does not hold
            console.print(f"skipped (not a tensor): {name}", markup=False)


def register(app: typer.Typer) -> None:
    app.command("scan")(scan_command)
    app.command("convert")(convert_command)
