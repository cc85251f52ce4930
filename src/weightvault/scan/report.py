"""What a scan found: findings and errors per file, and their JSON, SARIF 2.1.0 and table forms.

"Report" and "enforce" are separate calls (python-tuf's pattern): :class:`ScanReport` only
describes; :meth:`ScanReport.exit_code` and :func:`weightvault.scan.verify_paths` decide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from weightvault import __version__
from weightvault.errors import FormatError
from weightvault.scan.policy import Severity

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "FileResult",
    "Finding",
    "ScanReport",
    "render_plain_or_table",
    "render_summary",
    "render_table",
]

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_FORMAT_VERSION = 2
#: File and report statuses, worst first: a finding outranks an error (both fail a gate).
STATUSES = ("dangerous", "unknown", "error", "safe")


class Finding(NamedTuple):
    """One thing worth a look: an import, a call, or a structural problem in a file.

    (Records here are immutable ``NamedTuple``s rather than dataclasses: importing
    ``dataclasses`` costs a per-file hook more start-up time than the scan itself.)
    """

    path: str
    """The scanned file as given (directory scans: the file's path under the given folder)."""
    location: str
    """Where inside the file: archive member chain and byte offset (``archive/data.pkl@120``)."""
    severity: Severity
    kind: str
    """``import``, ``call``, ``build``, ``structure``, ``archive``, ``config``, ``nested``, ..."""
    subject: str
    """What was found, e.g. ``os.system`` or ``Lambda``: the name ``--allow`` takes for imports."""
    message: str
    """The evidence: why this severity (one line)."""
    rule: str = ""
    """The knowledge-base or policy entry that decided an import (``kb:os.*``,
    ``policy:acme.*``, ``--allow:mypkg.*``, ``rule:dunder-attribute``); empty otherwise."""
    usage: str = ""
    """For imports: ``called`` (REDUCE, NEWOBJ, INST, OBJ, BUILD-setstate, or through a helper
    that calls it) or ``referenced`` (only pushed and stored); empty otherwise."""

    @property
    def text(self) -> str:
        """One line for people: ``subject (usage): message [rule]``."""
        usage = f" ({self.usage})" if self.usage else ""
        rule = f" [{self.rule}]" if self.rule else ""
        return f"{self.subject}{usage}: {self.message}{rule}"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "location": self.location,
            "severity": self.severity.label,
            "kind": self.kind,
            "subject": self.subject,
            "message": self.message,
            "rule": self.rule,
            "usage": self.usage,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Finding:
        """Parse :meth:`to_json`'s form (``rule`` and ``usage`` may be absent: format 1)."""
        required = {"path", "location", "severity", "kind", "subject", "message"}
        optional = {"rule", "usage"}
        if not isinstance(doc, dict) or not required <= set(doc) <= required | optional:
            raise FormatError(
                f"finding: expected the fields {sorted(required)} and optionally "
                f"{sorted(optional)}"
            )
        for key in doc:
            if not isinstance(doc[key], str):
                raise FormatError(f"finding.{key}: not a string")
        try:
            severity = Severity.parse(doc["severity"])
        except ValueError as exc:
            raise FormatError(f"finding.severity: {exc}") from exc
        return cls(
            doc["path"], doc["location"], severity, doc["kind"], doc["subject"], doc["message"],
            doc.get("rule", ""), doc.get("usage", ""),
        )


class FileResult(NamedTuple):
    """The outcome for one file: its detected format, findings and errors."""

    path: str
    format: str
    size: int | None
    findings: tuple[Finding, ...] = ()
    errors: tuple[str, ...] = ()
    """One-line messages; a file with errors is never "safe" (its status is ``error``)."""

    @property
    def max_severity(self) -> Severity:
        return max((f.severity for f in self.findings), default=Severity.SAFE)

    @property
    def status(self) -> str:
        """``dangerous`` / ``unknown`` (the worst finding), else ``error`` when the file could
        not be scanned completely, else ``safe``."""
        if self.findings and self.max_severity > Severity.SAFE:
            return self.max_severity.label
        return "error" if self.errors else "safe"

    def to_json(self) -> dict[str, Any]:
        return {
            **self._asdict(),
            "status": self.status,
            "severity": self.status,  # format 1's field: now the status, never "safe" on error
            "findings": [f.to_json() for f in self.findings],
            "errors": list(self.errors),
        }


class ScanReport(NamedTuple):
    """All files of one scan, in the order they were given and walked."""

    files: tuple[FileResult, ...] = ()

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(f for result in self.files for f in result.findings)

    @property
    def errors(self) -> tuple[tuple[str, str], ...]:
        """``(path, message)`` for every file that could not be scanned completely."""
        return tuple((result.path, msg) for result in self.files for msg in result.errors)

    @property
    def max_severity(self) -> Severity:
        return max((f.severity for f in self.findings), default=Severity.SAFE)

    @property
    def status(self) -> str:
        """The worst file status (``dangerous`` > ``unknown`` > ``error`` > ``safe``); an empty
        report is an ``error``: nothing was scanned, so nothing can be called safe."""
        if not self.files:
            return "error"
        statuses = {r.status for r in self.files}
        return next(s for s in STATUSES if s in statuses)

    def failed(self, threshold: Severity = Severity.UNKNOWN) -> bool:
        """True when some finding is at or above ``threshold``."""
        return any(f.severity.at_least(threshold) for f in self.findings)

    def exit_code(self, threshold: Severity = Severity.UNKNOWN) -> int:
        """CLI exit code: 1 findings at/above threshold, else 2 if any error (or nothing was
        scanned), else 0.

        A finding wins over an error: "this file is malicious" is the more useful answer, and
        both are non-zero, so a CI gate stops either way.
        """
        if threshold > Severity.SAFE and self.failed(threshold):
            return 1
        if self.errors or not self.files:
            return 2
        return 0

    def to_json(self) -> dict[str, Any]:
        counts = {status: 0 for status in STATUSES}
        for result in self.files:
            counts[result.status] += 1
        return {
            "tool": "weightvault",
            "version": __version__,
            "format_version": _FORMAT_VERSION,
            "status": self.status,
            "max_severity": self.status,  # format 1's field: now the status, never "safe" on error
            "summary": {
                "files": len(self.files),
                "findings": len(self.findings),
                "errors": len(self.errors),
                "by_status": counts,
            },
            "files": [r.to_json() for r in self.files],
        }

    def to_sarif(self) -> dict[str, Any]:
        """SARIF 2.1.0: one rule per finding kind + subject, one result per finding or error.

        Levels: dangerous is ``error``, unknown is ``warning`` (both fail the default gate),
        a file that could not be scanned is ``error``.
        """
        rules: dict[str, dict[str, Any]] = {}
        results: list[dict[str, Any]] = []
        level = {Severity.DANGEROUS: "error", Severity.UNKNOWN: "warning", Severity.SAFE: "note"}
        for finding in self.findings:
            rule_id = f"weightvault/{finding.kind}/{finding.subject}"
            if rule_id not in rules:
                rules[rule_id] = {
                    "id": rule_id,
                    "name": f"{finding.kind}:{finding.subject}",
                    "shortDescription": {"text": f"{finding.kind} {finding.subject}"},
                    "fullDescription": {"text": finding.message},
                    "defaultConfiguration": {"level": level[finding.severity]},
                    "properties": {"severity": finding.severity.label, "decided_by": finding.rule},
                }
            results.append(
                {
                    "ruleId": rule_id,
                    "level": level[finding.severity],
                    "message": {"text": f"{finding.location}: {finding.text}"},
                    "locations": [_sarif_location(finding.path)],
                    "properties": {
                        "severity": finding.severity.label,
                        "location": finding.location,
                        "decided_by": finding.rule,
                        "usage": finding.usage,
                    },
                }
            )
        if self.errors:
            rules["weightvault/error"] = {
                "id": "weightvault/error",
                "name": "scan-error",
                "shortDescription": {"text": "the file could not be scanned completely"},
                "defaultConfiguration": {"level": "error"},
            }
        for path, message in self.errors:
            results.append(
                {
                    "ruleId": "weightvault/error",
                    "level": "error",
                    "message": {"text": message},
                    "locations": [_sarif_location(path)],
                }
            )
        return {
            "$schema": SARIF_SCHEMA,
            "version": "2.1.0",
            "runs": [
                {
                    "tool": {
                        "driver": {
                            "name": "weightvault",
                            "version": __version__,
                            "informationUri": "https://github.com/weightvault/weightvault",
                            "rules": list(rules.values()),
                        }
                    },
                    "results": results,
                }
            ],
        }

    def to_json_text(self) -> str:
        import json

        return json.dumps(self.to_json(), indent=2, sort_keys=True)


def _sarif_location(path: str) -> dict[str, Any]:
    return {"physicalLocation": {"artifactLocation": {"uri": path.replace("\\", "/")}}}


def render_table(report: ScanReport, console: Console, *, verbose: bool = False) -> None:
    """Print a Rich table of findings (all files with ``verbose``), then a one-line summary.

    Every cell is a :class:`rich.text.Text`, never markup: file names, import names and
    messages come from the scanned files, and markup in them (``[/]``, ``[conceal]``, a style
    that hides text) must print as written, not restyle or hide the report.
    """
    from rich.table import Table
    from rich.text import Text

    from weightvault._console import printable

    def cell(value: str) -> Text:
        return Text(printable(value))

    style = {"dangerous": "bold red", "unknown": "yellow", "error": "magenta", "safe": "green"}
    table = Table(show_lines=False, header_style="bold")
    shown = [r for r in report.files if verbose or r.findings or r.errors]
    # A file name is folded only when it is long: the finding column takes what is left.
    longest = max((len(printable(r.path)) for r in shown), default=4)
    table.add_column("file", overflow="fold", min_width=min(longest, 32))
    table.add_column("format")
    table.add_column("verdict")
    table.add_column("where", overflow="fold")
    table.add_column("finding", overflow="fold")
    for result in report.files:
        if not result.findings and not result.errors and not verbose:
            continue
        path, kind = cell(result.path), cell(result.format)
        if not result.findings and not result.errors:
            table.add_row(path, kind, Text("safe", style=style["safe"]), Text(), Text())
        for finding in result.findings:
            label = finding.severity.label
            table.add_row(
                path,
                kind,
                Text(label, style=style[label]),
                cell(finding.location),
                cell(finding.text),
            )
        for message in result.errors:
            table.add_row(path, kind, Text("error", style=style["error"]), Text(), cell(message))
    if table.row_count:
        console.print(table)
    summary = Text(f"{len(report.files)} file(s) scanned")
    for key, count in _summary_counts(report):
        summary.append(", ")
        summary.append(f"{count} {key}", style=style[key])
    console.print(summary)


def _summary_counts(report: ScanReport) -> list[tuple[str, int]]:
    statuses = [r.status for r in report.files]
    return [(key, statuses.count(key)) for key in STATUSES if statuses.count(key)]


def render_plain_or_table(report: ScanReport, *, verbose: bool = False) -> None:
    """The default text output: a Rich table when there is something to show, else one line.

    A scan with nothing to show does not need Rich at all, which keeps per-file invocations fast.
    """

    if verbose or report.findings or report.errors:
        from weightvault._console import plain_console

        render_table(report, plain_console(), verbose=verbose)
        return
    render_summary(report)


def render_summary(report: ScanReport) -> None:
    """One plain line: ``N file(s) scanned, K safe`` (no Rich needed)."""
    import sys

    parts = [f"{len(report.files)} file(s) scanned"]
    parts += [f"{count} {key}" for key, count in _summary_counts(report)]
    sys.stdout.write(", ".join(parts) + "\n")
