"""Assessing a deployment: checks and attestations per measure, the level reached, the gaps.

A level is reached when every measure at that level and below is met: passed, not applicable,
or attested in a valid signed attestation. Attested is shown as such everywhere (never as
passed), so a reader can tell what weightvault verified from what a person vouches for.
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from weightvault.errors import VerificationError
from weightvault.posture.checks import (
    CHECKS,
    CheckResult,
    Deployment,
    Status,
    open_facts,
    run_check,
)
from weightvault.posture.measures import LEVELS, MEASURES_PATH, Measure, level_name, load_measures

if TYPE_CHECKING:
    from weightvault.posture.attestation import Attestation
    from weightvault.signing import Verifier

__all__ = ["MeasureResult", "PostureReport", "assess", "parse_level"]

REPORT_FORMAT = "weightvault.dev/posture-report@v1"


def parse_level(text: str) -> int:
    """``SL3`` (or ``3``) -> 3; ``ValueError`` for anything else."""
    value = text.strip().upper().removeprefix("SL")
    if not value.isdigit() or int(value) not in LEVELS:
        raise ValueError(f"security level {text!r}: expected SL1 to SL5")
    return int(value)


@dataclass(frozen=True)
class MeasureResult:
    """A measure and how this deployment fares on it."""

    measure: Measure
    status: Status
    evidence: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            **self.measure.to_json(),
            "status": self.status.value,
            "evidence": list(self.evidence),
        }


@dataclass(frozen=True)
class PostureReport:
    """The outcome of :func:`assess`."""

    generated_at: dt.datetime
    data_dir: str
    level: int
    """The highest level whose measures (and every lower level's) are all met; 0 if none."""
    results: tuple[MeasureResult, ...]
    attestation: Attestation | None
    attestation_problem: str | None
    risk_registers: tuple[dict[str, Any], ...] = ()
    """Per model: whether a release gate guards deploy/release grants, and its risk register
    (open and closed entries), as the custody database holds them. Context for the reader, not
    a measure: a register's content is people's judgement, which software cannot rate."""

    def gaps(self, level: int | None = None) -> list[MeasureResult]:
        """Unmet measures at ``level`` (default: the next level up)."""
        target = self.level + 1 if level is None else level
        return [r for r in self.results if r.measure.level == target and not r.status.met]

    def meets(self, level: int) -> bool:
        return self.level >= level

    def to_json(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "generated_at": self.generated_at.isoformat(timespec="seconds"),
            "data_dir": self.data_dir,
            "level": self.level,
            "level_name": level_name(self.level),
            "next_level_gaps": [r.measure.id for r in self.gaps()],
            "attestation": self.attestation.to_json() if self.attestation else None,
            "attestation_problem": self.attestation_problem,
            "measures": [r.to_json() for r in self.results],
            "risk_registers": list(self.risk_registers),
        }

    def to_markdown(self) -> str:
        return _markdown(self)

    def to_html(self) -> str:
        return _html(self)


def assess(
    deployment: Deployment,
    *,
    attestation: Path | None = None,
    attestation_verifier: Verifier | None = None,
    measures_path: Path = MEASURES_PATH,
) -> PostureReport:
    """Run every check the measure table names (once per distinct parameter set) and rate the
    deployment; an attestation that fails verification leaves its controls unmet and says why.
    """
    from weightvault.posture.attestation import load_attestation

    measures = load_measures(measures_path, known_checks=frozenset(CHECKS))
    verified: Attestation | None = None
    problem: str | None = None
    if attestation is not None:
        if attestation_verifier is None:
            raise ValueError("an attestation needs a verifier")
        try:
            verified = load_attestation(attestation, attestation_verifier)
        except VerificationError as exc:
            problem = exc.one_line()
    facts = open_facts(deployment)
    try:
        done: dict[str, CheckResult] = {}
        results = []
        for measure in measures:
            if measure.check is not None:
                key = measure.check_key
                if key not in done:
                    done[key] = run_check(facts, measure.check, measure.params)
                outcome = done[key]
                results.append(MeasureResult(measure, outcome.status, outcome.evidence))
            else:
                results.append(_attested(measure, verified, problem, deployment.now.date()))
        registers = _risk_registers(facts)
    finally:
        facts.close()
    level = 0
    for candidate in LEVELS:
        if all(r.status.met for r in results if r.measure.level == candidate):
            level = candidate
        else:
            break
    return PostureReport(
        generated_at=deployment.now,
        data_dir=str(deployment.config.data_dir),
        level=level,
        results=tuple(results),
        attestation=verified,
        attestation_problem=problem,
        risk_registers=registers,
    )


def _risk_registers(facts: Any) -> tuple[dict[str, Any], ...]:
    """Each model's release gate (present or not) and risk register, read from the database."""
    from weightvault.custody.risk import entries_of

    out = []
    models = facts.models()
    with facts.session() as session:
        for name, policy in models:
            out.append(
                {
                    "model": name,
                    "release_gate": policy.release is not None,
                    "risks": entries_of(session, name),
                }
            )
    return tuple(out)


def _register_lines(report: PostureReport) -> list[str]:
    """The Markdown section of the models' release gates and risk registers."""
    from weightvault.custody.risk import register_markdown

    if not report.risk_registers:
        return []
    lines = ["## Release gates and risk registers", ""]
    for register in report.risk_registers:
        gate = "release gate" if register["release_gate"] else "no release gate"
        opened = sum(1 for r in register["risks"] if r.get("status") == "open")
        lines += [
            f"### {_md_cell(register['model'])}: {gate}, {opened} open of "
            f"{len(register['risks'])} risks",
            "",
        ]
        if register["risks"]:
            rows = register_markdown(register["risks"])
            lines += [rows[0], rows[1], *(_md_cell_row(r) for r in rows[2:]), ""]
    return lines


def _md_cell_row(row: str) -> str:
    """A register row with raw HTML neutralised (its cells come from people)."""
    return row.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attested(
    measure: Measure, attestation: Attestation | None, problem: str | None, today: dt.date
) -> MeasureResult:
    control = measure.attest or ""
    if problem is not None:
        return MeasureResult(measure, Status.FAIL, (f"the attestation is not valid: {problem}",))
    if attestation is None:
        return MeasureResult(measure, Status.FAIL, ("no signed attestation given",))
    if attestation.expired(today):
        return MeasureResult(
            measure, Status.FAIL, (f"the attestation expired on {attestation.valid_until}",)
        )
    entry = attestation.controls.get(control)
    if entry is None:
        return MeasureResult(measure, Status.FAIL, (f"{control}: not in the attestation",))
    if not entry.in_place:
        return MeasureResult(
            measure, Status.FAIL, (f"{control}: attested as not in place: {entry.evidence}",)
        )
    return MeasureResult(
        measure,
        Status.ATTESTED,
        (
            f"{control}: attested by {attestation.attested_by} on {attestation.attested_at} "
            f"(signed by {attestation.signer}), not verified by weightvault",
            entry.evidence,
        ),
    )


# -- rendering ----------------------------------------------------------------------------------

class _Look(NamedTuple):
    mark: str
    """In the Markdown table."""
    colour: str
    """In the chart and the HTML table."""


#: How each status is shown, in the order the chart stacks and lists them.
_LOOKS = {
    Status.PASS: _Look("pass", "#2e7d32"),
    Status.NOT_APPLICABLE: _Look("n/a", "#9e9e9e"),
    Status.ATTESTED: _Look("attested", "#1565c0"),
    Status.FAIL: _Look("FAIL", "#c62828"),
}


def _md_cell(text: str) -> str:
    """Text from files and people, safe in a table cell: no column breaks, no raw HTML."""
    return (
        text.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("\n", " ")
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
    )


def _markdown(report: PostureReport) -> str:
    lines = [
        f"# Security posture: {level_name(report.level)}",
        "",
        f"Data folder `{report.data_dir}`, assessed {report.generated_at:%Y-%m-%d %H:%M} UTC "
        "against the RAND SL1-SL5 measures weightvault maps (`measures.toml`).",
        "",
    ]
    if report.attestation_problem:
        lines += [f"**Attestation not accepted:** {_md_cell(report.attestation_problem)}", ""]
    elif report.attestation is not None:
        a = report.attestation
        who = _md_cell(f"{a.organization} ({a.attested_by}")
        lines += [
            f"Attested controls: signed by {a.signer} for {who}, {a.attested_at}, valid until "
            f"{a.valid_until}). Attested is not verified.",
            "",
        ]
    gaps = report.gaps()
    if report.level < LEVELS[-1]:
        lines += [f"## Gaps to {level_name(report.level + 1)}", ""]
        lines += [
            f"- **{g.measure.id}** ({g.measure.category}): {g.measure.description} "
            f"{_md_cell('; '.join(g.evidence))}"
            for g in gaps
        ] or ["- none"]
        lines.append("")
    lines += _register_lines(report)
    for level in LEVELS:
        rows = [r for r in report.results if r.measure.level == level]
        met = sum(r.status.met for r in rows)
        lines += [
            f"## {level_name(level)}: {met} of {len(rows)} met",
            "",
            "| measure | shown by | status | evidence |",
            "| --- | --- | --- | --- |",
        ]
        for r in rows:
            shown = f"check `{r.measure.check_key}`" if r.measure.check else "attestation"
            evidence = _md_cell("; ".join(r.evidence))
            lines.append(f"| {r.measure.id} | {shown} | {_LOOKS[r.status].mark} | {evidence} |")
        lines.append("")
    return "\n".join(lines)


def _chart(report: PostureReport) -> str:
    """One stacked bar per level: passed, not applicable, attested, failed measures."""
    bar_width, gap, height, top = 60, 30, 160, 20
    width = len(LEVELS) * (bar_width + gap) + gap
    most = max(sum(1 for r in report.results if r.measure.level == lv) for lv in LEVELS) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 80}" '
        f'role="img" aria-label="measures met per level">'
    ]
    for i, level in enumerate(LEVELS):
        x = gap + i * (bar_width + gap)
        y = float(top + height)
        rows = [r for r in report.results if r.measure.level == level]
        for status in _LOOKS:
            count = sum(1 for r in rows if r.status is status)
            if not count:
                continue
            h = count * height / most
            y -= h
            parts.append(
                f'<rect x="{x}" y="{y:.1f}" width="{bar_width}" height="{h:.1f}" '
                f'fill="{_LOOKS[status].colour}"><title>{level_name(level)}: {count} '
                f"{status.value}</title></rect>"
            )
        weight = "bold" if level <= report.level else "normal"
        parts.append(
            f'<text x="{x + bar_width / 2}" y="{top + height + 18}" text-anchor="middle" '
            f'font-family="sans-serif" font-size="13" font-weight="{weight}">'
            f"{level_name(level)}</text>"
        )
    legend_y = top + height + 40
    for i, status in enumerate(_LOOKS):
        x = gap + i * 100
        parts.append(
            f'<rect x="{x}" y="{legend_y}" width="12" height="12" fill="{_LOOKS[status].colour}"/>'
        )
        parts.append(
            f'<text x="{x + 16}" y="{legend_y + 11}" font-family="sans-serif" '
            f'font-size="12">{status.value}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _html(report: PostureReport) -> str:
    e = html.escape
    rows = []
    for r in report.results:
        shown = f"check {r.measure.check_key}" if r.measure.check else "attestation"
        rows.append(
            f'<tr class="{r.status.value}"><td>{e(level_name(r.measure.level))}</td>'
            f"<td>{e(r.measure.id)}</td><td>{e(r.measure.description)}</td><td>{e(shown)}</td>"
            f'<td style="color:{_LOOKS[r.status].colour}">{e(r.status.value)}</td>'
            f"<td>{'<br>'.join(e(x) for x in r.evidence)}</td></tr>"
        )
    gaps = "".join(
        f"<li><b>{e(g.measure.id)}</b> ({e(g.measure.category)}): {e(g.measure.description)}</li>"
        for g in report.gaps()
    )
    note = ""
    if report.attestation_problem:
        note = f"<p><b>Attestation not accepted:</b> {e(report.attestation_problem)}</p>"
    elif report.attestation is not None:
        a = report.attestation
        note = (
            f"<p>Attested controls signed by {e(a.signer)} for {e(a.organization)} "
            f"({e(a.attested_by)}, valid until {a.valid_until}): attested, not verified.</p>"
        )
    next_level = (
        f"<h2>Gaps to {level_name(report.level + 1)}</h2><ul>{gaps or '<li>none</li>'}</ul>"
        if report.level < LEVELS[-1]
        else ""
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Security posture: {level_name(report.level)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "vertical-align:top;text-align:left;overflow-wrap:anywhere}</style></head><body>"
        f"<h1>Security posture: {level_name(report.level)}</h1>"
        f"<p>Data folder <code>{e(report.data_dir)}</code>, assessed "
        f"{report.generated_at:%Y-%m-%d %H:%M} UTC.</p>{note}{_chart(report)}{next_level}"
        + _registers_html(report)
        + "<h2>Every measure</h2><table><tr><th>level</th><th>measure</th><th>what</th>"
        "<th>shown by</th><th>status</th><th>evidence</th></tr>"
        + "".join(rows)
        + "</table></body></html>\n"
    )


def _registers_html(report: PostureReport) -> str:
    """The models' release gates and risk registers as HTML (every value escaped)."""
    e = html.escape
    if not report.risk_registers:
        return ""
    parts = ["<h2>Release gates and risk registers</h2>"]
    for register in report.risk_registers:
        gate = "release gate" if register["release_gate"] else "no release gate"
        parts.append(f"<h3>{e(register['model'])}: {gate}</h3>")
        if not register["risks"]:
            parts.append("<p>No risk entries.</p>")
            continue
        rows = "".join(
            f"<tr><td>{e(r['hazard'])}</td><td>{e(r['likelihood'])}</td>"
            f"<td>{e(r['severity'])}</td><td>{'<br>'.join(e(m) for m in r['mitigations'])}</td>"
            f"<td>{e(r['owner'])}</td><td>{'<br>'.join(e(d) for d in r['evidence'])}</td>"
            f"<td>{e(r['status'])}{': ' + e(r['close_reason']) if r.get('close_reason') else ''}"
            f"</td><td>{r['log_index']}</td></tr>"
            for r in register["risks"]
        )
        parts.append(
            "<table><tr><th>hazard</th><th>likelihood</th><th>severity</th><th>mitigations</th>"
            "<th>owner</th><th>evidence</th><th>status</th><th>log</th></tr>" + rows + "</table>"
        )
    return "".join(parts)
