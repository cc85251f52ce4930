"""``weightvault attest add | list | verify``: signed statements about a model, beside it.

Parsing and printing only; the work is :mod:`weightvault.attest`. Signing and verifying options
are ``sign``'s and ``verify``'s (``--key``, ``--certificate``, ``--pkcs11-uri``, ``--sigstore``;
``--trust-root``/``--identity``/``--issuer``), so an attestation is made and checked with the
same keys as the model's signature.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from weightvault.cli import _methods as m
from weightvault.cli._groups import GROUP, command_group
from weightvault.cli._options import JsonResult
from weightvault.cli.log import _log_errors
from weightvault.errors import UsageError

if TYPE_CHECKING:
    from weightvault.attest import AttestationCheck
    from weightvault.signing import Verifier

ORDER = 12

attest_app = command_group(
    "attest", "Signed attestations bound to a model: model card, evaluation results, provenance."
)

_KINDS_HELP = "model-card, eval-results, training-provenance or row-groups."
_SIGNER = typer.Option(
    [],
    "--signer",
    help="Accept only this signer (key fingerprint or certificate identity), repeatable.",
)
_ATTESTATIONS = typer.Option(
    None, "--attestations", help="Folder of attestations (default MODEL.attestations)."
)


def _kind(value: str) -> str:
    from weightvault.attest import KINDS

    if value not in KINDS:
        raise UsageError(f"--predicate: {value!r} is not one of {', '.join(KINDS)}")
    return value


def _read_predicate(kind: str, path: Path) -> dict[str, Any]:
    """The predicate in ``path``: a JSON object, or (model card) Markdown text as ``content``."""
    from weightvault._fs import read_small_file
    from weightvault._json import load_object

    data = read_small_file(path, "predicate", 16 * 1024 * 1024)
    if kind == "model-card" and path.suffix.lower() != ".json":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path}: a model card must be UTF-8 text") from exc
        media_type = (
            "text/markdown" if path.suffix.lower() in (".md", ".markdown") else "text/plain"
        )
        return {"content": text, "mediaType": media_type}
    return load_object(data, str(path))


def _key_fingerprint(path: Path, password: str | None) -> str | None:
    """The ``publicKey.hint`` of the key in ``path`` (public, or private with ``password``):
    with it, a key-signed attestation by another key is refused as an unlisted signer."""
    from cryptography.hazmat.primitives import serialization

    from weightvault.oms.bundle import public_key_hint

    try:
        data = path.read_bytes()
        try:
            return public_key_hint(serialization.load_pem_public_key(data))
        except ValueError:
            secret = password.encode() if password is not None else None
            private = serialization.load_pem_private_key(data, secret)
            return public_key_hint(private.public_key())
    except (OSError, ValueError, TypeError):
        return None  # the verifier reports the key problem in its own words


def _verifier_and_signers(
    method: m.VerifierOptions, signer: list[str]
) -> tuple[Verifier, list[str]]:
    """The verifier (as ``verify`` builds it) and the accepted signers: ``--signer`` values,
    else, with ``--key``, that key's fingerprint."""
    verifier = method.build()
    signers = list(signer)
    if method.key is not None and not signers:
        fingerprint = _key_fingerprint(method.key, method.password)
        signers = [fingerprint] if fingerprint else []
    return verifier, signers


def _print_checks(checks: list[AttestationCheck]) -> None:
    from weightvault.cli._ui import out_console

    console = out_console()
    for check in checks:
        if check.record is not None:
            record = check.record
            note = f"; thresholds missed: {', '.join(check.threshold_failures)}" * bool(
                check.threshold_failures
            )
            console.print(
                f"ok {record.kind or record.predicate_type}: {check.path.name}"
                f" (signer: {record.signer.method} {record.signer.subject}{note})",
                markup=False,
            )
        else:
            failure = check.failure.value if check.failure else "refused"
            console.print(f"refused ({failure}): {check.path.name}: {check.message}", markup=False)


