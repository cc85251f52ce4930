"""``weightvault fingerprint keygen | issue`` and ``weightvault trace``: leak attribution.

Parsing and printing only; the marks and the statistics live in :mod:`weightvault.fingerprint`.
Heavy imports (torch, numpy) happen inside the commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from weightvault.cli._groups import GROUP, OptionGroup, with_option_groups
from weightvault.cli._options import JsonResult, show

if TYPE_CHECKING:
    from weightvault.fingerprint import MarkOptions

ORDER = 34

#: A recipients file is a list of ids; a megabyte is about 50,000 of them.
_MAX_RECIPIENTS_FILE = 1 << 20


def _candidates(recipients: list[str], recipients_file: Path | None) -> list[str]:
    from weightvault._fs import read_small_file
    from weightvault.errors import FormatError, UsageError

    out = list(recipients)
    if recipients_file is not None:
        data = read_small_file(recipients_file, "recipients file", _MAX_RECIPIENTS_FILE)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"{recipients_file}: recipients file is not UTF-8 text") from exc
        out += [
            line.strip()
            for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if not out:
        raise UsageError("no candidate recipients", hint="give --recipient R or --recipients FILE")
    return out


@dataclass(frozen=True)
class Marks(OptionGroup):
    """``fingerprint issue``'s options for how a copy is marked: the fields of
    :class:`~weightvault.fingerprint.MarkOptions`, checked here so that a bad value is a one-line
    usage error naming its option."""

    strength: Annotated[
        float,
        typer.Option("--strength", help="Robust-mark amplitude, fraction of each tensor's std."),
    ] = 0.02
    heads: Annotated[
        int | None,
        typer.Option("--heads", help="Attention heads per layer (default: from config.json)."),
    ] = None
    relu: Annotated[
        bool, typer.Option("--relu", help="The MLP activation is ReLU: also rescale units.")
    ] = False

    def options(self) -> MarkOptions:
        """The library's marking options, once each value is in range."""
        from weightvault.errors import UsageError
        from weightvault.fingerprint import MarkOptions

        if not 0 <= self.strength <= 0.5:
            raise UsageError(f"--strength {self.strength}: give a value from 0 to 0.5")
        if self.heads is not None and self.heads < 1:
            raise UsageError(f"--heads {self.heads}: give a positive head count")
        return MarkOptions(self.strength, self.heads, self.relu)


def _p_text(log10_p: float) -> str:
    """``1.2e-15``, or ``10^-1234.5`` where a float cannot hold it."""
    if log10_p > -300:
        return f"{10.0**log10_p:.2g}"
    return f"10^{log10_p:.1f}"


def register(app: typer.Typer) -> None:
    """Add ``fingerprint`` (keygen, issue) and ``trace`` to the application."""
    group = typer.Typer(
        name="fingerprint",
        help="Per-recipient marks in released weights (see also: weightvault trace).",
        no_args_is_help=True,
    )

    @group.command("keygen")
    def keygen_command(
        out: Path = typer.Option(..., "--out", "-o", help="Key file to write (mode 0600)."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing key file."),
        as_json: JsonResult = False,
    ) -> None:
        """Create the fingerprint secret (32 random bytes) every mark is derived from."""
        from weightvault.fingerprint import create_fingerprint_key

        key = create_fingerprint_key(out, force=force)
        show(
            {"key_file": str(out), "key_id": key.key_id()},
            as_json,
            [f"wrote {out} (fingerprint key {key.key_id()}, mode 0600)"],
            console=True,
        )

    @group.command("issue")
    @with_option_groups
    def issue_command(
        model: Path = typer.Argument(..., help="Model file (.safetensors, .pt, .bin) or folder."),
        recipient: str = typer.Option(..., "--recipient", "-r", help="Recipient id."),
        out: Path = typer.Option(..., "--out", "-o", help="The marked copy (same format)."),
        key_file: Path = typer.Option(..., "--key", "-k", help="Fingerprint key file."),
        marks: Marks = GROUP,
        force: bool = typer.Option(False, "--force", help="Overwrite OUT if it exists."),
        as_json: JsonResult = False,
    ) -> None:
        """Write RECIPIENT's fingerprinted copy of MODEL (same function, keyed marks)."""
        from weightvault import _interrupt

        options = marks.options()
        from weightvault.fingerprint import issue_copy, load_fingerprint_key

        key = load_fingerprint_key(key_file)
        _interrupt.note_untouched(model)
        issued = issue_copy(model, out, key, recipient, options, force=force)
        show(
            issued.to_json(),
            as_json,
            [
                f"wrote {out} for recipient {recipient}",
                f"fingerprint id: {issued.fingerprint_id}",
                f"function-preserving mark: {issued.permuted_groups} unit groups permuted; "
                f"robust mark: {issued.robust_tensors} tensors, {issued.robust_elements} weights",
            ],
            console=True,
        )

    app.add_typer(group)

    @app.command("trace")
    def trace_command(
        suspect: Path = typer.Argument(..., help="Suspect model: file or folder, any format."),
        model: Path = typer.Option(..., "--model", "-m", help="The custody original."),
        key_file: Path = typer.Option(..., "--key", "-k", help="Fingerprint key file."),
        recipients: list[str] = typer.Option(
            [], "--recipient", "-r", help="Candidate recipient (repeatable)."
        ),
        recipients_file: Path | None = typer.Option(
            None, "--recipients", help="File of candidate recipient ids, one a line."
        ),
        alpha: float = typer.Option(
            1e-6, "--alpha", help="Name recipients whose corrected p-value is below this."
        ),
        as_json: JsonResult = False,
    ) -> None:
        """Name the recipient whose marks SUSPECT carries, with a corrected p-value.

        Exit 0 when a recipient is named, 1 for "no recipient".
        """
        from weightvault.cli._ui import emit_json, out_console
        from weightvault.errors import UsageError

        if not 0 < alpha < 1:
            raise UsageError(f"--alpha {alpha}: give a level between 0 and 1")
        candidates = _candidates(recipients, recipients_file)
        from weightvault.fingerprint import load_fingerprint_key, trace_copy

        key = load_fingerprint_key(key_file)
        result = trace_copy(suspect, model, key, candidates, alpha=alpha)
        if as_json:
            emit_json(result.to_json())
        else:
            console = out_console()
            if result.attributed:
                for found in result.attributed:
                    console.print(
                        f"recipient {found.recipient}: z = {found.z:.1f}, p = "
                        f"{_p_text(found.log10_p_corrected)} (corrected for "
                        f"{result.candidates} recipients)",
                        markup=False,
                    )
            else:
                best = result.ranking[0]
                console.print(
                    f"no recipient: best {best.recipient} at z = {best.z:.1f}, p = "
                    f"{_p_text(best.log10_p_corrected)} (corrected for {result.candidates} "
                    f"recipients; needs p < {alpha:g})",
                    markup=False,
                )
            console.print(
                f"compared {result.elements} weights in {result.tensors_compared} tensors "
                f"({result.tensors_missing} missing); {result.groups_rearranged} of "
                f"{result.groups_aligned} unit groups re-aligned"
            )
        if not result.attributed:
            raise typer.Exit(1)
