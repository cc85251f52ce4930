"""``weightvault convert``: a PyTorch pickle checkpoint to safetensors (parsing and printing only).

The conversion lives in :mod:`weightvault.scan.convert`; heavy imports stay inside the command.
"""

from __future__ import annotations

from pathlib import Path

import typer

ORDER = 21  # listed right after scan


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
    app.command("convert")(convert_command)
