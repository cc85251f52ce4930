"""Reports: the summary JSON, the Markdown report and two PNG plots of a :class:`SuiteResult`,
written together (all four files, or none).

The numbers and the rules behind every claim are in :mod:`weightvault.tamper.summary`; the
Markdown in :mod:`weightvault.tamper.markdown`; the plots in :mod:`weightvault.tamper.plots`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightvault._fs import StagedOutputs, staged_outputs
from weightvault.tamper.evaluate import SuiteResult
from weightvault.tamper.markdown import to_markdown
from weightvault.tamper.plots import plot_curves, plot_summary
from weightvault.tamper.summary import DEFAULT_MARGIN, summarize

__all__ = ["ReportFiles", "report_files", "stage_report", "write_report"]


@dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    summary_json: Path
    markdown: Path
    curves_png: Path
    summary_png: Path


def report_files(out_dir: Path, prefix: str) -> ReportFiles:
    out_dir = Path(out_dir)
    return ReportFiles(
        summary_json=out_dir / f"{prefix}-summary.json",
        markdown=out_dir / f"{prefix}-report.md",
        curves_png=out_dir / f"{prefix}-curves.png",
        summary_png=out_dir / f"{prefix}-summary.png",
    )


def stage_report(
    result: SuiteResult,
    batch: StagedOutputs,
    files: ReportFiles,
    *,
    margin: float = DEFAULT_MARGIN,
    force: bool = False,
) -> dict[str, Any]:
    """Stage the four report files into ``batch``; returns the summary."""
    summary = summarize(result, margin=margin)
    plot_curves(result, summary, files.curves_png, force, batch=batch)
    plot_summary(summary, files.summary_png, force, batch=batch)
    markdown = to_markdown(summary, [files.curves_png.name, files.summary_png.name])
    batch.write_bytes(files.markdown, markdown.encode(), force=force)
    batch.write_bytes(
        files.summary_json,
        (json.dumps(summary, indent=1, sort_keys=True) + "\n").encode(),
        force=force,
    )
    return summary


def write_report(
    result: SuiteResult,
    out_dir: Path,
    *,
    prefix: str = "tamper",
    margin: float = DEFAULT_MARGIN,
    force: bool = False,
) -> ReportFiles:
    """Write ``<prefix>-summary.json``, ``<prefix>-report.md``, ``<prefix>-curves.png`` and
    ``<prefix>-summary.png`` into ``out_dir`` (all four, or none)."""
    files = report_files(out_dir, prefix)
    # The four files appear together or not at all (an error or Ctrl-C leaves none).
    with staged_outputs() as batch:
        stage_report(result, batch, files, margin=margin, force=force)
    return files


#: Alias re-exported as ``weightvault.write_tamper_report``.
write_tamper_report = write_report
