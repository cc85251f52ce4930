"""``weightvault vault ...``, ``weightvault audit verify`` and ``weightvault breakglass
split|recover``: the custody service's client (``weightvault serve`` runs the service).

Only Typer is imported at load time; the service, the HTTP client and the crypto come in inside
the commands.
"""

from __future__ import annotations

import contextlib
import inspect
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from weightvault.cli._groups import GROUP, command_group, with_option_groups
from weightvault.cli._options import Client, Json, ModelName, show

if TYPE_CHECKING:
    from weightvault.custody.client import VaultClient

ORDER = 60

vault_app = command_group(
    "vault", "Client of the custody service: push, request, approve, pull, revoke, audit."
)
audit_app = typer.Typer(name="audit", help="Check an exported custody audit log offline.")
breakglass_app = typer.Typer(
    name="breakglass", help="Split the service KEK into Shamir shares, or recover it."
)

_SIZE_RE = re.compile(r"([0-9]+)\s*([kKmMgGtT]?)(i?[bB])?")


def _bytes(text: str, option: str) -> int:
    from weightvault.errors import UsageError

    match = _SIZE_RE.fullmatch(text.strip())
    if not match:
        raise UsageError(f"{option}: expected a size like 500M, 10G or 1048576")
    number, unit, _ = match.groups()
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit.lower()]
    return int(number) * scale


