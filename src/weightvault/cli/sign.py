"""``weightvault sign``, ``verify`` and ``digest``: OMS model signatures on the command line.

Options pick the method (exactly one per command):

* key: ``--key PRIVATE.pem`` to sign, ``--key PUBLIC.pem`` to verify (``--password``);
* certificate: ``--key`` + ``--certificate LEAF.pem [--chain CHAIN.pem]`` to sign,
  ``--trust-root ROOTS.pem [--identity NAME]`` to verify;
* PKCS#11: ``--pkcs11-uri 'pkcs11:...'`` (optionally with ``--certificate``/``--chain``);
* Sigstore: ``--sigstore`` (verify with ``--identity`` and ``--issuer``, ``--trust-config``).

Only Typer is imported at load time; everything else is imported inside the commands.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from weightvault.cli import _methods as m
from weightvault.cli._groups import GROUP, OPTION, OptionGroup, option, with_option_groups
from weightvault.cli._options import JsonResult
from weightvault.cli.log import _log_errors
from weightvault.errors import UsageError

if TYPE_CHECKING:
    from weightvault.signing import ManifestOptions

ORDER = 10

_WORKERS = typer.Option(None, "--workers", min=1, help="Hashing threads (default: all cores).")
_RAY = typer.Option(
    None,
    "--ray",
    metavar="ADDRESS",
    help="Hash on a Ray cluster (its address, or auto); needs weightvault[ray].",
)


def _check_choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    if value not in allowed:
        raise UsageError(f"{option}: {value!r} is not one of {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class HashingOptions(OptionGroup):
    """How ``sign`` and ``digest`` list and hash a model (``verify`` reads them from the
    signature)."""

    hash_type: str = field(
        metadata=option(
            "sha256",
            "--hash",
            help="Hash for each file or shard: sha256 (default), blake2 (BLAKE2b-512) or blake3.",
        )
    )
    serialization: str = field(
        metadata=option(
            "files",
            "--serialization",
            help="files (one digest per file, default) or shards (files cut into --shard-size"
            " pieces).",
        )
    )
    shard_size: int = field(
        metadata=option(
            1_000_000_000, "--shard-size", min=1, help="Shard size in bytes (with shards)."
        )
    )
    ignore: list[Path] = field(
        metadata=option([], "--ignore", help="Path to leave out of the digests, repeatable.")
    )
    no_ignore_git: bool = field(
        metadata=option(
            False, "--no-ignore-git", help="Include .git, .github, .gitattributes, .gitignore."
        )
    )
    allow_symlinks: bool = field(
        metadata=option(
            False, "--allow-symlinks", help="Follow symlinks to files inside the model."
        )
    )
    workers: int | None = field(metadata={OPTION: _WORKERS})
    ray: str | None = field(metadata={OPTION: _RAY})

    def manifest_options(self) -> ManifestOptions:
        """These options as one checked object (a wrong choice is a usage error naming the
        option)."""
        from weightvault.hashing import HASH_TYPES, HashAlgorithm
        from weightvault.signing import ManifestOptions

        algorithm = HashAlgorithm(_check_choice(self.hash_type, HASH_TYPES, "--hash"))
        serialization = _check_choice(self.serialization, ("files", "shards"), "--serialization")
        return ManifestOptions(
            hash_type=algorithm,
            serialization="shards" if serialization == "shards" else "files",
            shard_size=self.shard_size,
            ignore_paths=tuple(self.ignore),
            ignore_git_paths=not self.no_ignore_git,
            allow_symlinks=self.allow_symlinks,
            max_workers=self.workers,
            cluster=self.ray,
        )


def _model_location(text: str) -> Path | str:
    """A local path, or an ``s3://`` URL kept as text (a Path would fold its ``//``)."""
    from weightvault.tree.s3 import is_object_url

    return text if is_object_url(text) else Path(text)


def _model_argument(verb: str | None) -> Any:
    """The ``MODEL_PATH`` argument of ``sign``, ``verify`` and ``digest`` (read it with
    :func:`_model_location`); ``verb`` says in its help what the command does with the model."""
    what = f"Model file or folder to {verb}" if verb else "Model file or folder"
    return typer.Argument(..., metavar="MODEL_PATH", help=f"{what}, or s3://bucket/prefix.")


