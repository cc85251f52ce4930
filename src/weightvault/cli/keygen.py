"""``weightvault keygen``: a signing key pair as PEM files.

Parsing and writing only; the keys come from :mod:`weightvault.signing.keygen`. Only Typer is
imported at load time.
"""

from __future__ import annotations

from pathlib import Path

import typer

from weightvault.cli._options import JsonResult, show

ORDER = 15

_TYPE_HELP = (
    "ecdsa-p256 (default), ecdsa-p384 or ecdsa-p521 for model signatures (sign/verify --key, "
    "model-signing too); ed25519 for custody approvals (vault approve --key)."
)


def default_public_path(private: Path) -> Path:
    """``key.pem`` -> ``key.pub``; any other name gets ``.pub`` appended."""
    if private.suffix == ".pem":
        return private.with_suffix(".pub")
    return private.with_name(private.name + ".pub")


def _prompt_passphrase() -> bytes:
    import getpass
    import sys

    from weightvault.errors import UsageError

    if not sys.stdin.isatty():
        raise UsageError(
            "--passphrase asks on a terminal and there is none",
            hint="put the passphrase in a file and pass --passphrase-file FILE",
        )
    first = getpass.getpass("Passphrase for the new key: ")
    if not first:
        raise UsageError("empty passphrase")
    if getpass.getpass("Passphrase (again): ") != first:
        raise UsageError("the passphrases do not match")
    return first.encode("utf-8")


def register(app: typer.Typer) -> None:
    """Add ``keygen`` to the application."""

    @app.command("keygen")
    def keygen_command(
        out: Path = typer.Option(
            ..., "--out", "-o", help="Private key file to write (PEM, PKCS#8, mode 0600)."
        ),
        public_out: Path | None = typer.Option(
            None,
            "--public-out",
            help="Public key file (default: the --out name with .pub for .pem, or + .pub).",
        ),
        key_type: str = typer.Option("ecdsa-p256", "--type", "-t", help=_TYPE_HELP),
        passphrase_file: Path | None = typer.Option(
            None, "--passphrase-file", help="Encrypt the private key under the first line of FILE."
        ),
        passphrase: bool = typer.Option(
            False, "--passphrase", help="Encrypt the private key; ask for the passphrase."
        ),
        force: bool = typer.Option(False, "--force", help="Overwrite existing key files."),
        as_json: JsonResult = False,
    ) -> None:
        """Create a signing key pair: ECDSA for model signatures, Ed25519 for approvals."""
        from weightvault._fs import staged_outputs
        from weightvault.errors import UsageError
        from weightvault.signing.keygen import KEY_TYPES, generate_key, read_passphrase_file

        if key_type not in KEY_TYPES:
            raise UsageError(f"--type: {key_type!r} is not one of {', '.join(KEY_TYPES)}")
        if passphrase and passphrase_file is not None:
            raise UsageError("--passphrase and --passphrase-file are exclusive; pick one")
        public_path = public_out if public_out is not None else default_public_path(out)
        if public_path.absolute() == out.absolute():
            raise UsageError("--public-out must differ from --out (the private key)")
        secret = None
        if passphrase_file is not None:
            secret = read_passphrase_file(passphrase_file)
        elif passphrase:
            secret = _prompt_passphrase()
        generated = generate_key(key_type, secret)
        with staged_outputs() as files:  # both files appear, or neither
            files.write_bytes(out, generated.private_pem, force=force, mode=0o600)
            files.write_bytes(public_path, generated.public_pem, force=force)
        doc = {
            "type": key_type,
            "private_key_file": str(out),
            "public_key_file": str(public_path),
            "encrypted": secret is not None,
            "fingerprint": generated.fingerprint,
        }
        protected = "encrypted" if secret is not None else "not encrypted"
        lines = [
            f"wrote {out} (private, {protected}, mode 0600) and {public_path}",
            f"type {key_type}: {KEY_TYPES[key_type]}",
            f"fingerprint: {generated.fingerprint}",
        ]
        show(doc, as_json, lines, console=True)
