"""Fixtures for the attestation tests: a small signed-to-be model, key pairs, a test PKI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.keyfiles import write_ec_key_pair
from tests.signing._pki import Pki, build_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return build_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_ec_key_pair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_ec_key_pair(tmp_path_factory.mktemp("other-keys"), "other")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "tiny-model"
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"hidden": 16, "layers": 2}))
    (root / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (root / "sub").mkdir()
    (root / "sub" / "adapter.bin").write_bytes(b"adapter" * 100)
    return root


def eval_predicate(**overrides: Any) -> dict[str, Any]:
    """Evaluation results that pass their own threshold and expire in 2030."""
    predicate: dict[str, Any] = {
        "suite": "held-out-v3",
        "metrics": {"accuracy": 0.91, "refusal_rate": 0.02},
        "thresholds": {"accuracy": {"min": 0.9}, "refusal_rate": {"max": 0.05}},
        "evaluator": "evals@example.com",
        "evaluatedOn": "2026-12-06T06:00:00Z",
        "expires": "2030-01-01T00:00:00Z",
    }
    predicate.update(overrides)
    return predicate


def provenance_predicate() -> dict[str, Any]:
    return {
        "buildDefinition": {
            "buildType": "https://weightvault.dev/training/v1",
            "externalParameters": {"epochs": 3, "learning_rate": 0.001},
        },
        "runDetails": {"builder": {"id": "https://ci.example.com/trainer"}},
    }