def _duration(seconds: float) -> str:
    """Seconds as the largest sensible unit (``45 s``, ``3.2 h``, ``18.5 days``)."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@contextlib.contextmanager
def _undo_new_files(folder: Path) -> Iterator[None]:
    """If the block fails, remove what it added to ``folder`` (the folder too, if it made it):
    a failed split or recovery leaves no partial set of shares or keys behind."""
    existed = folder.is_dir()
    before = set(folder.iterdir()) if existed else set()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        elif folder.is_dir():
            for path in set(folder.iterdir()) - before:
                with contextlib.suppress(OSError):
                    path.unlink()
        raise


# -- vault --------------------------------------------------------------------------------------


@vault_app.command("init")
def init(
    data: Path = typer.Option(..., "--data", help="New data folder (what 'serve --data' takes)."),
    admin: str = typer.Option("admin", "--admin", help="Name of the first admin."),
    owner: str = typer.Option("owner", "--owner", help="Name of the first model owner."),
    approvers: list[str] | None = typer.Option(
        None, "--approver", help="An approver to create, with an Ed25519 key (repeatable)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing custody data folder (deletes it)."
    ),
    as_json: Json = False,
) -> None:
    """Create a custody data folder with its first admin, owner and approvers: tokens and
    approval keys are written to DATA/credentials (0600), to hand out."""
    from weightvault import _interrupt
    from weightvault.custody.bootstrap import initialize_data_folder

    result = initialize_data_folder(
        data, admin=admin, owner=owner, approvers=approvers or (), replace=force
    )
    _interrupt.finish()  # the folder is in place: a signal from now on changes nothing
    people = [
        {
            "name": p.name,
            "role": p.role,
            "token_file": str(p.token_file),
            "approval_key": str(p.approval_key) if p.approval_key else None,
            "approval_public_key": str(p.approval_public_key) if p.approval_public_key else None,
            "approval_key_id": p.approval_key_id,
        }
        for p in result.principals
    ]
    width = max(len(p.name) for p in result.principals)
    lines = [f"initialised the custody data folder {data}; run: weightvault serve --data {data}"]
    for p in result.principals:
        line = f"{p.role:<8}  {p.name:<{width}}  token {p.token_file}"
        if p.approval_key is not None:
            line += f", approval key {p.approval_key}"
        lines.append(line)
    lines += [
        f"audit log key: {result.audit_log_key}",
        f"hand out the files in {result.credentials_dir}, then delete them: the service needs none",
    ]
    show(
        {
            "data": str(result.data_dir),
            "credentials": str(result.credentials_dir),
            "principals": people,
            "audit_log_key": result.audit_log_key,
        },
        as_json,
        lines,
    )


@vault_app.command("login")
def login(
    url: str = typer.Option(..., "--url", help="Server URL."),
    token: str = typer.Option(..., "--token", prompt=True, hide_input=True, help="API token."),
    as_json: Json = False,
) -> None:
    """Check the token against the server and save URL + token to $WEIGHTVAULT_HOME/vault.json."""
    from weightvault.custody.client import ClientConfig, VaultClient, save_config

    config = ClientConfig(url.rstrip("/"), token)
    with VaultClient(config) as client:
        me = client.whoami()
    path = save_config(config)
    show(
        {"name": me["name"], "roles": me["roles"], "url": config.url, "config": str(path)},
        as_json,
        [f"logged in as {me['name']} ({', '.join(me['roles'])}); saved to {path}"],
    )


@vault_app.command("whoami")
def whoami(service: Client = GROUP) -> None:
    """Show the principal behind the token."""
    service.call(
        lambda client: client.whoami(), lambda me: [f"{me['name']}: {', '.join(me['roles'])}"]
    )


@vault_app.command("principal")
def principal(
    name: str = typer.Argument(..., help="Principal name."),
    roles: list[str] = typer.Option(..., "--role", help="admin, owner, approver, reader, auditor."),
    recipient: str | None = typer.Option(None, "--recipient", help="wvx25519:... for pulls."),
    approval_key: Path | None = typer.Option(
        None, "--approval-key", help="PEM Ed25519 public key that signs this approver's decisions."
    ),
    service: Client = GROUP,
) -> None:
    """Create a principal (admin only); prints its first token once."""
    from weightvault.errors import InputError

    pem = None
    if approval_key is not None:
        try:
            pem = approval_key.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{approval_key}: cannot read the public key") from exc
    service.call(
        lambda client: client.create_principal(
            name, roles, recipient=recipient, approval_key_pem=pem
        ),
        lambda result: [f"created {name}; token (shown once): {result['token']}"],
    )


@vault_app.command("model")
def model(
    name: ModelName,
    policy: Path = typer.Option(..., "--policy", help="Policy JSON file."),
    service: Client = GROUP,
) -> None:
    """Register a model with its custody policy (owner or admin)."""
    from weightvault._json import load_object
    from weightvault.errors import InputError

    try:
        doc = load_object(policy.read_bytes(), f"{policy}: policy")
    except OSError as exc:
        raise InputError(f"{policy}: not a readable JSON policy ({exc.strerror})") from exc
    service.call(
        lambda client: client.create_model(name, doc), lambda result: [f"registered model {name}"]
    )


@vault_app.command("push")
def push(
    model_path: Path = typer.Argument(..., help="Model file or folder."),
    model_name: str = typer.Option(..., "--model", help="Registered model name."),
    version: str = typer.Option(..., "--version", help="New version name."),
    signature: Path = typer.Option(..., "--signature", help="OMS signature bundle (model.sig)."),
    service: Client = GROUP,
) -> None:
    """Upload a signed model version; the server verifies, scans and encrypts it."""
    from weightvault.errors import InputError

    try:
        bundle = signature.read_bytes()
    except OSError as exc:
        raise InputError(f"{signature}: cannot read the signature") from exc
    if not model_path.exists():
        raise InputError(f"{model_path}: no such file or folder")
    service.call(
        lambda client: client.push(model_name, version, model_path, bundle, ignore=(signature,)),
        lambda result: [
            f"registered {result['model']}@{result['version']}: {result['files']} files, "
            f"{result['size']} bytes, signer {result['signer']}, scan {result['scan']}"
        ],
    )


@vault_app.command("request")
def request(
    model_name: str = typer.Option(..., "--model", help="Model name."),
    version: str = typer.Option(..., "--version", help="Version."),
    justification: str = typer.Option(..., "--justification", help="Why you need the weights."),
    duration: int = typer.Option(3600, "--duration-s", help="Grant window in seconds."),
    budget: str = typer.Option(..., "--bytes", help="Byte budget (e.g. 20G)."),
    purpose: str = typer.Option(
        "pull", "--purpose", help="pull, deploy or release (deploy/release: the release gate)."
    ),
    service: Client = GROUP,
) -> None:
    """File a grant request; it needs M approvals before you can pull."""
    service.call(
        lambda client: client.request(
            model_name, version, justification, duration, _bytes(budget, "--bytes"), purpose
        ),
        lambda result: [
            f"request {result['id']}: pending, needs {result['approvals_required']} approvals"
        ],
    )


_KEY = typer.Option(None, "--key", help="Ed25519 private key (PEM) that signs the decision.")
_PKCS11 = typer.Option(None, "--pkcs11-uri", help="Ed25519 key on a PKCS#11 token.")
_VALID = typer.Option(3600, "--valid-for-s", help="How long the signed decision stays valid.")

Submit = Callable[["VaultClient"], Callable[..., dict[str, Any]]]
"""Which of the client's calls submits a signed decision (on a request, on a job)."""


