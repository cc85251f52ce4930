"""SIGINT and SIGTERM during ``fingerprint issue`` (one file, a folder of shards): nothing is left
behind (the harness of tests/test_interrupts.py: real subprocesses, signals at random points)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
from tests.test_interrupts import Scenario, _check, _report, _run_all, _snapshot

from weightvault.fingerprint import create_fingerprint_key


def _model(folder: Path) -> None:
    """Two shards of a 2-layer MLP-like model, 16 MB: long enough to be caught mid-work."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    save_file({"net.0.weight": rng.standard_normal((1024, 1024), dtype=np.float32),
               "net.0.bias": rng.standard_normal(1024, dtype=np.float32)},
              str(folder / "model-00001-of-00002.safetensors"))  # fmt: skip
    save_file({"net.2.weight": rng.standard_normal((1024, 1024), dtype=np.float32),
               "net.2.bias": rng.standard_normal(1024, dtype=np.float32)},
              str(folder / "model-00002-of-00002.safetensors"))  # fmt: skip
    (folder / "config.json").write_text('{"hidden": 1024}\n')


def test_interrupting_issue_leaves_nothing_behind(tmp_path: Path) -> None:
    model = tmp_path / "model"
    _model(model)
    key = tmp_path / "fp.key"
    create_fingerprint_key(key)

    def out(point: Path) -> Path:
        return point / "out"

    def issue_file(point: Path) -> list[str]:
        out(point).mkdir(exist_ok=True)
        shard = model / "model-00001-of-00002.safetensors"
        return ["fingerprint", "issue", str(shard), "-r", "alice", "-k", str(key),
                "-o", str(out(point) / "copy.safetensors")]  # fmt: skip

    def issue_file_done(point: Path) -> None:
        assert sorted(_snapshot(out(point))) == ["copy.safetensors"]

    def issue_folder(point: Path) -> list[str]:
        out(point).mkdir(exist_ok=True)
        return ["fingerprint", "issue", str(model), "-r", "bob", "-k", str(key),
                "-o", str(out(point) / "copy")]  # fmt: skip

    def issue_folder_done(point: Path) -> None:
        assert sorted(_snapshot(out(point) / "copy")) == [
            "config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
        ]  # fmt: skip

    scenarios = [
        Scenario("fingerprint-issue-file", issue_file, out, issue_file_done, 6),
        Scenario("fingerprint-issue-folder", issue_folder, out, issue_folder_done, 6),
    ]
    inputs = {**_snapshot(model), "fp.key": key.read_bytes().hex()}
    outcomes = _run_all(scenarios, tmp_path / "points", seed=21)
    # inputs untouched; at least one point of each caught while the copy was being written
    assert {**_snapshot(model), "fp.key": key.read_bytes().hex()} == inputs
    _check(outcomes, min_mid_work={"fingerprint-issue-file": 1, "fingerprint-issue-folder": 1})
    assert sum(1 for o in outcomes if o.returncode in (130, 143)) >= 6, _report(outcomes)
