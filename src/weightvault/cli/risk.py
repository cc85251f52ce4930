"""``weightvault risk add|list|export``: a model's risk register, kept in custody
(:mod:`weightvault.custody.risk`); each added entry is logged."""

from __future__ import annotations

from pathlib import Path

import typer

from weightvault.cli.vault import _JSON, _TOKEN, _URL, _client, _show

ORDER = 64

risk_app = typer.Typer(
    name="risk",
    help="Risk register: foreseeable misuse per model, with evidence attestations.",
    no_args_is_help=True,
)


@risk_app.command("add")
def add(
    model: str = typer.Argument(..., help="Model name."),
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
    url: str | None = _URL,
    token: str | None = _TOKEN,
    as_json: bool = _JSON,
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
    with _client(url, token) as client:
        result = client.add_risk(model, entry)
    _show(
        result, as_json, [f"risk {result['id']} added to {model} (log entry {result['log_index']})"]
    )


@risk_app.command("list")
def list_risks(
    model: str = typer.Argument(..., help="Model name."),
    url: str | None = _URL,
    token: str | None = _TOKEN,
    as_json: bool = _JSON,
) -> None:
    """List a model's risk entries."""
    with _client(url, token) as client:
        result = client.list_risks(model)
    lines = [
        f"{r['id']}  {r['likelihood']}/{r['severity']}  {r['hazard']}  owner {r['owner']}  "
        f"{len(r['evidence'])} evidence"
        for r in result
    ]
    _show(result, as_json, lines or ["no risks"])


@risk_app.command("export")
def export(
    model: str = typer.Argument(..., help="Model name."),
    fmt: str = typer.Option("json", "--format", help="json or md."),
    output: Path | None = typer.Option(None, "--output", "-o", help="File (else stdout)."),
    force: bool = typer.Option(False, "--force", help="Overwrite --output."),
    url: str | None = _URL,
    token: str | None = _TOKEN,
) -> None:
    """Export a model's risk register as JSON or Markdown."""
    from weightvault.custody.risk import render_register
    from weightvault.errors import UsageError

    if fmt not in ("json", "md"):
        raise UsageError("--format: expected json or md")
    with _client(url, token) as client:
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