def register(app: typer.Typer) -> None:
    """Add ``sign``, ``verify`` and ``digest`` to the application."""

    @app.command("sign")
    @with_option_groups
    def sign_command(
        model_arg: str = _model_argument("sign"),
        signature: Path | None = typer.Option(
            None, "--signature", help="Where to write the signature (default MODEL/model.sig)."
        ),
        method: m.SignerOptions = GROUP,
        hashing: HashingOptions = GROUP,
        as_json: JsonResult = False,
        scan: bool = typer.Option(
            False, "--scan", help="Scan every file first; refuse to sign if anything is found."
        ),
        fail_on: str = typer.Option(
            "unknown",
            "--fail-on",
            help="With --scan: unknown (default) or dangerous; suspicious is unknown's old name.",
        ),
        allow: list[str] = typer.Option(
            [], "--allow", help="With --scan: a trusted import (module.name), repeatable."
        ),
        log: str | None = typer.Option(
            None, "--log", help="Record the signature in this transparency log (file or URL)."
        ),
        log_key: str | None = typer.Option(
            None, "--log-key", help="With --log: the log's checkpoint key (file or pkcs11: URI)."
        ),
        force: bool = typer.Option(False, "--force", help="Replace an existing signature file."),
        row_groups: bool = typer.Option(
            False,
            "--row-groups",
            help="Datasets: also attest per-row-group digests of Parquet/Arrow/JSONL files"
            " (stored in MODEL.attestations/), so readers can verify the parts they read.",
        ),
        lines_per_group: int = typer.Option(
            10_000, "--lines-per-group", min=1, help="With --row-groups: JSONL lines per group."
        ),
    ) -> None:
        """Sign a model file or folder in the OpenSSF Model Signing format.

        Signature files already in the model (an older model.sig, a bundle under another name)
        are left out of the signature, and listed.
        """
        from weightvault import _interrupt
        from weightvault._fs import ensure_writable_destination
        from weightvault.cli._ui import emit_json, out_console, progress_display
        from weightvault.pipeline import LogTarget, ScanPolicy, sign_model
        from weightvault.signing import default_signature_path

        model_path = _model_location(model_arg)
        if isinstance(model_path, Path):
            _interrupt.note_untouched(model_path)
        elif row_groups or scan:
            raise UsageError("--row-groups and --scan read local files; not an s3:// model")
        elif signature is None:
            raise UsageError(
                f"{model_path}: pass --signature: a model in a bucket is signed into a local file"
            )
        options = hashing.manifest_options()
        _check_choice(fail_on, ("unknown", "dangerous", "suspicious"), "--fail-on")
        log_pair = m.check_log_pair(log, log_key)
        if not scan and allow:
            raise UsageError("--allow only makes sense with --scan")
        sig_path = signature if signature is not None else default_signature_path(model_path)
        ensure_writable_destination(sig_path, force=force)  # before asking for a key, too
        signer = method.build()
        target = LogTarget(*log_pair) if log_pair is not None else None
        row_groups_predicate = None
        if row_groups:  # before signing: a dataset without shards is refused with nothing written
            from weightvault.attest import row_groups_predicate as make_row_groups

            row_groups_predicate = make_row_groups(
                model_path,
                lines_per_group=lines_per_group,
                ignore_paths=[str(p) for p in hashing.ignore],
                max_workers=hashing.workers,
            )
        elif lines_per_group != 10_000:
            raise UsageError("--lines-per-group applies to --row-groups only")
        with _log_errors(log) if log is not None else contextlib.nullcontext():
            result = sign_model(
                model_path,
                signer,
                signature_path=sig_path,
                scan_policy=ScanPolicy(fail_on, tuple(allow)) if scan else None,
                log=target,
                force=force,
                options=options,
                progress_display=progress_display("hashing"),
            )
        row_groups_path = None
        if row_groups_predicate is not None:
            from weightvault.attest import attest_row_groups

            with _log_errors(log) if log is not None else contextlib.nullcontext():
                row_groups_path = attest_row_groups(
                    model_path,
                    result.manifest,
                    signer,
                    row_groups_predicate,
                    log=log_pair,
                )
        if as_json:
            document = {**result.to_json(), "model": str(model_path)}  # s3:// keeps its //
            if row_groups_path is not None:
                document["row_groups_attestation"] = str(row_groups_path)
            emit_json(document)
            return
        params = result.manifest.serialization
        console = out_console()
        console.print(
            f"signed {model_path} ({len(result.manifest.resources)} resources,"
            f" {params.method}/{params.hash_type}) -> {result.signature_path}"
        )
        console.print(f"root digest: sha256:{result.manifest.root_digest.hex()}")
        console.print(f"signer: {result.signer.method} {result.signer.subject}")
        for name in result.left_out:
            console.print(f"left out: {name} (a signature file, not model content)")
        if row_groups_path is not None:
            console.print(f"row groups attested -> {row_groups_path}", markup=False)

    @app.command("verify")
    @with_option_groups
    def verify_command(
        model_arg: str = _model_argument("verify"),
        signature: Path | None = typer.Option(
            None, "--signature", help="Signature file (default MODEL/model.sig)."
        ),
        method: m.VerifierOptions = GROUP,
        password_file: Path | None = typer.Option(
            None, "--password-file", help="Read that password from this file."
        ),
        ignore: list[Path] = typer.Option(
            [], "--ignore", help="Also leave this path out when checking, repeatable."
        ),
        ignore_unsigned_files: bool = typer.Option(
            False,
            "--ignore-unsigned-files",
            help="Check only the files the signature covers; list files added since.",
        ),
        workers: int | None = _WORKERS,
        ray: str | None = _RAY,
        as_json: JsonResult = False,
        log_options: m.LogRequirementOptions = GROUP,
        require_attestation: list[str] = typer.Option(
            [],
            "--require-attestation",
            help="Also require a valid attestation of this kind (eval-results, model-card,"
            " training-provenance, row-groups), signed by the same signer; repeatable.",
        ),
    ) -> None:
        """Verify a model against its signature; exit 1 naming each changed/missing/extra file.

        Hash type, serialization and ignored paths are read from the signature.
        """
        from weightvault.cli._ui import emit_json, out_console, progress_display
        from weightvault.errors import VerificationError
        from weightvault.pipeline import LogRequirement, check_model

        model_path = _model_location(model_arg)
        required_log = log_options.requirement()
        for kind in require_attestation:
            _check_choice(
                kind,
                ("eval-results", "model-card", "training-provenance", "row-groups"),
                "--require-attestation",
            )
        verifier = method.build(m.key_password(method.password, password_file))
        log = LogRequirement(*required_log) if required_log is not None else None
        result = check_model(
            model_path,
            verifier,
            signature_path=signature,
            log=log,
            ignore_paths=ignore,
            ignore_unsigned_files=ignore_unsigned_files,
            max_workers=workers,
            cluster=ray,
            progress_display=progress_display("verifying"),
        )
        attested = {}
        if require_attestation and result.ok and result.manifest is not None:
            from weightvault.attest import require_attestations

            attested = require_attestations(
                model_path,
                require_attestation,
                verifier=verifier,
                expected_subject_digest=result.manifest.root_digest,
            )
        if as_json:
            document = {**result.to_json(), "model": str(model_path)}  # s3:// keeps its //
            if require_attestation:
                document["attestations"] = {k: r.to_json() for k, r in attested.items()}
            emit_json(document)
            if not result.ok:
                raise typer.Exit(1)
            return
        if not result.ok:
            if result.signature_error is None:  # list each file; the error line sums them up
                console = out_console()
                for line in result.problems():
                    console.print(line, markup=False)
            raise VerificationError(result.summary())
        signer = result.signer
        who = f" (signer: {signer.method} {signer.subject})" if signer else ""
        console = out_console()
        console.print(f"{model_path}: signature OK{who}", markup=False)
        for name in result.unsigned:
            console.print(f"not signed, not checked: {name}", markup=False)
        for kind, record in attested.items():
            console.print(f"{kind} attestation OK (signer: {record.signer.subject})", markup=False)

    @app.command("digest")
    @with_option_groups
    def digest_command(
        model_arg: str = _model_argument(None),
        hashing: HashingOptions = GROUP,
        as_json: JsonResult = False,
    ) -> None:
        """Print the model's root digest and per-file digests (what a signature would hold)."""
        from weightvault.cli._ui import emit_json, out_console, progress_display
        from weightvault.pipeline import digest_model

        model_path = _model_location(model_arg)
        options = hashing.manifest_options()
        manifest = digest_model(
            model_path, options=options, progress_display=progress_display("hashing")
        )
        if as_json:
            emit_json(
                {
                    "model": str(model_path),
                    "root_digest": manifest.root_digest.hex(),
                    "serialization": manifest.serialization.to_json_obj(),
                    "resources": [r.to_json_obj() for r in manifest.resources],
                }
            )
            return
        console = out_console()
        params = manifest.serialization
        console.print(
            f"root digest: sha256:{manifest.root_digest.hex()}"
            f"  ({len(manifest.resources)} resources, {params.method}/{params.hash_type})",
            markup=False,
        )
        for resource in manifest.resources:
            console.print(f"{resource.digest.hex()}  {resource.name}", markup=False)
