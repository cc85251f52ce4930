"""``weightvault posture``: rate a custody deployment against SL1-SL5 (parsing and printing only).

``posture check`` takes the settings ``serve`` runs with (``--data``, ``--database``,
``--blobs``, ``--kek``, ``--log``, ``--window-s``) plus what lives outside the data folder, and
prints the level reached and the gaps to the next one, or writes the whole report as Markdown,
HTML or JSON. ``posture sign`` signs the attestation file a person keeps for the controls no
software can see. The work is in :mod:`weightvault.posture`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

ORDER = 70

_FORMATS = ("text", "md", "html", "json")


def check_command(
    data: Path = typer.Option(..., "--data", help="The custody data folder."),
    database: str = typer.Option("", "--database", help="As given to serve (default: SQLite)."),
    blobs: str = typer.Option("", "--blobs", help="As given to serve (folder or s3://...)."),
    kek: str = typer.Option("", "--kek", help="As given to serve (keyring:PATH or pkcs11:URI)."),
    log: str = typer.Option("", "--log", help="As given to serve (audit log location)."),
    window: int = typer.Option(86400, "--window-s", min=1, help="As given to serve."),
    url: str | None = typer.Option(None, "--url", help="The address clients use (https://...)."),
    ca: Path | None = typer.Option(None, "--ca", help="CA certificates for --url (PEM)."),
    witness_keys: list[str] = typer.Option(
        [], "--witness-key", help="Verifier key of a witness of the audit log (repeatable)."
    ),
    share: Path | None = typer.Option(
        None, "--breakglass-share", help="One share file of the KEK's break-glass split."
    ),
    scan_policy: Path | None = typer.Option(
        None, "--scan-policy", help="The scan policy file your signing pipeline uses."
    ),
    attestation: Path | None = typer.Option(
        None, "--attestation", help="Signed attestation YAML (its signature: FILE.sig)."
    ),
    attestation_key: Path | None = typer.Option(
        None, "--attestation-key", help="Public key (PEM) the attestation must be signed with."
    ),
    output_format: str = typer.Option("text", "--format", help="text (summary), md, html or json."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the report here."),
    force: bool = typer.Option(False, "--force", help="Overwrite --output if it exists."),
    require: str | None = typer.Option(
        None, "--require", help="Exit 1 when the level is below this one (e.g. SL3)."
    ),
) -> None:
    """Check a custody deployment against the SL1-SL5 measures and report the level reached."""
    from weightvault._fs import write_bytes_atomic
    from weightvault.cli._ui import out_console
    from weightvault.cli.log import _verifier_key
    from weightvault.custody.config import ServiceConfig
    from weightvault.errors import PolicyError, UsageError
    from weightvault.posture import Deployment, assess, level_name, parse_level

    if output_format not in _FORMATS:
        raise UsageError(f"--format {output_format}: expected one of {', '.join(_FORMATS)}")
    if output is not None and output_format == "text":
        raise UsageError("--output needs --format md, html or json")
    if (attestation is None) != (attestation_key is None):
        raise UsageError("--attestation and --attestation-key go together")
    required = None
    if require is not None:
        try:
            required = parse_level(require)
        except ValueError as exc:
            raise UsageError(f"--require: {exc}") from exc
    verifier = None
    if attestation_key is not None:
        from weightvault.signing import KeyVerifier

        verifier = KeyVerifier.from_file(attestation_key)
    deployment = Deployment(
        ServiceConfig(
            data_dir=data, database=database, blobs=blobs, kek=kek, log=log, window_s=window
        ),
        service_url=url,
        ca_file=ca,
        witness_keys=tuple(_verifier_key(k, "--witness-key") for k in witness_keys),
        breakglass_share=share,
        scan_policy=scan_policy,
    )
    report = assess(deployment, attestation=attestation, attestation_verifier=verifier)
    console = out_console()
    if output_format == "text":
        console.print(f"posture: {level_name(report.level)}", markup=False)
        if report.attestation_problem:
            console.print(f"attestation not accepted: {report.attestation_problem}", markup=False)
        if report.level < 5:
            console.print(f"gaps to {level_name(report.level + 1)}:", markup=False)
            for gap in report.gaps():
                console.print(f"  {gap.measure.id}: {'; '.join(gap.evidence)}", markup=False)
    else:
        import json

        if output_format == "md":
            text = report.to_markdown()
        elif output_format == "html":
            text = report.to_html()
        else:
            text = json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n"
        if output is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            write_bytes_atomic(output, text.encode("utf-8"), force=force)
            console.print(
                f"posture: {level_name(report.level)}; wrote {output_format} report {output}",
                markup=False,
            )
    if required is not None and report.level < required:
        gaps = len(report.gaps())
        raise PolicyError(
            f"posture {level_name(report.level)} is below the required {level_name(required)} "
            f"({gaps} {'gap' if gaps == 1 else 'gaps'} to {level_name(report.level + 1)})"
        )


def sign_command(
    attestation: Path = typer.Argument(..., help="The attestation YAML to sign."),
    key: Path | None = typer.Option(None, "--key", help="Signing key (EC private key, PEM)."),
    pkcs11_uri: str | None = typer.Option(
        None, "--pkcs11-uri", help="Sign with a key on a PKCS#11 token (RFC 7512 URI)."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Where the signature goes (default: ATTESTATION.sig)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite the signature if it exists."),
) -> None:
    """Sign an attestation file (controls software cannot check) with a weightvault key."""
    from weightvault._fs import read_small_file, write_bytes_atomic
    from weightvault.cli._methods import build_signer
    from weightvault.cli._ui import out_console
    from weightvault.posture import parse_attestation, sign_attestation, signature_path_for

    signer = build_signer(key, None, None, [], pkcs11_uri, False, None)
    data = read_small_file(attestation, "attestation", 1 << 20)
    parsed = parse_attestation(data)
    target = output or signature_path_for(attestation)
    write_bytes_atomic(target, sign_attestation(data, signer), force=force)
    out_console().print(
        f"signed {attestation} ({len(parsed.controls)} controls, valid until "
        f"{parsed.valid_until}) -> {target}",
        markup=False,
    )


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        name="posture",
        help="Rate a custody deployment against the RAND SL1-SL5 security levels.",
        no_args_is_help=True,
    )
    group.command("check")(check_command)
    group.command("sign")(sign_command)
    app.add_typer(group)
