"""Suite results and reports: worst case per run, bootstrap intervals, per-budget claims, files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.tamper.tiny import TINY_SUITE

from weightvault.errors import FormatError, InputError
from weightvault.tamper.defenses import MLACConfig, train_defense
from weightvault.tamper.digits import DigitsTestbed
from weightvault.tamper.evaluate import (
    RANDOM_INIT,
    UNDEFENDED,
    ModelInfo,
    SuiteResult,
    run_suite,
)
from weightvault.tamper.markdown import to_markdown
from weightvault.tamper.report import write_report
from weightvault.tamper.runs import AttackRun, encode_hits
from weightvault.tamper.spec import AttackSpec, AttackSuite
from weightvault.tamper.summary import summarize

# -- a real (tiny) run -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def result(digits: DigitsTestbed) -> SuiteResult:
    config = MLACConfig(outer_steps=3, inner_steps=2, inner_batch_sizes=(8,), eval_batch=16)
    model, record = train_defense(digits.release(0), digits.data(), config)
    return run_suite(digits, {"mlac": (model, record)}, TINY_SUITE)


def test_references_share_seeds_and_attacks(result: SuiteResult) -> None:
    roles = {m.name: m.role for m in result.models}
    assert roles == {RANDOM_INIT: "reference", UNDEFENDED: "reference", "mlac": "candidate"}
    assert len(result.runs) == 3 * 3 * 3  # every attack x seed for every model
    for name in roles:
        assert {r.seed for r in result.runs if r.model == name} == {0, 1, 2}
    # random init is one fresh model per seed, not one model for all
    assert len(set(result.model(RANDOM_INIT).desired_by_seed.values())) > 1


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
    doc = json.loads(data)
    doc["version"] = 1
    with pytest.raises(FormatError, match="older lab"):
        SuiteResult.from_json(json.dumps(doc).encode())
    with pytest.raises(FormatError, match="not valid JSON"):
        SuiteResult.from_json(data[:100])
    doc = json.loads(data)
    del doc["parameters"]  # results written before parameters were counted still load
    assert SuiteResult.from_json(json.dumps(doc).encode()).parameters is None


def test_parameters_are_counted_on_the_model(result: SuiteResult, digits: DigitsTestbed) -> None:
    """The report's sizes come from the model and the attack code, not from a declaration."""
    counts = result.parameters
    assert counts is not None
    release = digits.release(0)
    assert counts["total"] == sum(p.numel() for p in release.parameters())
    assert counts["trunk"] == sum(p.numel() for p in release.trunk.parameters())
    heads = sum(p.numel() for p in release.desired_head.parameters())
    harmful_head = (release.feature_dim + 1) * 2
    trainable = counts["trainable"]
    assert trainable["full"] == counts["total"] + harmful_head
    assert trainable["lora (rank 4)"] < trainable["full"]
    assert trainable["probe"] == release.feature_dim + 1  # binary logistic regression
    assert set(trainable) == {"full", "lora (rank 4)", "probe"}
    assert heads > 0


def test_worst_case_is_the_maximum_over_every_attack_and_seed(result: SuiteResult) -> None:
    summary = summarize(result, bootstrap=200)
    for name, entry in summary["models"].items():
        runs = [r for r in result.runs if r.model == name]
        best = max(runs, key=lambda r: r.best_acc)
        worst = entry["worst_case"]
        assert worst["value"] == best.best_acc
        assert worst["attack"] == best.attack and worst["seed"] == best.seed
        low, high = worst["ci"]
        assert low <= high
        means = [a["best"]["mean"] for a in entry["attacks"].values()]
        assert entry["worst_mean"]["value"] == pytest.approx(max(means))
        assert worst["value"] >= entry["worst_mean"]["value"]
    # deterministic: the bootstrap uses a fixed generator
    assert summarize(result, bootstrap=200) == summary


# -- synthetic results: the claim rules, exactly -----------------------------------------------

N_TEST = 400


