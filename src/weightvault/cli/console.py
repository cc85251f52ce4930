"""``weightvault console link|passkeys|revoke``: passkeys for the approver console.

The console itself is served by ``weightvault serve`` (``/console``). These commands ask the
service, with the caller's API token, for a one-time registration link (signed with the
approver's Ed25519 approval key, so a token alone cannot add a passkey that approves), list
passkeys and revoke one. Only Typer is imported at load time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from weightvault.cli._groups import GROUP, OptionGroup, command_group, option

if TYPE_CHECKING:
    from weightvault.custody.approvals import ApprovalSigner
from weightvault.cli._options import Client

ORDER = 61

console_app = command_group(
    "console", "The approver console (web pages of the custody service, passkey sign-in)."
)


@dataclass(frozen=True)
class ApprovalKey(OptionGroup):
    """``console link``'s proof of who asks: the approver's Ed25519 approval key, in a file or on
    a PKCS#11 token. Optional: without it the link is asked for with the API token alone."""

    key: Path | None = field(
        metadata=option(
            None, "--key", help="Your Ed25519 approval key (PEM): proves the request is yours."
        )
    )
    pkcs11_uri: str | None = field(
        metadata=option(None, "--pkcs11-uri", help="Your Ed25519 approval key on a PKCS#11 token.")
    )

    def signer(self) -> ApprovalSigner | None:
        """The key that signs the enrolment, or None when neither option is given."""
        if self.key is None and self.pkcs11_uri is None:
            return None
        from weightvault.custody.approvals import load_approval_signer

        return load_approval_signer(self.key, self.pkcs11_uri)


@console_app.command("link")
def link(
    approval: ApprovalKey = GROUP,
    for_name: str | None = typer.Option(
        None, "--for", help="Admins: a link for this principal instead of yourself."
    ),
    service: Client = GROUP,
) -> None:
    """Print a one-time link (valid 15 minutes) that registers a passkey."""
    import datetime as dt

    from weightvault.custody.console.signatures import sign_enrolment

    with service.client() as client:
        proof = None
        signer = approval.signer()
        if signer is not None:
            name = client.whoami()["name"]
            proof = sign_enrolment(name, signer, dt.datetime.now(dt.UTC))
        result = client.console_link(proof, for_name)
    service.show(
        {key: result[key] for key in ("principal", "url", "expires_in_s")},
        [
            f"open within 15 minutes to register a passkey for {result['principal']}: "
            f"{result['url']}"
        ],
    )


@console_app.command("passkeys")
def passkeys(service: Client = GROUP) -> None:
    """List registered passkeys (all for admins and auditors, else your own)."""
    service.listing(
        lambda client: client.passkeys(),
        lambda row: (
            f"{row['key_id'][:16]}  {row['principal']}  {row['algorithm']}  "
            f"registered {row['created_at']}  "
            + (f"revoked {row['revoked_at']}" if row["revoked_at"] else "active")
        ),
        None,
    )


@console_app.command("revoke")
def revoke(
    key_id: str = typer.Argument(..., help="The passkey's key id (from 'console passkeys')."),
    service: Client = GROUP,
) -> None:
    """Revoke a passkey (yours, or anyone's for an admin); its owner's console sessions end."""
    with service.client() as client:
        if len(key_id) < 64:
            matches = [p["key_id"] for p in client.passkeys() if p["key_id"].startswith(key_id)]
            key_id = matches[0] if len(matches) == 1 else key_id
        result = client.revoke_passkey(key_id)
    service.show(result, [f"revoked passkey {result['key_id'][:16]} of {result['principal']}"])


def register(app: typer.Typer) -> None:
    app.add_typer(console_app, name="console")
