"""Renderings of an incident report (:func:`weightvault.incident.report.build_report`):
Markdown, self-contained HTML, JSON and a STIX 2.1 bundle.

All of them read the same document, so they cannot disagree. The HTML page has no external
resource (inline CSS and an inline SVG chart; nothing to fetch, so it opens offline and in a
mail client's sandbox), and every value in it is escaped: names, paths and error messages come
from the audit log, which records what clients sent. The STIX bundle is built with the ``stix2``
library (OASIS STIX 2.1): an Incident, an Indicator per digest worth watching for (with the File
it describes), the people and addresses involved (unless redacted), the actions taken as
Courses of Action, the risk register's entries and the release-gate decisions as Notes on the
Incident, and a Report that refers to all of them.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Callable, Sequence
from typing import Any

from weightvault.errors import UsageError

__all__ = ["FORMATS", "render_report"]

FORMATS = ("md", "html", "json", "stix")


def render_report(doc: dict[str, Any], fmt: str) -> bytes:
    """The report ``doc`` as ``md``, ``html``, ``json`` or ``stix`` bytes."""
    renderers: dict[str, Callable[[dict[str, Any]], str]] = {
        "md": _markdown,
        "html": _html,
        "json": lambda d: json.dumps(d, indent=2, sort_keys=True) + "\n",
        "stix": _stix,
    }
    if fmt not in renderers:
        raise UsageError(f"report format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return renderers[fmt](doc).encode("utf-8")


def _title(doc: dict[str, Any]) -> str:
    return f"Incident report: {doc['summary']['model']}"


def _summary_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    s = doc["summary"]
    timeline = doc["timeline"]
    counts = ", ".join(f"{k} {v}" for k, v in s["counts"].items()) or "none"
    return [
        ("Model", str(s["model"])),
        ("Period", f"{s['first_event'] or '-'} to {s['last_event'] or '-'}"),
        ("Events", f"{s['events']} ({counts})"),
        ("Versions", str(s["versions"])),
        ("Grants", str(s["grants"])),
        ("Bytes released", str(s["bytes_released"])),
        ("Denied or refused requests", str(s["denied_requests"])),
        ("Alerts", str(s["alerts"])),
        ("Revocations", str(s["revocations"])),
        ("Release-gate decisions", str(s.get("gate_decisions", 0))),
        ("Open risks in the register", str(s.get("open_risks", 0))),
        (
            "Evidence",
            f"every line proven in the log {timeline['log_key'].split('+')[0]} at tree size "
            f"{timeline['tree_size']} (signed checkpoint included)",
        ),
        ("Redacted", "yes" if doc["redacted"] else "no"),
    ]


def _sections(doc: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's tables: (title, header, rows), shared by Markdown and HTML."""
    versions = [
        [
            v["version"],
            v["root_digest"],
            str(v["size"]),
            v["signer"],
            v["registered_at"],
            ", ".join(v["pulled_under"]) or "-",
        ]
        for v in doc["versions"]
    ]
    refused = [
        [str(u["version"]), u["time"], str(u["by"]), u["reason"], str(u["log_index"])]
        for u in doc["refused_uploads"]
    ]
    indicators = [[i["type"], i["value"], i.get("path", "-"), i["why"]] for i in doc["indicators"]]
    grants = [
        [
            g["grant_id"],
            str(g["version"]),
            str(g["grantee"]),
            ", ".join(str(a) for a in g["approvers"]) or "-",
            g["status"],
            f"{g['bytes_pulled']} / {g['byte_budget']}",
        ]
        for g in doc["grants"]
    ]
    signals = [
        [x["time"], x["signal"], str(x["principal"] or "-"), x["summary"], str(x["log_index"])]
        for x in doc["incident_signals"]
    ]
    people = [[str(p["name"]), ", ".join(p["did"])] for p in doc["principals"]]
    keys = [[k] for k in doc["approval_keys"]]
    signers = [[s["signer"], s["signature_sha256"]] for s in doc["signing_identities"]]
    addresses = [[a] for a in doc["client_addresses"]]
    actions = [
        [a["time"], a["kind"], str(a["by"]), a["summary"], str(a["log_index"])]
        for a in doc["actions_taken"]
    ]
    gates = [
        [
            g["time"],
            str(g["version"]),
            f"{g['purpose']} ({g['stage']})",
            g["outcome"] + (" (break-glass override)" if g.get("override") else ""),
            ", ".join(g["relied_on"]) or "-",
            " | ".join(g["refusals"]) or "-",
            str(g["log_index"]),
        ]
        for g in doc.get("gate_decisions", [])
    ]
    risks = [
        [
            str(r["hazard"]),
            f"{r['likelihood']} / {r['severity']}",
            "; ".join(str(m) for m in r["mitigations"]) or "-",
            str(r.get("owner") or "-"),
            ", ".join(r["evidence"]) or "-",
            str(r.get("status", "open"))
            + (f": {r['close_reason']}" if r.get("close_reason") else ""),
            str(r["log_index"]),
        ]
        for r in doc.get("risk_register", [])
    ]
    lines = [
        [
            e["time"],
            e["kind"],
            str(e["principal"] or "-"),
            str(e["client"] or "-"),
            "-" if e["bytes"] is None else str(e["bytes"]),
            e["summary"],
            f"{e['proof']['index']} ({e['proof']['leaf_hash'][:12]})",
        ]
        for e in doc["timeline"]["events"]
    ]
    return [
        ("Affected versions", ["version", "root digest", "bytes", "signer", "registered",
                               "pulled under grants"], versions),
        ("Refused uploads", ["version", "time", "by", "reason", "log index"], refused),
        ("Incident signals", ["time", "signal", "principal", "what", "log index"], signals),
        ("Indicators", ["type", "value", "file", "why"], indicators),
        ("Grants", ["grant", "version", "grantee", "approvers", "status",
                    "bytes pulled / budget"], grants),
        ("Principals involved", ["principal", "did"], people),
        ("Approval keys involved", ["key id (SHA-256 of the Ed25519 key)"], keys),
        ("Signing identities", ["signer", "signature SHA-256"], signers),
        ("Client addresses", ["address"], addresses),
        ("Actions taken", ["time", "action", "by", "what", "log index"], actions),
        ("Release-gate decisions", ["time", "version", "purpose (stage)", "outcome",
                                    "attestations relied on", "refusals", "log index"], gates),
        ("Risk register", ["hazard", "likelihood / severity", "mitigations", "owner",
                           "evidence (attestation digests)", "status", "log index"], risks),
        ("Timeline", ["time", "event", "principal", "client", "bytes", "what",
                      "log index (leaf hash)"], lines),
    ]  # fmt: skip