def _run(model: str, attack: str, examples: int, seed: int, acc: float, **kw: object) -> AttackRun:
    correct = torch.zeros(N_TEST, dtype=torch.bool)
    correct[: round(acc * N_TEST)] = True
    return AttackRun(
        model=model,
        attack=attack,
        kind="finetune",
        family="adam/constant/full/harmful",
        examples=examples,
        steps=10,
        seed=seed,
        status=kw.get("status", "ok"),  # type: ignore[arg-type]
        curve=((0, 0.5), (10, float(correct.float().mean()))),
        retain_acc=0.9,
        attempts=(),
        hits=(encode_hits(torch.zeros(N_TEST, dtype=torch.bool)), encode_hits(correct)),
    )


def _synthetic(
    accs: dict[str, dict[int, list[float]]],
    *,
    quick: bool = False,
    desired: dict[str, float] | None = None,
    diverged: set[tuple[str, int]] | None = None,
) -> SuiteResult:
    """``accs[model][budget]`` = accuracy per seed (0, 1, 2) of one attack at that budget."""
    budgets = sorted(next(iter(accs.values())))
    suite = AttackSuite(
        "synthetic",
        tuple(AttackSpec(f"a{b}", b, steps=10) for b in budgets),
        seeds=(0, 1, 2),
        curve_points=2,
    )
    runs = []
    for model, per_budget in accs.items():
        for budget, values in per_budget.items():
            for seed, acc in enumerate(values):
                status = "diverged" if (model, budget) in (diverged or set()) else "ok"
                runs.append(_run(model, f"a{budget}", budget, seed, acc, status=status))
    roles = {RANDOM_INIT: "reference", UNDEFENDED: "reference"}
    models = tuple(
        ModelInfo(
            name,
            roles.get(name, "candidate"),
            dict.fromkeys((0, 1, 2), (desired or {}).get(name, 0.95)),
        )
        for name in accs
    )
    return SuiteResult(
        testbed="synthetic",
        suite=suite,
        harmful_chance=0.5,
        models=models,
        runs=tuple(runs),
        threads=1,
        test_size=N_TEST,
        quick=quick,
    )


def _claims(summary: dict[str, object], model: str) -> dict[int, dict[str, object]]:
    entry = summary["models"][model]  # type: ignore[index]
    return {c["budget"]: c for c in entry["claims"]}


def test_blocks_only_when_the_interval_is_below_undefended_and_near_random_init() -> None:
    result = _synthetic(
        {
            RANDOM_INIT: {10: [0.55, 0.55, 0.55], 100: [0.60, 0.60, 0.60]},
            UNDEFENDED: {10: [0.80, 0.80, 0.80], 100: [0.95, 0.95, 0.95]},
            # at 10 examples: at random init's level; at 100: one seed breaks through
            "defended": {10: [0.54, 0.55, 0.55], 100: [0.60, 0.61, 0.90]},
        }
    )
    summary = summarize(result, margin=0.05, bootstrap=300)
    claims = _claims(summary, "defended")
    assert claims[10]["verdict"] == "blocks"
    assert claims[100]["verdict"] == "not established"
    # the worst case is the breaking seed, not the seed mean (0.70)
    assert claims[100]["worst"]["value"] == pytest.approx(0.90)  # type: ignore[index]
    assert "random init" in str(claims[100]["reason"])
    text = to_markdown(summary)
    assert "| defended | 10 | blocks |" in text
    assert "| defended | 100 | not established |" in text
    assert "blocks attacks with 10 examples" in text


def test_noise_wide_intervals_are_not_established() -> None:
    """A point estimate at random init's level is not enough: the upper end counts."""
    result = _synthetic(
        {
            RANDOM_INIT: {20: [0.60, 0.60, 0.60]},
            UNDEFENDED: {20: [0.64, 0.64, 0.64]},
            "defended": {20: [0.60, 0.60, 0.60]},
        }
    )
    claim = _claims(summarize(result, margin=0.0, bootstrap=300), "defended")[20]
    high = claim["worst"]["ci"][1]  # type: ignore[index]
    assert high > 0.60  # test-set noise widens the interval
    assert claim["verdict"] == "not established"


