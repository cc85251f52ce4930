"""``weightvault risk add|update|close|list|export``: a model's risk register, kept in custody
(:mod:`weightvault.custody.risk`); every change is logged with the whole entry."""

from __future__ import annotations

from pathlib import Path

import typer

from weightvault.cli._groups import GROUP, command_group
from weightvault.cli._options import Client, Connection, ModelName

ORDER = 64

risk_app = command_group(
    "risk", "Risk register: foreseeable misuse per model, with evidence attestations."
)


@risk_app.command("add")
def add(
    model: ModelName,
    hazard: str = typer.Option(..., "--hazard", help="The foreseeable misuse."),
    likelihood: str = typer.Option(
        ..., "--likelihood", help="rare, unlikely, possible, likely or almost-certain."
    ),
    severity: str = typer.Option(
        ..., "--severity", help="negligible, minor, moderate, major or severe."
    ),
    owner: str = typer.Option(..., "--owner", help="Principal who owns the risk."),
    mitigations: list[str] = typer.Option([], "--mitigation", help="A mitigation; repeat."),
    evidence: list[str] = typer.Option(
        [], "--evidence", help="Digest of an attached attestation (sha256:HEX); repeat."
    ),
    service: Client = GROUP,
) -> None:
    """Add a risk entry to a model's register."""
    entry = {
        "hazard": hazard,
        "likelihood": likelihood,
        "severity": severity,
        "owner": owner,
        "mitigations": mitigations,
        "evidence": evidence,
    }
    service.call(
        lambda client: client.add_risk(model, entry),
        lambda result: [f"risk {result['id']} added to {model} (log entry {result['log_index']})"],
    )


@risk_app.command("update")
def update(
    model: ModelName,
    risk_id: str = typer.Argument(..., help="The entry's id (risk list)."),
    hazard: str | None = typer.Option(None, "--hazard", help="The foreseeable misuse."),
    likelihood: str | None = typer.Option(None, "--likelihood", help="A new likelihood."),
    severity: str | None = typer.Option(None, "--severity", help="A new severity."),
    owner: str | None = typer.Option(None, "--owner", help="A new owner."),
    mitigations: list[str] = typer.Option(
        [], "--mitigation", help="Replaces the mitigations; repeat for several."
    ),
    no_mitigations: bool = typer.Option(False, "--no-mitigations", help="Clear the mitigations."),
    evidence: list[str] = typer.Option(
        [], "--evidence", help="Replaces the evidence digests; repeat for several."
    ),
    no_evidence: bool = typer.Option(False, "--no-evidence", help="Clear the evidence."),
    service: Client = GROUP,
) -> None:
    """Change fields of an open risk entry (the others stay as they are)."""
    from weightvault.errors import UsageError

    if (mitigations and no_mitigations) or (evidence and no_evidence):
        raise UsageError("--no-mitigations/--no-evidence exclude --mitigation/--evidence")
    changes: dict[str, object] = {
        name: value
        for name, value in (
            ("hazard", hazard),
            ("likelihood", likelihood),
            ("severity", severity),
            ("owner", owner),
        )
        if value is not None
    }
    if mitigations or no_mitigations:
        changes["mitigations"] = mitigations
    if evidence or no_evidence:
        changes["evidence"] = evidence
    if not changes:
        raise UsageError("nothing to change: give at least one field option")
    service.call(
        lambda client: client.update_risk(model, risk_id, changes),
        lambda result: [
            f"risk {risk_id} of {model} updated: {', '.join(sorted(changes))} "
            f"(log entry {result['log_index']})"
        ],
    )


@risk_app.command("close")
def close(
    model: ModelName,
    risk_id: str = typer.Argument(..., help="The entry's id (risk list)."),
    reason: str = typer.Option(..., "--reason", help="Why the risk no longer applies."),
    service: Client = GROUP,
) -> None:
    """Close a risk entry, saying why (it stays in the register, marked closed)."""
    service.call(
        lambda client: client.close_risk(model, risk_id, reason),
        lambda result: [f"risk {risk_id} of {model} closed (log entry {result['log_index']})"],
    )


@risk_app.command("list")
def list_risks(
    model: ModelName,
    service: Client = GROUP,
) -> None:
    """List a model's risk entries."""
    service.listing(
        lambda client: client.list_risks(model),
        lambda r: (
            f"{r['id']}  {r.get('status', 'open')}  {r['likelihood']}/{r['severity']}  "
            f"{r['hazard']}  owner {r['owner']}  {len(r['evidence'])} evidence"
        ),
        "no risks",
    )


@risk_app.command("export")
def export(
    model: ModelName,
    fmt: str = typer.Option("json", "--format", help="json or md."),
    output: Path | None = typer.Option(None, "--output", "-o", help="File (else stdout)."),
    force: bool = typer.Option(False, "--force", help="Overwrite --output."),
    server: Connection = GROUP,
) -> None:
    """Export a model's risk register (open and closed entries) as JSON or Markdown."""
    from weightvault.custody.risk import render_register
    from weightvault.errors import UsageError

    if fmt not in ("json", "md"):
        raise UsageError("--format: expected json or md")
    with server.client() as client:
        data = render_register(model, client.list_risks(model), fmt)
    if output is None:
        typer.echo(data.decode("utf-8"), nl=False)
        return
    from weightvault._fs import atomic_output

    with atomic_output(output, force=force) as out:
        out.write(data)
    typer.echo(f"wrote {output}", err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(risk_app, name="risk")