# -- Markdown -----------------------------------------------------------------------------------


def _md_cell(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    if not rows:
        return ["None.", ""]
    out = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    out.append("|" + "---|" * len(header))
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def _markdown(doc: dict[str, Any]) -> str:
    out = [f"# {_title(doc)}", "", "## Summary", ""]
    out += _md_table(["", ""], [[k, v] for k, v in _summary_rows(doc)])
    for title, header, rows in _sections(doc):
        out += [f"## {title}", "", *_md_table(header, rows)]
    timeline = doc["timeline"]
    out += [
        "## Verification",
        "",
        "Each timeline line is an entry of the custody audit log with its RFC 9162 inclusion "
        f"proof against this checkpoint, signed by the log key `{timeline['log_key']}`"
        + " (the JSON report carries the proofs):",
        "",
        "```text",
        timeline["checkpoint"].rstrip("\n"),
        "```",
        "",
    ]
    return "\n".join(out)


# -- HTML ---------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1b1f24;
max-width:80rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;
border-bottom:1px solid #d0d7de;padding-bottom:.2rem}
table{border-collapse:collapse;width:100%;font-size:.85rem}
th,td{border:1px solid #d0d7de;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td{word-break:break-word}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
.denied,.push-refused{background:#fff1f0}.alert{background:#fff8e6}.pull{background:#eef6ff}
pre{background:#f6f8fa;padding:.8rem;overflow-x:auto}
.note{color:#57606a;font-size:.85rem}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], kinds: bool) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        css = f' class="{_e(row[1].replace(".", "-"))}"' if kinds else ""
        cells = "".join(f"<td>{_e(c)}</td>" for c in row)
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _chart(counts: dict[str, int]) -> str:
    """Events per kind as an inline SVG bar chart (no script, no external resource)."""
    if not counts:
        return ""
    width, bar, gap, label = 560, 18, 6, 130
    top = max(counts.values())
    height = len(counts) * (bar + gap) + gap
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="events per kind">'
    ]
    for row, (kind, count) in enumerate(sorted(counts.items())):
        y = gap + row * (bar + gap)
        length = max(2, int((width - label - 50) * count / top))
        parts.append(
            f'<text x="0" y="{y + bar - 4}" font-size="12">{_e(kind)}</text>'
            f'<rect x="{label}" y="{y}" width="{length}" height="{bar}" fill="#4f7fbf"/>'
            f'<text x="{label + length + 6}" y="{y + bar - 4}" font-size="12">{count}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _html(doc: dict[str, Any]) -> str:
    title = _title(doc)
    summary = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in _summary_rows(doc))
    sections = []
    for name, header, rows in _sections(doc):
        kinds = name == "Timeline"
        sections.append(f"<h2>{_e(name)}</h2>{_html_table(header, rows, kinds)}")
    timeline = doc["timeline"]
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>"
        f'<p class="note">Generated {generated} by weightvault from the custody audit log. '
        "Every timeline line is a log entry proven against the signed checkpoint below.</p>"
        f"<h2>Summary</h2><table>{summary}</table>"
        f"<h2>Events per kind</h2>{_chart(doc['summary']['counts'])}"
        + "".join(sections)
        + "<h2>Verification</h2>"
        f'<p>Log key <span class="mono">{_e(timeline["log_key"])}</span>; signed checkpoint:</p>'
        f"<pre>{_e(timeline['checkpoint'])}</pre>"
        "</body></html>\n"
    )


# -- STIX 2.1 -----------------------------------------------------------------------------------


def _stix_time(text: str | None) -> str:
    return text or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stix(doc: dict[str, Any]) -> str:
    import stix2  # type: ignore[import-untyped]

    summary = doc["summary"]
    first = _stix_time(summary["first_event"])
    producer = stix2.Identity(
        name="custody operator" if doc["redacted"] else "weightvault custody service",
        identity_class="organization",
    )
    roots = [v["root_digest"] for v in doc["versions"]]
    incident = stix2.Incident(
        created_by_ref=producer,
        name=f"Model weights custody incident: {summary['model']}",
        description=(
            f"{summary['events']} audited events from {summary['first_event']} to "
            f"{summary['last_event']}: {summary['grants']} grants, {summary['bytes_released']} "
            f"bytes released, {summary['denied_requests']} denied or refused requests, "
            f"{summary['alerts']} alerts. Affected versions' OMS root digests: "
            + (", ".join(roots) or "none")
        ),
    )
    objects: list[Any] = [producer, incident]
    seen: set[str] = set()
    for indicator in doc["indicators"]:
        if indicator["type"] != "sha256" or indicator["value"] in seen:
            continue
        seen.add(indicator["value"])
        file_object = stix2.File(
            hashes={"SHA-256": indicator["value"]}, name=indicator.get("path") or None
        )
        stix_indicator = stix2.Indicator(
            created_by_ref=producer,
            name=f"{indicator.get('path', 'file')}: {indicator['why']}",
            indicator_types=["compromised"],
            pattern=f"[file:hashes.'SHA-256' = '{indicator['value']}']",
            pattern_type="stix",
            valid_from=first,
        )
        objects += [
            file_object,
            stix_indicator,
            stix2.Relationship(stix_indicator, "based-on", file_object, created_by_ref=producer),
            stix2.Relationship(stix_indicator, "indicates", incident, created_by_ref=producer),
        ]
    if not doc["redacted"]:
        objects += [
            stix2.UserAccount(user_id=str(p["name"]), account_type="custody-principal")
            for p in doc["principals"]
        ]
        objects += [
            stix2.IPv4Address(value=a) for a in doc["client_addresses"] if a.count(".") == 3
        ]
    for action in doc["actions_taken"]:
        objects.append(
            stix2.CourseOfAction(
                created_by_ref=producer,
                name=f"{action['kind']} at {action['time']}",
                description=action["summary"],
            )
        )
    objects += _stix_gates_and_risks(stix2, doc, producer, incident)
    objects.append(
        stix2.Note(
            created_by_ref=producer,
            abstract="Custody audit evidence",
            content=(
                "Every event of this incident is an entry of the custody transparency log, "
                f"proven against a checkpoint of size {doc['timeline']['tree_size']} signed by "
                f"{doc['timeline']['log_key']}. Approval keys involved (SHA-256 of Ed25519 "
                f"keys): {', '.join(doc['approval_keys']) or 'none'}. Signing identities: "
                + (
                    ", ".join(
                        f"{s['signer']} (signature sha256 {s['signature_sha256']})"
                        for s in doc["signing_identities"]
                    )
                    or "none"
                )
            ),
            object_refs=[incident],
        )
    )
    report = stix2.Report(
        created_by_ref=producer,
        name=f"Incident report: {summary['model']}",
        report_types=["threat-report"],
        published=_stix_time(summary["last_event"]),
        object_refs=[o.id for o in objects],
    )
    bundle = stix2.Bundle(objects=[*objects, report])
    return str(bundle.serialize(pretty=True)) + "\n"


def _stix_gates_and_risks(
    stix2: Any, doc: dict[str, Any], producer: Any, incident: Any
) -> list[Any]:
    """A Note per risk-register entry and one for the release-gate decisions, about the
    Incident (STIX has no risk object; a Note is the object meant for added context)."""
    notes = []
    for risk in doc.get("risk_register", []):
        status = str(risk.get("status", "open"))
        if risk.get("close_reason"):
            status += f" ({risk['close_reason']})"
        notes.append(
            stix2.Note(
                created_by_ref=producer,
                abstract=f"Risk register: {risk['hazard']}"[:250],
                content=(
                    f"Foreseeable misuse: {risk['hazard']}. Likelihood {risk['likelihood']}, "
                    f"severity {risk['severity']}; status {status}; owner "
                    f"{risk.get('owner') or '-'}. Mitigations: "
                    + ("; ".join(str(m) for m in risk["mitigations"]) or "none")
                    + ". Evidence (attestation digests): "
                    + (", ".join(risk["evidence"]) or "none")
                    + f". Last change: custody log entry {risk['log_index']}."
                ),
                object_refs=[incident],
            )
        )
    decisions = doc.get("gate_decisions", [])
    if decisions:
        lines = [
            f"{g['time']} {g['purpose']} of {g['version']} ({g['stage']}): {g['outcome']}"
            + (" by break-glass override" if g.get("override") else "")
            + f", relied on {', '.join(g['relied_on']) or 'nothing'}"
            + (f"; refused: {' | '.join(g['refusals'])}" if g["refusals"] else "")
            + f" (log entry {g['log_index']})"
            for g in decisions
        ]
        notes.append(
            stix2.Note(
                created_by_ref=producer,
                abstract="Release-gate decisions",
                content="\n".join(lines),
                object_refs=[incident],
            )
        )
    return notes
