"""The job kinds in a real confined worker, outside the service: the sampling controls of a
query (temperature, top-k, top-p, seed, token limit) do what they say, and an evaluation
installed as an entry point runs inside the confinement. Each worker imports PyTorch (seconds),
so each test runs few of them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from tests.access.helpers import REPEAT, encrypt_model, lm_dataset, make_tiny_lm

from paths import REPO
from weightvault.access.sandbox import Limits, WorkerOutcome, run_worker


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, str]]:
    root = tmp_path_factory.mktemp("kinds")
    return encrypt_model(make_tiny_lm(root / "tiny"), root / "data" / "blobs")


def _run(
    tmp_path: Path, files: list[dict[str, str]], job: dict[str, Any], **env: str
) -> WorkerOutcome:
    scratch = tmp_path / f"scratch-{len(list(tmp_path.iterdir()))}"
    scratch.mkdir()
    message = {
        "job": {"model": "tiny", "version": "v1", **job},
        "files": files,
        "forbidden": [str(Path(files[0]["blob"]).parent)],
        "threads": 1,
    }
    outcome = run_worker(
        message, scratch=scratch, limits=Limits(cpu_s=300, wall_s=600), extra_env=env or None
    )
    assert outcome.status == "succeeded", outcome
    return outcome


def test_sampling_controls_are_applied_and_a_seed_reproduces_a_sample(
    tmp_path: Path, files: list[dict[str, str]]
) -> None:
    prompts = [[3, 40, 7]] * 4  # off the trained sequence: a flat distribution to draw from
    hot = {"temperature": 5.0, "seed": 11, "max_new_tokens": 6}
    sampled = _run(
        tmp_path, files, {"kind": "query", "parameters": hot, "inputs": {"prompts": prompts}}
    )
    completions = sampled.outputs["completions"]
    assert [len(c) for c in completions] == [6] * 4 and sampled.outputs["tokens_out"] == 24
    assert len({tuple(c) for c in completions}) > 1  # each draw is a fresh sample
    again = _run(
        tmp_path, files, {"kind": "query", "parameters": hot, "inputs": {"prompts": prompts}}
    )
    assert again.outputs == sampled.outputs  # the same seed draws the same samples
    # top_k=1 and a tiny top_p each leave one candidate: sampling turns greedy, whatever the
    # temperature, and the trained sequence continues.
    narrow = {"kind": "query", "inputs": {"prompts": [REPEAT[:3], REPEAT[:3]]}}
    for cut in ({"top_k": 1}, {"top_p": 0.001}):
        parameters = {"temperature": 5.0, "seed": 11, "max_new_tokens": 3, **cut}
        greedy = _run(tmp_path, files, {**narrow, "parameters": parameters}).outputs
        assert greedy["completions"] == [REPEAT[3:6]] * 2, cut


def test_an_installed_evaluation_entry_point_runs_inside_the_worker(
    tmp_path: Path, files: list[dict[str, str]]
) -> None:
    plugins = tmp_path / "plugins"
    (plugins / "wv_eval_probe-1.0.dist-info").mkdir(parents=True)
    (plugins / "wv_eval_probe-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: wv-eval-probe\nVersion: 1.0\n"
    )
    (plugins / "wv_eval_probe-1.0.dist-info" / "entry_points.txt").write_text(
        "[weightvault.evaluations]\nrepeat-probe = wv_eval_probe:evaluate\n"
    )
    (plugins / "wv_eval_probe.py").write_text(
        "import torch\n\n\n"
        "def evaluate(model, rows):\n"
        "    ids = torch.tensor([[5, 9, 13, 17]])\n"
        "    with torch.no_grad():\n"
        "        top = int(model(input_ids=ids).logits[0, -1].argmax())\n"
        "    return {'next_is_21': float(top == 21), 'rows': float(len(rows or []))}\n"
    )
    path = os.pathsep.join([str(plugins), str(REPO)])
    job = {
        "kind": "evaluate",
        "parameters": {"evaluation": "repeat-probe"},
        "inputs": {"dataset": lm_dataset(3)},
    }
    outcome = _run(tmp_path, files, job, PYTHONPATH=path)
    assert outcome.outputs == {
        "evaluation": "repeat-probe",
        "metrics": {"next_is_21": 1.0, "rows": 3.0},
    }