@attest_app.command("add")
def add_command(
    model_path: Path = typer.Argument(..., help="Model (or dataset) file or folder."),
    predicate_file: Path = typer.Argument(
        ..., help="The predicate: a JSON object (a model card may be Markdown text)."
    ),
    predicate: str = typer.Option(..., "--predicate", help=f"Kind: {_KINDS_HELP}"),
    dataset: list[Path] = typer.Option(
        [], "--dataset", help="Training dataset folder or file (provenance), repeatable."
    ),
    signature: Path | None = typer.Option(
        None, "--signature", help="The model's signature, whose hashing parameters to use."
    ),
    method: m.SignerOptions = GROUP,
    log: str | None = typer.Option(
        None, "--log", help="Record the attestation in this transparency log (file or URL)."
    ),
    log_key: str | None = typer.Option(
        None, "--log-key", help="With --log: the log's checkpoint key (file or pkcs11: URI)."
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Write here instead of MODEL.attestations/."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace the file of the same statement signed before."
    ),
    as_json: JsonResult = False,
) -> None:
    """Sign a statement about the model (its root digest) and store it beside the model."""
    from weightvault import _interrupt
    from weightvault._fs import ensure_writable_destination
    from weightvault.attest import (
        digest_subject,
        log_attestation,
        make_statement,
        sign_attestation,
        store_attestation,
    )
    from weightvault.cli._ui import emit_json, out_console

    _interrupt.note_untouched(model_path)
    kind = _kind(predicate)
    if dataset and kind != "training-provenance":
        raise UsageError("--dataset applies to --predicate training-provenance only")
    log_pair = m.check_log_pair(log, log_key)
    if output is not None:
        ensure_writable_destination(output, force=force)
    body = _read_predicate(kind, predicate_file)
    signer = method.build()
    subject = digest_subject(model_path, signature_path=signature)
    datasets = [digest_subject(d, role="dataset") for d in dataset]
    statement = make_statement(subject, kind, body, datasets=datasets)
    bundle = sign_attestation(statement, signer)
    if log_pair is not None:
        with _log_errors(log_pair[0]):
            bundle = log_attestation(bundle, *log_pair)
    path = store_attestation(model_path, bundle, kind, output=output, force=force)
    if as_json:
        emit_json(
            {
                "path": str(path),
                "kind": kind,
                "predicate_type": statement.predicate_type,
                "subjects": [s.to_json_obj() for s in statement.subjects],
                "signer": signer.identity.subject,
                "logged": log_pair is not None,
            }
        )
        return
    console = out_console()
    console.print(f"attested {kind} for {model_path} -> {path}", markup=False)
    for item in statement.subjects:
        console.print(
            f"subject ({item.role}): {item.name} sha256:{item.digest.hex()}", markup=False
        )
    console.print(f"signer: {signer.identity.method} {signer.identity.subject}", markup=False)


@attest_app.command("list")
def list_command(
    model_path: Path = typer.Argument(..., help="Model (or dataset) file or folder."),
    attestations: Path | None = _ATTESTATIONS,
    as_json: JsonResult = False,
) -> None:
    """List the attestations stored beside a model (what they claim; not verified)."""
    from weightvault.attest import attestations_dir, list_attestations
    from weightvault.cli._ui import emit_json, out_console

    found = list_attestations(model_path, directory=attestations)
    if as_json:
        emit_json({"model": str(model_path), "attestations": [a.to_json() for a in found]})
        return
    console = out_console()
    if not found:
        folder = attestations or attestations_dir(model_path)
        console.print(f"no attestations for {model_path} (in {folder})", markup=False)
        return
    for item in found:
        if item.error is not None:
            console.print(f"unreadable: {item.path.name}: {item.error}", markup=False)
            continue
        subject = item.subjects[0]
        console.print(
            f"{item.kind or item.predicate_type}: {item.path.name}"
            f" (subject {subject.name} sha256:{subject.digest.hex()[:16]}...,"
            f" claimed signer {item.claimed_signer}; not verified)",
            markup=False,
        )