def add_decision_commands(
    app: typer.Typer,
    subject: tuple[str, str],
    submit: Submit,
    summary: Callable[[str, str, dict[str, Any]], str],
    helps: dict[str, str],
) -> None:
    """``approve`` and ``deny`` on ``app`` (``vault``, ``vault job``): the same options and the
    same ceremony (sign the decision with the approver's key, submit it with ``submit``), one
    decision each. ``subject`` is the argument's name and help (``request_id``, ``Request id.``);
    ``summary(id, decision, result)`` is the line printed without ``--json``."""
    for decision, help_text in helps.items():
        _add_decision_command(app, decision, help_text, *subject, submit, summary)


def _add_decision_command(
    app: typer.Typer,
    decision: str,
    help_text: str,
    subject: str,
    subject_help: str,
    submit: Submit,
    summary: Callable[[str, str, dict[str, Any]], str],
) -> None:
    def command(
        target: str,
        key: Path | None = _KEY,
        pkcs11_uri: str | None = _PKCS11,
        valid_for: int = _VALID,
        service: Client = GROUP,
    ) -> None:
        import datetime as dt

        from weightvault.custody.approvals import load_approval_signer

        signer = load_approval_signer(key, pkcs11_uri)
        with service.client() as client:
            me = client.whoami()
            result = submit(client)(
                target,
                signer,
                approver=me["name"],
                decision=decision,
                valid_for=dt.timedelta(seconds=valid_for),
                announce=lambda line: typer.echo(line, err=True),
            )
        service.show(result, [summary(target, decision, result)])

    spread = with_option_groups(command)
    parameters = list(inspect.signature(spread).parameters.values())
    parameters[0] = parameters[0].replace(  # the argument's name is what --help shows
        name=subject, default=typer.Argument(..., help=subject_help)
    )

    def run(**given: Any) -> None:
        spread(target=given.pop(subject), **given)

    run.__name__ = decision
    run.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
    run.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    app.command(decision, help=help_text)(run)


add_decision_commands(
    vault_app,
    ("request_id", "Request id."),
    lambda client: client.decide,
    lambda request_id, decision, result: (
        f"request {request_id}: {decision}d; status {result['status']}"
    ),
    {
        "approve": (
            "Sign an approval of exactly this request with your approval key, and submit it."
        ),
        "deny": "Sign a denial of this request and submit it (one denial closes the request).",
    },
)


@vault_app.command("grants")
def grants(
    status: str | None = typer.Option(None, "--status", help="pending, active, denied, revoked."),
    service: Client = GROUP,
) -> None:
    """List requests and grants you may see."""
    service.listing(
        lambda client: client.list_requests(status),
        lambda g: (
            f"{g['id']}  {g['model']}@{g['version']}  {g['requester']}  {g['status']}  "
            f"{len(g['approvals'])}/{g['approvals_required']} approvals  "
            f"{g['bytes_used']}/{g['byte_budget']} bytes"
        ),
        "no requests",
    )


