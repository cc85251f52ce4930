"""``weightvault incident timeline|report|check|verify``: incident response over the custody
service's audit log (only parsing and printing here; everything else is
:mod:`weightvault.incident`).

The log comes from one of: ``--audit FILE`` (an export from ``vault audit -o``, checked against
``--log-key``), ``--data DIR`` (a custody data folder, read only), or the service itself
(``--url``/``--token``, else ``WEIGHTVAULT_URL``/``WEIGHTVAULT_TOKEN``, else ``vault login``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from weightvault.cli._groups import GROUP, OptionGroup, command_group, option
from weightvault.cli._options import ForceOutput, Json, show

if TYPE_CHECKING:
    from weightvault.incident.evidence import Evidence
    from weightvault.incident.timeline import Timeline

ORDER = 72

incident_app = command_group(
    "incident",
    (
        "Incident response over the custody audit log: a model's timeline with inclusion "
        "proofs, shareable reports (Markdown, HTML, JSON, STIX 2.1), suspect-file checks."
    ),
)

_MODEL = typer.Option(..., "--model", help="The custody model the incident is about.")
_SINCE = typer.Option(None, "--since", help="Only events at or after this ISO 8601 time.")


@dataclass(frozen=True)
class EvidenceOptions(OptionGroup):
    """Where the audit log comes from: an export, a data folder, or the service."""

    audit: Path | None = field(
        metadata=option(
            None, "--audit", help="Exported audit log (from 'weightvault vault audit -o FILE')."
        )
    )
    data: Path | None = field(
        metadata=option(None, "--data", help="Custody data folder (read only).")
    )
    url: str | None = field(
        metadata=option(None, "--url", help="Service URL (else WEIGHTVAULT_URL, else vault login).")
    )
    token: str | None = field(
        metadata=option(None, "--token", help="Auditor or admin token (else WEIGHTVAULT_TOKEN).")
    )
    log_key: str | None = field(
        metadata=option(
            None,
            "--log-key",
            help="The audit log's public key (name+id+key, or a file). Needed with --audit;"
            " with --data or the service it defaults to their own key.",
        )
    )
    checkpoint: Path | None = field(
        metadata=option(
            None,
            "--checkpoint",
            help="An earlier signed checkpoint you trust (detects rollbacks).",
        )
    )

    def load(self) -> Evidence:
        """The log, its signed checkpoint and proofs, from the one source given."""
        from weightvault._fs import read_small_file
        from weightvault.errors import UsageError
        from weightvault.incident.evidence import load_evidence, read_log_key

        audit, data = self.audit, self.data
        if audit is not None and data is not None:
            raise UsageError("give --audit or --data, not both")
        if (audit is not None or data is not None) and (self.url or self.token):
            raise UsageError("--url/--token read the log from the service; not with --audit/--data")
        if audit is not None and self.log_key is None:
            raise UsageError("--audit needs --log-key (the audit log's public key)")
        key = read_log_key(self.log_key) if self.log_key else None
        trusted = (
            read_small_file(self.checkpoint, "checkpoint", 64 * 1024) if self.checkpoint else None
        )
        service = None
        if audit is None and data is None:
            from weightvault.custody.client import resolve_config

            service = resolve_config(self.url, self.token)
        return load_evidence(
            audit=audit, data_dir=data, service=service, log_key=key, trusted_checkpoint=trusted
        )

    def timeline(self, model: str, since: str | None) -> Timeline:
        """``model``'s events in the log (at or after ``since``), each with its proof."""
        from weightvault.incident.timeline import build_timeline, parse_since

        when = parse_since(since) if since else None
        return build_timeline(self.load(), model, when)


def _header(timeline: Timeline) -> str:
    evidence = timeline.evidence
    line = (
        f"{timeline.model}: {len(timeline.events)} events, each proven by an inclusion proof in "
        f"{evidence.checkpoint.checkpoint.origin} (signed checkpoint at tree size "
        f"{evidence.tree_size}, verified)"
    )
    if evidence.unproven_tail:
        line += f"; {evidence.unproven_tail} newer entries await a signed checkpoint (left out)"
    return line


@incident_app.command("timeline")
def timeline_command(
    model: str = _MODEL,
    since: str | None = _SINCE,
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Also write the timeline with its proofs (JSON) here."
    ),
    force: ForceOutput = False,
    sources: EvidenceOptions = GROUP,
    as_json: Json = False,
) -> None:
    """Who pushed, requested, approved, pulled or was denied which version, when, from where."""
    import json

    from weightvault._fs import ensure_writable_destination, write_bytes_atomic
    from weightvault.cli._ui import emit_json

    if output is not None:
        ensure_writable_destination(output, force=force)
    timeline = sources.timeline(model, since)
    document = timeline.to_json()
    if output is not None:
        data_bytes = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()
        write_bytes_atomic(output, data_bytes, force=force)
    if as_json:
        emit_json(document)
        return
    typer.echo(_header(timeline))
    for event in timeline.events:
        size = "-" if event.nbytes is None else f"{event.nbytes} B"
        typer.echo(
            f"{event.time}  #{event.proof.index:<5} {event.kind:<12} "
            f"{event.client or '-':<15} {size:>12}  {event.summary}"
        )