@attest_app.command("verify")
def verify_command(
    model_path: Path = typer.Argument(..., help="Model (or dataset) file or folder."),
    predicate: list[str] = typer.Option(
        [], "--predicate", help=f"Require a valid one of this kind, repeatable: {_KINDS_HELP}"
    ),
    method: m.VerifierOptions = GROUP,
    signer: list[str] = _SIGNER,
    attestations: Path | None = _ATTESTATIONS,
    log_options: m.LogRequirementOptions = GROUP,
    as_json: JsonResult = False,
) -> None:
    """Verify the attestations stored beside a model against its files as they are now.

    With --predicate: exit 1 unless a valid attestation of each kind is there. Without: exit 1
    if any stored attestation is refused, or none is stored.
    """
    from weightvault.attest import check_attestations, select_required
    from weightvault.cli._ui import emit_json
    from weightvault.errors import VerificationError

    kinds = [_kind(k) for k in predicate]
    required_log = log_options.requirement()
    log = None
    if required_log is not None:
        from weightvault.attest import LogCheck

        log = LogCheck(*required_log)
    verifier, signers = _verifier_and_signers(method, signer)
    checks = check_attestations(
        model_path, verifier=verifier, signers=signers or None, directory=attestations, log=log
    )
    if as_json:
        emit_json({"model": str(model_path), "attestations": [c.to_json() for c in checks]})
    else:
        _print_checks(checks)
    if kinds:
        select_required(checks, kinds, model_path)
        return
    refused = [c for c in checks if not c.ok]
    if not checks:
        raise VerificationError(f"{model_path}: no attestations stored beside it")
    if refused and as_json:
        raise typer.Exit(1)
    if refused:
        raise VerificationError(
            f"{model_path}: {len(refused)} of {len(checks)} attestations refused"
        )


@attest_app.command("rows")
def rows_command(
    dataset_path: Path = typer.Argument(..., help="Signed dataset folder or file."),
    group: list[int] = typer.Option(
        ..., "--group", min=0, help="Row group (record batch, line range) to check, repeatable."
    ),
    file: str | None = typer.Option(
        None, "--file", help="The shard inside the dataset folder (train/part-0.parquet)."
    ),
    signature: Path | None = typer.Option(
        None, "--signature", help="The dataset's signature (default DATASET/model.sig)."
    ),
    method: m.VerifierOptions = GROUP,
    signer: list[str] = _SIGNER,
    attestations: Path | None = _ATTESTATIONS,
    as_json: JsonResult = False,
) -> None:
    """Verify some row groups of a signed dataset's shard, reading only those bytes.

    The dataset's signature names its root digest (nothing is rehashed), a row-groups
    attestation for that digest gives each group's digest; exit 1 if a group differs.
    """
    from weightvault.attest import verify_dataset_rows
    from weightvault.cli._ui import emit_json, out_console

    verifier, signers = _verifier_and_signers(method, signer)
    ranges = verify_dataset_rows(
        dataset_path,
        file,
        group,
        verifier=verifier,
        signature_path=signature,
        signers=signers or None,
        directory=attestations,
    )
    shard = file if file is not None else str(dataset_path)
    if as_json:
        emit_json(
            {
                "dataset": str(dataset_path),
                "file": shard,
                "groups": [
                    {"index": i, "start": r.start, "end": r.end, "rows": r.rows}
                    for i, r in zip(group, ranges, strict=True)
                ],
                "ok": True,
            }
        )
        return
    rows = sum(r.rows for r in ranges)
    out_console().print(
        f"{shard}: row groups {', '.join(map(str, group))} OK ({rows} rows)", markup=False
    )


def register(app: typer.Typer) -> None:
    app.add_typer(attest_app, name="attest")