def test_diverged_runs_quick_runs_and_lost_desired_task_block_claims() -> None:
    accs = {
        RANDOM_INIT: {10: [0.55, 0.55, 0.55]},
        UNDEFENDED: {10: [0.90, 0.90, 0.90]},
        "defended": {10: [0.52, 0.52, 0.52]},
    }
    blocked = _synthetic(accs, diverged={("defended", 10)})
    claim = _claims(summarize(blocked, bootstrap=100), "defended")[10]
    assert claim["verdict"] == "not established" and "diverged" in str(claim["reason"])
    # an attack that diverges on the undefended release too is a broken grid point, no evidence
    broken = _synthetic(accs, diverged={("defended", 10), (UNDEFENDED, 10)})
    assert _claims(summarize(broken, bootstrap=100), "defended")[10]["verdict"] == "blocks"
    quick = _synthetic(accs, quick=True)
    summary = summarize(quick, bootstrap=100)
    assert _claims(summary, "defended")[10]["verdict"] == "not for claims"
    assert summary["not_for_claims"]
    assert "NOT FOR CLAIMS" in to_markdown(summary)
    forgot = _synthetic(accs, desired={"defended": 0.60, UNDEFENDED: 0.95})
    claim = _claims(summarize(forgot, bootstrap=100), "defended")[10]
    assert claim["verdict"] == "not established" and "desired-task" in str(claim["reason"])
    fine = _synthetic(accs)
    assert _claims(summarize(fine, bootstrap=100), "defended")[10]["verdict"] == "blocks"


def test_bootstrap_interval_covers_the_test_set_noise() -> None:
    result = _synthetic({RANDOM_INIT: {10: [0.7, 0.7, 0.7]}, UNDEFENDED: {10: [0.7, 0.7, 0.7]}})
    worst = summarize(result, bootstrap=500)["models"][RANDOM_INIT]["worst_case"]
    low, high = worst["ci"]
    se = np.sqrt(0.7 * 0.3 / N_TEST)
    assert low < 0.7 < high
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.3)


# -- files ---------------------------------------------------------------------------------------


def test_write_report_files(tmp_path: Path, result: SuiteResult) -> None:
    files = write_report(result, tmp_path)
    md = files.markdown.read_text()
    for heading in (
        "## Attack grid split",
        "## Models: worst case over every (attack, seed) run",
        "## Budget curve",
        "## Claims per budget",
        "## Comparison with the published defenses' claims",
    ):
        assert heading in md
    assert "adam-full" in md and "sgdm-lora" in md
    assert f"Parameters of the release: {result.parameters['total']:,}" in md  # type: ignore[index]
    for png in (files.curves_png, files.summary_png):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(files.summary_json.read_text())
    assert set(summary["models"]) == {RANDOM_INIT, UNDEFENDED, "mlac"}
    with pytest.raises(InputError, match="already exists"):
        write_report(result, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["tamper-summary.json", "tamper-report.md", "tamper-curves.png", "tamper-summary.png"]
    )


def test_diverged_runs_stay_in_the_worst_case(result: SuiteResult) -> None:
    """A diverged run keeps what it reached (it can only raise the worst case), and is listed."""
    marked = tuple(
        replace(r, status="diverged") if r.model == "mlac" and r.attack == "adam-full" else r
        for r in result.runs
    )
    summary = summarize(replace(result, runs=marked), bootstrap=100)
    entry = summary["models"]["mlac"]
    assert entry["attacks"]["adam-full"]["diverged_seeds"] == [0, 1, 2]
    best = max(r.best_acc for r in result.runs if r.model == "mlac")
    assert entry["worst_case"]["value"] == best
    assert entry["by_budget"]["20"]["diverged_runs"] == 3


def test_results_do_not_depend_on_the_number_of_worker_processes(
    digits: DigitsTestbed, result: SuiteResult
) -> None:
    config = MLACConfig(outer_steps=3, inner_steps=2, inner_batch_sizes=(8,), eval_batch=16)
    model, record = train_defense(digits.release(0), digits.data(), config)
    parallel = run_suite(digits, {"mlac": (model, record)}, TINY_SUITE, jobs=2)
    assert parallel.to_json() == result.to_json()
