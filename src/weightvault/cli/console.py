"""``weightvault console link``: a one-time link to register a passkey in the approver console.

The console itself is served by ``weightvault serve`` (``/console``); this command only asks the
service, with the caller's API token, for the registration link. Only Typer is imported at load
time.
"""

from __future__ import annotations

import typer

ORDER = 61

console_app = typer.Typer(
    name="console",
    help="The approver console (web pages of the custody service, passkey sign-in).",
    no_args_is_help=True,
)


@console_app.command("link")
def link(
    url: str | None = typer.Option(
        None, "--url", help="Server URL (else WEIGHTVAULT_URL, else vault login)."
    ),
    token: str | None = typer.Option(
        None, "--token", help="API token (else WEIGHTVAULT_TOKEN, else login)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print a one-time link (valid 15 minutes) that registers a passkey for you."""
    from weightvault.cli._ui import emit_json
    from weightvault.custody.client import VaultClient, resolve_config

    with VaultClient(resolve_config(url, token)) as client:
        result = client.console_link()
    if as_json:
        emit_json({"url": result["url"], "expires_in_s": result["expires_in_s"]})
    else:
        typer.echo(f"open within 15 minutes to register a passkey: {result['url']}")


def register(app: typer.Typer) -> None:
    app.add_typer(console_app, name="console")
