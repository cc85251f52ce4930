"""SIGINT and SIGTERM during ``posture check -o`` and ``posture sign``: nothing is left behind
(the harness of tests/test_interrupts.py: real subprocesses, signals at random points)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.keyfiles import write_ec_key_pair
from tests.posture.helpers import SL3_ATTESTATION
from tests.test_interrupts import Scenario, _check, _run_all, _snapshot

from weightvault.custody.bootstrap import initialize_data_folder


def test_interrupting_posture_leaves_nothing_behind(tmp_path: Path) -> None:
    data = tmp_path / "custody"
    initialize_data_folder(data, owner="olivia", approvers=["alice", "bob"])
    private, _public = write_ec_key_pair(tmp_path, "ciso")
    attestation_text = SL3_ATTESTATION

    def out(point: Path) -> Path:
        return point / "out"

    def check(point: Path) -> list[str]:
        out(point).mkdir(exist_ok=True)
        return ["posture", "check", "--data", str(data), "--format", "json",
                "-o", str(out(point) / "posture.json")]  # fmt: skip

    def check_done(point: Path) -> None:
        assert json.loads((out(point) / "posture.json").read_bytes())["level"] == 0
        assert sorted(_snapshot(out(point))) == ["posture.json"]

    def sign(point: Path) -> list[str]:
        out(point).mkdir(exist_ok=True)
        (point / "attestation.yaml").write_text(attestation_text)
        return ["posture", "sign", str(point / "attestation.yaml"), "--key", str(private),
                "-o", str(out(point) / "attestation.yaml.sig")]  # fmt: skip

    def sign_done(point: Path) -> None:
        assert json.loads((out(point) / "attestation.yaml.sig").read_bytes())["dsseEnvelope"]
        assert sorted(_snapshot(out(point))) == ["attestation.yaml.sig"]

    scenarios = [
        Scenario("posture-check", check, out, check_done, 8),
        Scenario("posture-sign", sign, out, sign_done, 8),
    ]
    outcomes = _run_all(scenarios, tmp_path / "points", seed=16)
    _check(outcomes, min_mid_work={})
    assert sum(1 for o in outcomes if o.returncode in (130, 143)) >= 4


@pytest.mark.parametrize("flag", ["--format", "--require"])
def test_bad_options_are_one_line_errors(
    tmp_path: Path, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from weightvault.cli.app import run

    data = tmp_path / "custody"
    initialize_data_folder(data)
    assert run(["posture", "check", "--data", str(data), flag, "bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and flag in err
