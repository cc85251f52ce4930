"""``weightvault gate attach|list|check|show``: release gates, the attestations a model version
needs before a ``deploy`` or ``release`` grant (docs/release-gates.md).

Parsing and printing only; the decisions are custody's (:mod:`weightvault.custody.gates`) or,
offline, :func:`weightvault.custody.gates_policy.decide` over a folder of attestations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from weightvault.cli._groups import GROUP, OptionGroup, command_group, option
from weightvault.cli._options import Client

ORDER = 63

gate_app = command_group(
    "gate", "Release gates: attestations a version needs before deploy or release grants."
)

_MAX_FILE = 512 * 1024

Target = Annotated[str, typer.Argument(help="MODEL@VERSION.")]
"""The version a gate command works on, as ``MODEL@VERSION`` (see :func:`_split`)."""


def _split(target: str) -> tuple[str, str]:
    from weightvault.errors import UsageError

    model, sep, version = target.partition("@")
    if not sep or not model or not version:
        raise UsageError(f"{target!r}: expected MODEL@VERSION")
    return model, version


def _decision_lines(doc: dict[str, Any], what: str) -> list[str]:
    verdict = "allowed" if doc["allowed"] else "refused"
    lines = [f"{verdict}: {what} (root {doc['root_digest'][:23]}...)"]
    for finding in doc["findings"]:
        if finding["ok"]:
            extra = ""
            if finding.get("metrics"):
                extra = ": " + ", ".join(f"{k}={v}" for k, v in sorted(finding["metrics"].items()))
            if finding.get("summary"):
                extra = f": {finding['summary']}"
            lines.append(f"  ok  {finding['requirement']}, signed by {finding['signer']}{extra}")
        else:
            lines.append(
                f"  NO  {finding['requirement']}: {finding['failure']}: {finding['message']}"
            )
    if "log_index" in doc:
        lines.append(f"decision logged as entry {doc['log_index']}")
    return lines


@gate_app.command("attach")
def attach(
    target: str = typer.Argument(..., help="MODEL@VERSION the attestation is attached to."),
    attestation: Path = typer.Argument(..., help="Sigstore bundle or custody job result."),
    service: Client = GROUP,
) -> None:
    """Attach an evaluation, a risk assessment or an audit statement to a version."""
    from weightvault._fs import read_small_file

    model, version = _split(target)
    data = read_small_file(attestation, "attestation", _MAX_FILE)
    service.call(
        lambda client: client.attach_attestation(model, version, data),
        lambda result: [f"attached {result['kind']} {result['digest']} to {target}"],
    )


@gate_app.command("list")
def list_attestations(
    target: Target,
    service: Client = GROUP,
) -> None:
    """List the attestations attached to a version."""
    model, version = _split(target)
    service.listing(
        lambda client: [  # the listing, without each attestation's bytes
            {k: v for k, v in a.items() if k != "attestation"}
            for a in client.list_attestations(model, version)
        ],
        lambda a: (
            f"{a['digest']}  {a['kind']}  {a['suite'] or '-'}  {a['producer']}  by {a['added_by']}"
        ),
        "no attestations",
    )


def _offline(flag: str, what: str) -> Any:
    """A field of :class:`Offline`: an option that only ``--offline`` reads, and says so."""
    return field(metadata=option(None, flag, help=f"Offline: {what}"))


@dataclass(frozen=True)
class Offline(OptionGroup):
    """``gate check --offline``: decide here, without the service, over a folder of
    attestations, with the policy, root digest and audit log that the service would hold."""

    folder: Path | None = field(
        metadata=option(
            None, "--offline", help="Decide here over this folder of attestations (no service)."
        )
    )
    policy: Path | None = _offline("--policy", "the model's policy.")  # noqa: RUF009 (returns a field)
    root_digest: str | None = _offline("--root-digest", "the version's root digest (sha256:HEX).")
    log_export: Path | None = _offline("--log-export", "the custody's exported audit log.")  # noqa: RUF009 (returns a field)
    log_key: str | None = _offline("--log-key", "the custody log's public key (file or text).")

    def decide(self, model: str) -> dict[str, Any]:
        """The gate's decision for ``model``'s version, as the service would answer it."""
        import datetime as dt

        from weightvault._fs import read_small_file
        from weightvault._json import load_object
        from weightvault.custody.gates_policy import ReleasePolicy, decide, parse_evidence
        from weightvault.errors import FormatError, UsageError

        if self.policy is None or self.root_digest is None:
            raise UsageError("--offline needs --policy and --root-digest")
        document = load_object(read_small_file(self.policy, "policy", 256 * 1024), "policy")
        policy = ReleasePolicy.from_dict(document.get("release", document))
        if not self.root_digest.startswith("sha256:") or len(self.root_digest) != 71:
            raise UsageError("--root-digest: expected sha256:<64 hex digits>")
        folder = self.folder
        if folder is None or not folder.is_dir():
            raise UsageError(f"--offline {folder}: not a folder")
        offered = []
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                try:
                    offered.append(parse_evidence(read_small_file(path, "attestation", _MAX_FILE)))
                except FormatError as exc:
                    raise FormatError(f"{path}: {exc.message}") from exc
        export = (
            read_small_file(self.log_export, "log export", 1 << 30) if self.log_export else None
        )
        key_text = None
        if self.log_key is not None:
            key_path = Path(self.log_key)
            key_text = key_path.read_text().strip() if key_path.is_file() else self.log_key
        decision = decide(
            policy,
            self.root_digest,
            offered,
            now=dt.datetime.now(dt.UTC),
            log_export=export,
            log_key_text=key_text,
        )
        return {**decision.to_json(), "model": model, "offline": True}


@gate_app.command("check")
def check(
    target: Target,
    purpose: str = typer.Option("deploy", "--purpose", help="deploy or release."),
    offline: Offline = GROUP,
    service: Client = GROUP,
) -> None:
    """Would a deploy or release grant of this version pass its gate? Exit 0 yes, 1 no."""
    from weightvault.errors import UsageError

    if purpose not in ("deploy", "release"):
        raise UsageError("--purpose: expected deploy or release")
    model, version = _split(target)
    if offline.folder is not None:
        result = offline.decide(model)
    else:
        with service.client() as client:
            result = client.gate_check(model, version, purpose)
    service.show(result, _decision_lines(result, f"{purpose} of {target}"))
    if not result["allowed"]:
        raise typer.Exit(1)


@gate_app.command("override")
def override(
    target: Target,
    purpose: str = typer.Option(..., "--purpose", help="deploy or release."),
    shares: list[Path] = typer.Option(
        ..., "--share", help="A break-glass share file (weightvault breakglass split); repeat."
    ),
    reason: str = typer.Option(..., "--reason", help="Why the gate is overridden."),
    service: Client = GROUP,
) -> None:
    """Break-glass: waive one version's gate once (k shares of the service KEK; logged)."""
    from weightvault._fs import read_small_file
    from weightvault.errors import FormatError

    model, version = _split(target)
    texts = []
    for path in shares:
        found = [
            line.strip()
            for line in read_small_file(path, "share file", 4096)
            .decode("ascii", "replace")
            .splitlines()
            if line.startswith("wvshare1:")
        ]
        if len(found) != 1:
            raise FormatError(f"{path}: expected exactly one share line (wvshare1:...)")
        texts.append(found[0])
    service.call(
        lambda client: client.gate_override(model, version, purpose, texts, reason),
        lambda result: [
            f"break-glass override of {purpose} for {target}: waiver {result['waiver']} until "
            f"{result['valid_until']} (log entry {result['log_index']})",
            *(f"  overrides {line}" for line in result["overrides"]),
        ],
    )


@gate_app.command("show")
def show(
    request_id: str = typer.Argument(..., help="Grant request id."),
    service: Client = GROUP,
) -> None:
    """A request with its purpose and the gate's findings (what an approver reads first)."""
    service.call(lambda client: client.get_request(request_id), _request_lines)


def _request_lines(request: dict[str, Any]) -> list[str]:
    lines = [
        f"request {request['id']}: {request.get('purpose', 'pull')} of "
        f"{request['model']}@{request['version']} for {request['requester']}: "
        f"{request['status']}",
        f"justification: {request['justification']}",
    ]
    gate = request.get("gate")
    if gate:
        lines += _decision_lines(gate, "release gate")
    return lines


def register(app: typer.Typer) -> None:
    app.add_typer(gate_app, name="gate")
