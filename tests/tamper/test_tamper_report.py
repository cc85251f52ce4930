"""Suite results and reports: round trips, worst cases, regret, scoped claims, plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weightvault.errors import FormatError, InputError
from weightvault.tamper.defenses import MLACConfig, train_mlac
from weightvault.tamper.digits import DigitsTestbed
from weightvault.tamper.evaluate import RANDOM_INIT, UNDEFENDED, SuiteResult, run_suite
from weightvault.tamper.report import summarize, to_markdown, write_report
from weightvault.tamper.spec import AttackSuite


@pytest.fixture
def result(digits: DigitsTestbed, tiny_suite: AttackSuite) -> SuiteResult:
    config = MLACConfig(outer_steps=3, inner_steps=2, inner_batch_sizes=(8,), eval_batch=16)
    model, record = train_mlac(digits.release(0), digits.data(), config)
    return run_suite(digits, {"mlac": (model, record)}, tiny_suite)


def test_references_are_always_included(result: SuiteResult) -> None:
    roles = {m.name: m.role for m in result.models}
    assert roles == {RANDOM_INIT: "reference", UNDEFENDED: "reference", "mlac": "candidate"}
    # every attack x seed for every model
    assert len(result.runs) == 3 * 3 * 3
    assert {r.seed for r in result.runs} == {0, 1, 2}


def test_result_json_round_trips_and_is_strict(result: SuiteResult) -> None:
    data = result.to_json()
    again = SuiteResult.from_json(data)
    assert again.to_json() == data
    doc = json.loads(data)
    doc["runs"][0]["model"] = "ghost"
    with pytest.raises(FormatError, match=r"results.runs\[0\].model"):
        SuiteResult.from_json(json.dumps(doc).encode())
    doc = json.loads(data)
    doc["surprise"] = 1
    with pytest.raises(FormatError, match=r"results\.surprise: unknown field"):
        SuiteResult.from_json(json.dumps(doc).encode())
    with pytest.raises(FormatError, match="not valid JSON"):
        SuiteResult.from_json(data[:100])


def test_summary_worst_case_regret_and_claims(result: SuiteResult) -> None:
    summary = summarize(result)
    models = summary["models"]
    for name, entry in models.items():
        bests = [a["best"]["mean"] for a in entry["attacks"].values() if a["best"]]
        assert entry["worst_case"]["mean"] == max(bests)  # worst case = max over the suite
    random_worst = models[RANDOM_INIT]["worst_case"]["mean"]
    undefended = models[UNDEFENDED]
    assert undefended["regret_vs_random_init"] == pytest.approx(
        undefended["worst_case"]["mean"] - random_worst
    )
    assert undefended["regret_vs_random_init"] > 0  # the release is a better start than nothing
    assert models["mlac"]["held_out_families"] == [
        "probe/linear",
        "sgd-momentum/warmup-cosine/lora/harmful",
    ]
    claims = models["mlac"]["claims"]
    assert any(("examples" in c and "families" in c) or "does not resist" in c for c in claims)
    assert any(c.startswith("linear probe with 20 examples") for c in claims)
    assert any("does not resist" in c for c in undefended["claims"])


def test_diverged_runs_are_excluded_from_worst_case(result: SuiteResult) -> None:
    runs = list(result.runs)
    # Mark every mlac adam-full run as diverged: it must drop out of the worst case.
    from dataclasses import replace

    marked = tuple(
        replace(r, status="diverged") if r.model == "mlac" and r.attack == "adam-full" else r
        for r in runs
    )
    summary = summarize(replace(result, runs=marked))
    entry = summary["models"]["mlac"]
    assert entry["attacks"]["adam-full"]["best"] is None
    assert entry["attacks"]["adam-full"]["diverged_seeds"] == [0, 1, 2]
    assert entry["worst_attack"] != "adam-full"
    text = to_markdown(summary)
    assert "mlac: adam-full (seeds [0, 1, 2])" in text
    assert any("inconclusive" in c for c in entry["claims"])


def test_write_report_files(tmp_path: Path, result: SuiteResult) -> None:
    files = write_report(result, tmp_path)
    md = files.markdown.read_text()
    assert "| model | role | defense | desired acc |" in md
    assert "## Scoped claims" in md
    assert "adam-full" in md and "sgdm-lora" in md
    for png in (files.curves_png, files.summary_png):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(files.summary_json.read_text())
    assert set(summary["models"]) == {RANDOM_INIT, UNDEFENDED, "mlac"}
    with pytest.raises(InputError, match="already exists"):
        write_report(result, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["tamper-summary.json", "tamper-report.md", "tamper-curves.png", "tamper-summary.png"]
    )
