"""``weightvault posture``: rate a custody deployment against SL1-SL5 (parsing and printing only).

``posture check`` takes the settings ``serve`` runs with (``--data``, ``--database``,
``--blobs``, ``--kek``, ``--log``, ``--window-s``) plus what lives outside the data folder, and
prints the level reached and the gaps to the next one, or writes the whole report as Markdown,
HTML or JSON. ``posture sign`` signs the attestation file a person keeps for the controls no
software can see. The work is in :mod:`weightvault.posture`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from weightvault.cli._groups import GROUP, OptionGroup, with_option_groups

if TYPE_CHECKING:
    from weightvault.custody.config import ServiceConfig
    from weightvault.posture import Deployment

ORDER = 70

_FORMATS = ("text", "md", "html", "json")


@dataclass(frozen=True)
class Outside(OptionGroup):
    """``posture check``'s options for what lives outside the data folder: the parts of a
    :class:`~weightvault.posture.Deployment` that ``serve``'s settings do not hold."""

    url: Annotated[
        str | None, typer.Option("--url", help="The address clients use (https://...).")
    ] = None
    ca: Annotated[Path | None, typer.Option("--ca", help="CA certificates for --url (PEM).")] = None
    witness_keys: Annotated[
        list[str],
        typer.Option(
            "--witness-key", help="Verifier key of a witness of the audit log (repeatable)."
        ),
    ] = field(default_factory=list)
    share: Annotated[
        Path | None,
        typer.Option("--breakglass-share", help="One share file of the KEK's break-glass split."),
    ] = None
    scan_policy: Annotated[
        Path | None,
        typer.Option("--scan-policy", help="The scan policy file your signing pipeline uses."),
    ] = None

    def deployment(self, config: ServiceConfig) -> Deployment:
        """The deployment to rate: the service run with ``config``, and what these options name."""
        from weightvault.cli.log import _verifier_key
        from weightvault.posture import Deployment

        return Deployment(
            config,
            service_url=self.url,
            ca_file=self.ca,
            witness_keys=tuple(_verifier_key(k, "--witness-key") for k in self.witness_keys),
            breakglass_share=self.share,
            scan_policy=self.scan_policy,
        )


@with_option_groups
def check_command(
    data: Path = typer.Option(..., "--data", help="The custody data folder."),
    database: str = typer.Option("", "--database", help="As given to serve (default: SQLite)."),
    blobs: str = typer.Option("", "--blobs", help="As given to serve (folder or s3://...)."),
    kek: str = typer.Option("", "--kek", help="As given to serve (keyring:PATH or pkcs11:URI)."),
    log: str = typer.Option("", "--log", help="As given to serve (audit log location)."),
    window: int = typer.Option(86400, "--window-s", min=1, help="As given to serve."),
    outside: Outside = GROUP,
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
    from weightvault.custody.config import ServiceConfig
    from weightvault.errors import PolicyError, UsageError
    from weightvault.posture import assess, level_name, parse_level

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
    deployment = outside.deployment(
        ServiceConfig(
            data_dir=data, database=database, blobs=blobs, kek=kek, log=log, window_s=window
        )
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