@incident_app.command("report")
def report_command(
    model: str = _MODEL,
    fmt: str = typer.Option(
        "md", "--format", "-f", help="md, html, json or stix (a STIX 2.1 bundle)."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Write the report here."),
    redact: bool = typer.Option(
        False,
        "--redact",
        help="For sharing: drop names of people, the model, versions, addresses and "
        "justifications; keep digests, key ids, times and proofs.",
    ),
    force: ForceOutput = False,
    since: str | None = _SINCE,
    sources: EvidenceOptions = GROUP,
    as_json: Json = False,
) -> None:
    """A shareable report: summary, timeline, affected versions, indicators, actions taken."""
    from weightvault._fs import ensure_writable_destination, write_bytes_atomic
    from weightvault.cli._ui import emit_json
    from weightvault.errors import UsageError
    from weightvault.incident.render import FORMATS, render_report
    from weightvault.incident.report import build_report

    if fmt not in FORMATS:
        raise UsageError(f"--format: expected one of {', '.join(FORMATS)}, not {fmt!r}")
    ensure_writable_destination(output, force=force)
    timeline = sources.timeline(model, since)
    document = build_report(timeline, redact=redact)
    write_bytes_atomic(output, render_report(document, fmt), force=force)
    summary = document["summary"]
    result: dict[str, Any] = {
        "file": str(output),
        "format": fmt,
        "redacted": redact,
        "events": summary["events"],
        "indicators": len(document["indicators"]),
    }
    if as_json:
        emit_json(result)
        return
    counts = ", ".join(
        _count(len(document[key]), word)
        for key, word in (
            ("versions", "version"),
            ("indicators", "indicator"),
            ("incident_signals", "incident signal"),
            ("actions_taken", "action taken"),
        )
    )
    typer.echo(
        f"wrote the {fmt} report on {summary['model']} to {output}: "
        f"{_count(summary['events'], 'event')}, {counts}" + (" (redacted)" if redact else "")
    )


def _count(number: int, word: str) -> str:
    if number == 1:
        return f"1 {word}"
    plural = word.replace("action taken", "actions taken") if "action" in word else word + "s"
    return f"{number} {plural}"


@incident_app.command("check")
def check_command(
    files: list[Path] = typer.Argument(..., help="Suspect files or folders found elsewhere."),
    model: str = _MODEL,
    sources: EvidenceOptions = GROUP,
    as_json: Json = False,
) -> None:
    """Which version (and grant) suspect files match: root, file or tensor digest.

    Tensor digests (a copy re-saved in another container) need --data. Exit 0 when every file
    was identified, 1 when some matched nothing.
    """
    from weightvault.cli._ui import emit_json
    from weightvault.incident.check import check_files

    timeline = sources.timeline(model, None)
    result = check_files(files, timeline, data_dir=sources.data)
    if as_json:
        emit_json(result.to_json())
    else:
        for match in result.matches:
            if match.match == "none":
                typer.echo(f"{match.path}: no match ({match.note})")
                continue
            what = {
                "root": "the whole version (root digest)",
                "file": f"file {match.version_file} (SHA-256)",
                "tensors": f"file {match.version_file}: {match.tensors_matched} of "
                f"{match.tensors_total} tensors, {match.bytes_fraction:.0%} of the bytes",
            }[match.match]
            grants = ", ".join(f"{g['grant_id']} ({g['grantee']})" for g in match.grants)
            typer.echo(
                f"{match.path}: {model}@{match.version}, {what}; pulled under "
                f"{grants or 'no grant'}"
            )
    if any(m.match == "none" for m in result.matches):
        raise typer.Exit(1)


@incident_app.command("verify")
def verify_command(
    document: Path = typer.Argument(..., help="A saved timeline or JSON report (unredacted)."),
    log_key: str = typer.Option(..., "--log-key", help="The audit log's public key."),
    as_json: Json = False,
) -> None:
    """Re-check every line of a saved timeline or JSON report against the signed checkpoint."""
    from weightvault._fs import read_small_file
    from weightvault.incident.evidence import read_log_key
    from weightvault.incident.timeline import verify_timeline_document

    data = read_small_file(document, "timeline", 1 << 30)
    result = verify_timeline_document(data, read_log_key(log_key))
    show(
        {"model": result.model, "lines": result.lines, "tree_size": result.tree_size},
        as_json,
        [
            f"timeline OK: {result.lines} lines about {result.model}, each in the signed log "
            f"(tree size {result.tree_size})"
        ],
    )


def register(app: typer.Typer) -> None:
    app.add_typer(incident_app, name="incident")
