"""The ``weightvault tamper`` commands: defend -> attack -> report round trip, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from weightvault.cli.app import run
from weightvault.tamper.defaults import LabDefaults
from weightvault.tamper.grid import AttackGrid, default_grid
from weightvault.tamper.spec import AttackSuite

TINY_SUITE = {
    "name": "cli-tiny",
    "seeds": [0, 1, 2],
    "curve_points": 3,
    "attacks": [
        {"name": "adam-full", "examples": 20, "optimizer": "adam", "lr": 0.003, "steps": 10},
        {
            "name": "sgd-head",
            "examples": 20,
            "optimizer": "sgd",
            "lr": 0.1,
            "steps": 10,
            "mode": "head",
        },
        {"kind": "probe", "name": "probe", "examples": 20},
    ],
}


def _one_line_error(capsys: pytest.CaptureFixture[str], text: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert text in err, err


def test_defend_attack_report_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "mlac.safetensors"
    assert (
        run(
            [
                "tamper",
                "defend",
                "--method",
                "mlac",
                "--steps",
                "2",
                "--inner-steps",
                "2",
                "--out",
                str(model),
                "--json",
            ]
        )
        == 0
    )
    defended = json.loads(capsys.readouterr().out)
    assert defended["method"] == "mlac"
    assert defended["defense"]["training_families"] == ["adam/constant/full/harmful"]
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps(TINY_SUITE))
    results = tmp_path / "results.json"
    assert (
        run(
            [
                "tamper",
                "attack",
                "-m",
                str(model),
                "--suite",
                str(suite),
                "--out",
                str(results),
                "--json",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["models"]) == {"random-init", "undefended", "mlac"}
    doc = json.loads(results.read_text())
    assert doc["testbed"] == "digits"
    assert AttackSuite.from_dict(doc["suite"]).name == "cli-tiny"
    assert len(doc["runs"]) == 3 * 3 * 3
    out_dir = tmp_path / "report"
    out_dir.mkdir()
    assert run(["tamper", "report", str(results), "--out-dir", str(out_dir), "--json"]) == 0
    files = [Path(p) for p in json.loads(capsys.readouterr().out)["files"]]
    assert [p.name for p in files] == [
        "tamper-summary.json",
        "tamper-report.md",
        "tamper-curves.png",
        "tamper-summary.png",
    ]
    md = (out_dir / "tamper-report.md").read_text()
    assert "testbed `digits`, suite `cli-tiny`" in md
    assert "| mlac | candidate (mlac) |" in md
    assert "NOT FOR CLAIMS" not in md
    summary = json.loads((out_dir / "tamper-summary.json").read_text())
    assert summary["seeds"] == [0, 1, 2]
    assert summary["models"]["mlac"]["training_families"] == ["adam/constant/full/harmful"]
    assert summary["models"]["mlac"]["held_out_families"] == [
        "probe/linear",
        "sgd/constant/head/harmful",
    ]
    # A second report into the same folder needs --force, and leaves the files intact.
    assert run(["tamper", "report", str(results), "--out-dir", str(out_dir)]) == 2
    _one_line_error(capsys, "already exists")
    assert (out_dir / "tamper-report.md").read_text() == md


def test_attack_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    assert run(["tamper", "attack", "--out", str(out)]) == 2
    _one_line_error(capsys, "exactly one of --suite FILE, --preset NAME or --grid FILE")
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "attacks": [{"name": "a", "examples": 5, "optimizer": "lion"}]}')
    assert run(["tamper", "attack", "--suite", str(bad), "--out", str(out)]) == 2
    _one_line_error(capsys, "suite.attacks[0].optimizer: 'lion' is not one of")
    assert run(["tamper", "attack", "--suite", str(tmp_path / "nope.json"), "--out", str(out)]) == 2
    _one_line_error(capsys, "cannot read")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 40)
    assert run(["tamper", "attack", "--preset", "ci", "-m", str(junk), "--out", str(out)]) == 2
    _one_line_error(capsys, "not a safetensors file")
    assert run(["tamper", "attack", "--preset", "ci", "--seeds", "1,1", "--out", str(out)]) == 2
    _one_line_error(capsys, "--seeds '1,1'")
    assert run(["tamper", "attack", "--preset", "nope", "--out", str(out)]) == 2
    _one_line_error(capsys, "no built-in attack grid for testbed 'nope'")
    assert run(["tamper", "attack", "--preset", "ci", "--seeds", "0,1", "--out", str(out)]) == 2
    _one_line_error(capsys, "need at least 3; give --seeds 0,1,2 or more, or pass --quick")
    assert run(["tamper", "attack", "--preset", "ci", "--device", "tpu", "--out", str(out)]) == 2
    _one_line_error(capsys, "--device 'tpu': use cpu or cuda")
    assert not out.exists()


def test_defend_and_report_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["tamper", "defend", "--method", "magic", "--out", str(tmp_path / "m")]) == 2
    _one_line_error(capsys, "defense method 'magic'")
    assert run(["tamper", "defend", "--testbed", "nomodule:x", "--out", str(tmp_path / "m")]) == 2
    _one_line_error(capsys, "cannot import")
    results = tmp_path / "r.json"
    results.write_text('{"version": 2}')
    assert run(["tamper", "report", str(results), "--out-dir", str(tmp_path)]) == 2
    _one_line_error(capsys, "results.defaults: missing")
    assert run(["tamper", "report", str(results), "--out-dir", str(tmp_path / "missing")]) == 2
    _one_line_error(capsys, "folder does not exist")
    assert not list(tmp_path.glob("tamper-*"))


def test_suite_and_grid_commands_print_parseable_data(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["tamper", "suite", "ci"]) == 0
    suite = AttackSuite.from_json(capsys.readouterr().out.encode())
    assert suite.name == "ci"
    assert run(["tamper", "grid", "digits"]) == 0
    grid = AttackGrid.from_json(capsys.readouterr().out.encode())
    assert grid == default_grid("digits")


def test_report_runs_the_lab_quick_and_stamps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_defaults: LabDefaults
) -> None:
    """``tamper report`` without a results file runs the whole lab: five files, all at once."""
    grid = tmp_path / "grid.json"
    grid.write_bytes(tiny_defaults.grid.to_json())
    defaults = tmp_path / "defaults.json"
    defaults.write_bytes(tiny_defaults.to_json())
    out_dir = tmp_path / "lab"
    out_dir.mkdir()
    common = ["tamper", "report", "-o", str(out_dir), "--testbed", "digits", "--grid", str(grid)]
    common += ["--defaults", str(defaults)]
    # fewer than three seeds: only as a quick run
    assert run([*common, "--seeds", "0,1"]) == 2
    _one_line_error(capsys, "--seeds '0,1': 2 seed(s)")
    assert list(out_dir.iterdir()) == []
    assert run([*common, "--seeds", "0,1", "--quick", "--json"]) == 0
    files = [Path(p).name for p in json.loads(capsys.readouterr().out)["files"]]
    assert files == [
        "tamper-results.json",
        "tamper-summary.json",
        "tamper-report.md",
        "tamper-curves.png",
        "tamper-summary.png",
    ]
    md = (out_dir / "tamper-report.md").read_text()
    assert "NOT FOR CLAIMS" in md
    assert "| tiny | 20 | not for claims |" not in md  # claims are per model, not per grid
    assert "| mlac | 10 | not for claims |" in md
    assert "## Attack grid split" in md and "| lrs | 0.003 | 0.0003, 0.03 |" in md
    results = json.loads((out_dir / "tamper-results.json").read_text())
    assert results["quick"] is True
    assert results["defaults"]["defenses"]["mlac"] == tiny_defaults.overrides("mlac", quick=True)
    # a results file plus a lab-run option is refused
    assert (
        run(
            [
                "tamper",
                "report",
                str(out_dir / "tamper-results.json"),
                "-o",
                str(tmp_path),
                "--quick",
            ]
        )
        == 2
    )
    _one_line_error(capsys, "--quick applies to a lab run")
