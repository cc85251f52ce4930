"""Attack specs and suites: strict parsing, round trips, families."""

from __future__ import annotations

import json

import pytest

from weightvault.errors import FormatError
from weightvault.tamper.spec import AttackSpec, AttackSuite, SearchSpec, preset_suite


@pytest.mark.parametrize("name", ["ci", "minilm"])
def test_presets_round_trip_byte_for_byte(name: str) -> None:
    suite = preset_suite(name)
    again = AttackSuite.from_json(suite.to_json())
    assert again == suite
    assert again.to_json() == suite.to_json()
    assert len(suite.seeds) >= 3


def test_new_modes_and_warm_restarts_parse() -> None:
    doc = _suite_doc(mode="reinit-top", schedule="cosine-restarts", restarts=4)
    attack = AttackSuite.from_json(doc).attacks[0]
    assert isinstance(attack, AttackSpec)
    assert (attack.mode, attack.schedule, attack.restarts) == ("reinit-top", "cosine-restarts", 4)
    assert attack.family == "adam/cosine-restarts/reinit-top/harmful"
    with pytest.raises(FormatError, match="restarts: must be >= 1"):
        AttackSuite.from_json(_suite_doc(restarts=0))
    with pytest.raises(FormatError, match="unknown preset suite 'digits'"):
        preset_suite("digits")


def test_family_names_the_axes() -> None:
    spec = AttackSpec(
        "x", 10, optimizer="sgd", schedule="warmup", mode="lora", data="benign-then-harmful"
    )
    assert spec.family == "sgd/warmup/lora/benign-then-harmful"


def _suite_doc(**attack: object) -> bytes:
    base: dict[str, object] = {"name": "a", "examples": 10}
    base.update(attack)
    return json.dumps({"name": "s", "attacks": [base]}).encode()


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ({"optimizer": "rmsprop"}, "suite.attacks[0].optimizer: 'rmsprop' is not one of"),
        ({"examples": True}, "suite.attacks[0].examples: expected an integer"),
        ({"examples": 0}, "suite.attacks[0].examples: must be >= 1"),
        ({"lr": -1}, "suite.attacks[0].lr: must be a finite number > 0"),
        ({"lr": "0.1"}, "suite.attacks[0].lr: expected a number"),
        ({"schedule": "cosine"}, "suite.attacks[0].schedule"),
        ({"mode": "qlora"}, "suite.attacks[0].mode"),
        ({"stepz": 3}, "suite.attacks[0].stepz: unknown field"),
        ({"kind": "jailbreak"}, "suite.attacks[0].kind: 'jailbreak' is not one of"),
        ({"benign_fraction": 0.99}, "benign_fraction: must be between"),
    ],
)
def test_malformed_attacks_name_the_field(attack: dict[str, object], message: str) -> None:
    with pytest.raises(FormatError, match=message.replace("[", r"\[").replace("]", r"\]")):
        AttackSuite.from_json(_suite_doc(**attack))


def test_suite_level_errors() -> None:
    with pytest.raises(FormatError, match="duplicate key"):
        AttackSuite.from_json(b'{"name": "s", "name": "t", "attacks": []}')
    with pytest.raises(FormatError, match="not valid JSON"):
        AttackSuite.from_json(b'{"name": ')
    with pytest.raises(FormatError, match=r"suite\.attacks: missing"):
        AttackSuite.from_json(b'{"name": "s"}')
    with pytest.raises(FormatError, match="duplicate attack name"):
        AttackSuite.from_json(
            b'{"name": "s", "attacks": '
            b'[{"name": "a", "examples": 3}, {"name": "a", "examples": 4}]}'
        )
    with pytest.raises(FormatError, match="seeds must be distinct"):
        AttackSuite.from_json(
            b'{"name": "s", "seeds": [1, 1], "attacks": [{"name": "a", "examples": 3}]}'
        )
    with pytest.raises(FormatError, match="unsupported version"):
        AttackSuite.from_json(
            b'{"version": 2, "name": "s", "attacks": [{"name": "a", "examples": 3}]}'
        )


def test_search_grid_and_validation_split() -> None:
    spec = SearchSpec("s", 40, optimizers=("adam", "sgd"), lrs=(1e-3, 1e-2), modes=("full",))
    cands = spec.candidates()
    assert len(cands) == 4
    assert spec.validation_examples == 10
    assert all(c.examples == 30 for c in cands)
    with pytest.raises(FormatError, match="validation_fraction"):
        SearchSpec("s", 40, validation_fraction=0.9)