@vault_app.command("pull")
def pull(
    grant_id: str = typer.Argument(..., help="Grant (request) id."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder to write the model into."),
    identity: Path | None = typer.Option(
        None, "--identity", help="Your X25519 identity file (decrypts and checks digests)."
    ),
    service: Client = GROUP,
) -> None:
    """Download a granted version (encrypted to you), then decrypt and check it locally.

    All or nothing: a refusal (budget exhausted), a wrong identity or Ctrl-C leaves no file; a
    broken connection keeps only the encrypted parts, and the same pull then resumes.
    """
    from weightvault.cli._ui import progress_bytes
    from weightvault.crypt.recipients import parse_identity

    ident = parse_identity(str(identity)) if identity is not None else None
    with service.client() as client:
        listing = client.grant_files(grant_id)
        total = sum(f["delivered_size"] for f in listing["files"])
        with progress_bytes("pull", total) as advance:
            result = client.pull(grant_id, output, ident, progress=advance)
    service.show(
        result,
        [f"pulled {len(result['files'])} files of {result['model']} into {output}"],
    )


@vault_app.command("revoke")
def revoke(
    request_id: str = typer.Argument(..., help="Request or grant id."),
    service: Client = GROUP,
) -> None:
    """Revoke a grant (or withdraw a request) at once."""
    service.call(
        lambda client: client.revoke(request_id), lambda result: [f"request {request_id}: revoked"]
    )


@vault_app.command("inventory")
def inventory(service: Client = GROUP) -> None:
    """Every model version: owner, size, signer, who has access, time to exfiltrate."""
    service.call(lambda client: client.inventory(), _inventory_lines)


def _inventory_lines(inventory: list[dict[str, Any]]) -> list[str]:
    lines = []
    for entry in inventory:
        for version in entry["versions"]:
            lines.append(
                f"{entry['model']}@{version['version']}  owner {entry['owner']}  "
                f"{version['size']} bytes  signer {version['signer']}  "
                f"access {','.join(version['access']) or '-'}  "
                f"time to exfiltrate at budget {_duration(version['time_to_exfiltrate_s'])}"
            )
            if "days_to_emit_size_through_jobs" in version:  # structured access (vault job)
                days = version["days_to_emit_size_through_jobs"]
                lines[-1] += f"  jobs emit its size in {_duration(days * 86400)}"
    return lines or ["no models"]


@vault_app.command("audit")
def audit_export(
    output: Path = typer.Option(..., "-o", "--output", help="Write the exported log here."),
    key_output: Path | None = typer.Option(
        None, "--key-output", help="Also write the log's public key here."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files."),
    service: Client = GROUP,
) -> None:
    """Export the audit log (auditor or admin) for 'weightvault audit verify'."""
    from weightvault._fs import ensure_writable_destination, staged_outputs

    ensure_writable_destination(output, force=force)  # before asking the server for the log
    if key_output is not None:
        ensure_writable_destination(key_output, force=force)
    with service.client() as client:
        data = client.audit_export()
        key = client.audit_key()["log_key"]
    with staged_outputs() as files:  # the export and its key appear together, or neither
        files.write_bytes(output, data, force=force)
        if key_output is not None:
            files.write_bytes(key_output, (key + "\n").encode(), force=force)
    service.show(
        {
            "file": str(output),
            "key_file": None if key_output is None else str(key_output),
            "log_key": key,
            "bytes": len(data),
        },
        [f"exported the audit log to {output}; log key: {key}"],
    )


@audit_app.command("verify")
def audit_verify(
    export: Path = typer.Argument(..., help="Exported audit log (from 'vault audit')."),
    log_key: str = typer.Option(..., "--log-key", help="The log's public key, or a file with it."),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="An earlier checkpoint you trust (detects rollbacks)."
    ),
    as_json: Json = False,
) -> None:
    """Verify an exported audit log offline: signatures, every entry, consistency."""
    from weightvault.custody.audit import verify_audit
    from weightvault.errors import FileSystemError

    try:
        data = export.read_bytes()
        key_text = Path(log_key).read_text() if Path(log_key).is_file() else log_key
        trusted = checkpoint.read_bytes() if checkpoint else None
    except OSError as exc:
        raise FileSystemError.from_os_error(exc) from exc
    result = verify_audit(data, key_text, trusted_checkpoint=trusted)
    passkeys = result.passkey_approvals
    show(
        {
            "size": result.size,
            "origin": result.origin,
            "counts": result.counts,
            "passkey_approvals": passkeys,
            "voided": result.voided,
        },
        as_json,
        [
            f"audit log OK: {result.size} entries under {result.origin}, "
            f"{result.denied} denied requests"
            + (f", {passkeys} passkey approvals verified" if passkeys else "")
            + (f", {result.voided} voided (commit in doubt, refused)" if result.voided else "")
        ],
    )


@breakglass_app.command("split")
def breakglass_split(
    kek: Path = typer.Option(..., "--kek", help="The service keyring (KEK) file."),
    threshold: int = typer.Option(..., "-k", "--threshold", help="Shares needed to recover."),
    count: int = typer.Option(..., "-n", "--shares", help="Shares to make."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for share-N.txt files."),
    as_json: Json = False,
) -> None:
    """Split the KEK into n Shamir shares, any k of which recover it."""
    from weightvault.custody.breakglass_files import split_keyring

    with _undo_new_files(output):
        paths = split_keyring(kek, threshold, count, output)
    show(
        {"folder": str(output), "threshold": threshold, "shares": [str(p) for p in paths]},
        as_json,
        [f"wrote {len(paths)} shares ({threshold} needed) to {output}"],
    )


@breakglass_app.command("recover")
def breakglass_recover(
    shares: list[Path] = typer.Argument(..., help="Share files."),
    output: Path = typer.Option(..., "-o", "--output", help="Recovered keyring file (0600)."),
    as_json: Json = False,
) -> None:
    """Recover the KEK from k shares; refuses a result that does not authenticate."""
    from weightvault.custody.breakglass_files import recover_keyring

    with _undo_new_files(output.parent):
        kid = recover_keyring(shares, output)
    show(
        {"file": str(output), "kid": kid},
        as_json,
        [f"recovered keyring {kid} to {output}"],
    )


def register(app: typer.Typer) -> None:
    app.add_typer(vault_app, name="vault")
    app.add_typer(audit_app, name="audit")
    app.add_typer(breakglass_app, name="breakglass")
