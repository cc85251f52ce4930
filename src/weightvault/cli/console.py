"""``weightvault console link|passkeys|revoke``: passkeys for the approver console.

The console itself is served by ``weightvault serve`` (``/console``). These commands ask the
service, with the caller's API token, for a one-time registration link (signed with the
approver's Ed25519 approval key, so a token alone cannot add a passkey that approves), list
passkeys and revoke one. Only Typer is imported at load time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

ORDER = 61

console_app = typer.Typer(
    name="console",
    help="The approver console (web pages of the custody service, passkey sign-in).",
    no_args_is_help=True,
)

_URL = typer.Option(None, "--url", help="Server URL (else WEIGHTVAULT_URL, else vault login).")
_TOKEN = typer.Option(None, "--token", help="API token (else WEIGHTVAULT_TOKEN, else login).")
_JSON = typer.Option(False, "--json", help="Print JSON.")


def _client(url: str | None, token: str | None) -> Any:
    from weightvault.custody.client import VaultClient, resolve_config

    return VaultClient(resolve_config(url, token))


@console_app.command("link")
def link(
    key: Path | None = typer.Option(
        None, "--key", help="Your Ed25519 approval key (PEM): proves the request is yours."
    ),
    pkcs11_uri: str | None = typer.Option(
        None, "--pkcs11-uri", help="Your Ed25519 approval key on a PKCS#11 token."
    ),
    for_name: str | None = typer.Option(
        None, "--for", help="Admins: a link for this principal instead of yourself."
    ),
    url: str | None = _URL,
    token: str | None = _TOKEN,
    as_json: bool = _JSON,
) -> None:
    """Print a one-time link (valid 15 minutes) that registers a passkey."""
    import datetime as dt

    from weightvault.cli._ui import emit_json
    from weightvault.custody.approvals import load_approval_signer
    from weightvault.custody.console.signatures import sign_enrolment

    with _client(url, token) as client:
        proof = None
        if key is not None or pkcs11_uri is not None:
            signer = load_approval_signer(key, pkcs11_uri)
            name = client.whoami()["name"]
            proof = sign_enrolment(name, signer, dt.datetime.now(dt.UTC))
        result = client.console_link(proof, for_name)
    if as_json:
        emit_json(
            {
                "principal": result["principal"],
                "url": result["url"],
                "expires_in_s": result["expires_in_s"],
            }
        )
    else:
        typer.echo(
            f"open within 15 minutes to register a passkey for {result['principal']}: "
            f"{result['url']}"
        )


@console_app.command("passkeys")
def passkeys(url: str | None = _URL, token: str | None = _TOKEN, as_json: bool = _JSON) -> None:
    """List registered passkeys (all for admins and auditors, else your own)."""
    from weightvault.cli._ui import emit_json

    with _client(url, token) as client:
        rows = client.passkeys()
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
        typer.echo(
            f"{row['key_id'][:16]}  {row['principal']}  {row['algorithm']}  "
            f"registered {row['created_at']}  {state}"
        )


@console_app.command("revoke")
def revoke(
    key_id: str = typer.Argument(..., help="The passkey's key id (from 'console passkeys')."),
    url: str | None = _URL,
    token: str | None = _TOKEN,
    as_json: bool = _JSON,
) -> None:
    """Revoke a passkey (yours, or anyone's for an admin); its owner's console sessions end."""
    from weightvault.cli._ui import emit_json

    with _client(url, token) as client:
        if len(key_id) < 64:
            matches = [p["key_id"] for p in client.passkeys() if p["key_id"].startswith(key_id)]
            key_id = matches[0] if len(matches) == 1 else key_id
        result = client.revoke_passkey(key_id)
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"revoked passkey {result['key_id'][:16]} of {result['principal']}")


def register(app: typer.Typer) -> None:
    app.add_typer(console_app, name="console")
