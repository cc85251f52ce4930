"""``weightvault inventory``: find copies of known models and stray weight files on this machine.

Parsing and printing only; the walk is :func:`weightvault.inventory.take_inventory`. Not to be
confused with ``weightvault vault inventory``, which asks the custody service what it holds.
"""

from __future__ import annotations

from pathlib import Path

import typer

ORDER = 71


def inventory_command(
    roots: list[Path] = typer.Argument(..., help="Folders (or files) to walk."),
    data: Path | None = typer.Option(
        None, "--data", help="Custody data folder whose models to look for (read only)."
    ),
    database: str = typer.Option("", "--database", help="As given to serve (default: SQLite)."),
    blobs: str = typer.Option("", "--blobs", help="As given to serve (folder or s3://...)."),
    kek: str = typer.Option("", "--kek", help="As given to serve (keyring:PATH or pkcs11:URI)."),
    approved: list[Path] = typer.Option(
        [], "--approved", help="A folder where copies may be (repeatable)."
    ),
    signatures: list[Path] = typer.Option(
        [], "--signature", help="A signed OMS manifest whose files to look for (repeatable)."
    ),
    signature_key: Path | None = typer.Option(
        None, "--signature-key", help="Public key (PEM) the --signature files must verify with."
    ),
    no_tensors: bool = typer.Option(
        False, "--no-tensors", help="Do not look for re-saved copies (no KEK needed)."
    ),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Hashing threads."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Walk ROOTS for copies of known models (exact, re-saved, encrypted) and weight files.

    Known models are the custody deployment's (--data) and those of signed manifests
    (--signature). Exit 1 when a copy lies outside every --approved folder (and the data
    folder); weight files that match no model are listed but do not fail the run.
    """
    from weightvault.cli._ui import emit_json, err_console, out_console, progress_display
    from weightvault.errors import PolicyError, UsageError
    from weightvault.inventory import (
        References,
        add_signed_manifest,
        custody_references,
        take_inventory,
    )

    if data is None and (database or blobs or kek or no_tensors):
        raise UsageError("--database, --blobs, --kek and --no-tensors need --data")
    if bool(signatures) != (signature_key is not None):
        raise UsageError("--signature and --signature-key go together")
    references = None
    if data is not None:
        from weightvault.custody.config import ServiceConfig

        config = ServiceConfig(data_dir=data, database=database, blobs=blobs, kek=kek)
        references = custody_references(config, tensors=not no_tensors)
    if signature_key is not None:
        from weightvault.signing import KeyVerifier, read_signature

        verifier = KeyVerifier.from_file(signature_key)
        if references is None:
            references = References(
                "", tensor_note="not looked for: signed manifests list no tensor digests"
            )
        for signature in signatures:
            add_signed_manifest(references, read_signature(signature), verifier)
    report = take_inventory(
        roots,
        references,
        approved=approved,
        home=data,
        workers=workers,
        progress=None if json_output else progress_display("hashing"),
    )
    if json_output:
        emit_json(report.to_json())
    else:
        console = out_console()
        for finding in report.findings:
            where = "approved" if finding.approved else "STRAY"
            console.print(
                f"{where:8} {finding.describe()}  {finding.path}  {finding.size} bytes",
                markup=False,
            )
        copies = sum(f.is_custody_copy for f in report.findings)
        console.print(
            f"{report.files_seen} files, {report.bytes_hashed} bytes hashed; "
            f"{copies} copies of known models ({len(report.stray_copies)} stray), "
            f"{sum(not f.is_custody_copy for f in report.findings)} other weight files",
            markup=False,
        )
        if report.tensor_note and references is not None:
            console.print(f"re-saved copies {report.tensor_note}", markup=False)
        for path, error in report.errors:
            err_console().print(f"warning: {path}: {error}", markup=False)
    if report.stray_copies:
        raise PolicyError(
            f"{len(report.stray_copies)} copies of known models outside the approved folders"
        )


def register(app: typer.Typer) -> None:
    app.command("inventory")(inventory_command)
