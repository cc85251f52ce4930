"""Tracing names the right recipient after each removal attempt, with a tiny corrected p-value,
and names nobody for unmarked copies, other recipients' copies, other keys and other models."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from tests.fingerprint.models import HEADS, KEY, OTHER_KEY, state_of, tiny_bert

from weightvault.fingerprint import MarkOptions, StateReader, attacks, trace_copy
from weightvault.fingerprint.issue import mark_state
from weightvault.fingerprint.structure import plan_marks
from weightvault.fingerprint.trace import match_names, trace_state

CANDIDATES = ["alice", "bob", *(f"recipient-{i:03d}" for i in range(48))]
OPTIONS = MarkOptions(heads=HEADS)


@pytest.fixture(scope="module")
def original() -> dict[str, torch.Tensor]:
    return state_of(tiny_bert())


@pytest.fixture(scope="module")
def plan(original: dict[str, torch.Tensor]):  # type: ignore[no-untyped-def]
    return plan_marks(StateReader(original).infos, heads=HEADS)


@pytest.fixture(scope="module")
def alice(original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return mark_state(original, KEY, "alice", OPTIONS)


@pytest.fixture(scope="module")
def bob(original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return mark_state(original, KEY, "bob", OPTIONS)


def _fine_tune(state: dict[str, torch.Tensor], steps: int = 5) -> dict[str, torch.Tensor]:
    """A few Adam steps on another task (map token ids to a random target of the hidden state)."""
    model = tiny_bert()
    model.load_state_dict(state)
    model.train()
    generator = torch.Generator().manual_seed(5)
    target = torch.randn(64, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    for _ in range(steps):
        ids = torch.randint(0, 300, (8, 20), generator=generator)
        loss = ((model(input_ids=ids).last_hidden_state.mean(1) - target) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return state_of(model)


def _transforms(plan):  # type: ignore[no-untyped-def]
    return {
        "as issued": lambda s: s,
        "noise 1% of std": lambda s: attacks.gaussian_noise(s, 0.01),
        "int8": lambda s: attacks.quantize(s, 8),
        "4-bit per row": lambda s: attacks.quantize(s, 4, per_row=True),
        "50% magnitude pruning": lambda s: attacks.magnitude_prune(s, 0.5),
        "re-permuted": lambda s: attacks.repermute(s, plan, seed=3),
        "canonicalized": lambda s: attacks.canonicalize(s, plan),
        "half the tensors": lambda s: attacks.subset(s, 0.5),
        "fine-tuned": _fine_tune,
        "fp16": lambda s: {k: v.half() for k, v in s.items()},
    }


@pytest.mark.parametrize(
    "transform",
    ["as issued", "noise 1% of std", "int8", "4-bit per row", "50% magnitude pruning",
     "re-permuted", "canonicalized", "half the tensors", "fine-tuned", "fp16"],
)  # fmt: skip
def test_the_right_recipient_is_named_and_no_one_else(
    transform: str,
    original,
    alice,
    plan,  # type: ignore[no-untyped-def]
) -> None:
    change = _transforms(plan)[transform]
    result = trace_state(change(alice), original, KEY, CANDIDATES)
    assert result.recipient == "alice"
    assert [a.recipient for a in result.attributed] == ["alice"]
    assert result.attributed[0].log10_p_corrected < -6
    # the same transform of the unmarked original names nobody
    clean = trace_state(change(original), original, KEY, CANDIDATES)
    assert clean.recipient is None, clean.ranking[0]


def test_collusion_by_averaging_names_both(original, alice, bob, plan) -> None:  # type: ignore[no-untyped-def]
    averaged = attacks.average_copies(alice, bob, plan)
    result = trace_state(averaged, original, KEY, CANDIDATES)
    assert {a.recipient for a in result.attributed} == {"alice", "bob"}


def test_other_recipients_and_other_keys_are_not_attributed(original, alice) -> None:  # type: ignore[no-untyped-def]
    others = [c for c in CANDIDATES if c != "alice"]
    assert trace_state(alice, original, KEY, others).recipient is None
    assert trace_state(alice, original, OTHER_KEY, CANDIDATES).recipient is None
    foreign = mark_state(original, OTHER_KEY, "alice", OPTIONS)  # same id, another custody key
    assert trace_state(foreign, original, KEY, CANDIDATES).recipient is None


def test_an_unrelated_model_names_nobody(original) -> None:  # type: ignore[no-untyped-def]
    unrelated = state_of(tiny_bert(seed=1))
    assert trace_state(unrelated, original, KEY, CANDIDATES).recipient is None


def test_innocent_scores_follow_the_stated_null(original, alice) -> None:  # type: ignore[no-untyped-def]
    """z of candidates who did not leak is standard (mean 0, sd 1) and below the Hoeffding
    threshold, on a noisy unmarked copy and on another recipient's copy."""
    innocents = [f"innocent-{i}" for i in range(300)]
    for suspect in (attacks.gaussian_noise(original, 0.05, seed=9), alice):
        result = trace_state(suspect, original, KEY, innocents, top=300)
        z = np.array([a.z for a in result.ranking])
        assert abs(z.mean()) < 0.25 and 0.8 < z.std() < 1.2, (z.mean(), z.std())
        assert result.recipient is None
        # the p-value is the bound exp(-z^2/2), corrected by the number of candidates
        top = result.ranking[0]
        expected = max(-(top.z**2) / 2 * math.log10(math.e) + math.log10(300), -1e9)
        assert math.isclose(top.log10_p_corrected, min(0.0, expected), abs_tol=1e-9)


def test_files_in_another_format_with_other_names(tmp_path: Path, original, alice) -> None:  # type: ignore[no-untyped-def]
    """A torch state dict whose names carry a prefix, holding only some layers."""
    save_file(original, tmp_path / "original.safetensors")
    leaked = {f"model.bert.{k}": v for k, v in alice.items() if ".layer.1." in k}
    torch.save(leaked, tmp_path / "leak.pt")
    result = trace_copy(tmp_path / "leak.pt", tmp_path / "original.safetensors", KEY, CANDIDATES)
    assert result.recipient == "alice"
    assert result.tensors_missing == 8 and result.tensors_compared == 6


def test_names_are_matched_under_one_prefix_rewrite() -> None:
    original = ["bert.encoder.layer.0.w", "bert.encoder.layer.1.w", "head.weight"]
    assert match_names(original, ["encoder.layer.1.w", "weight"]) == {
        "bert.encoder.layer.1.w": "encoder.layer.1.w"
    }
    assert match_names(original, ["m.bert.encoder.layer.0.w", "m.head.weight"]) == {
        "bert.encoder.layer.0.w": "m.bert.encoder.layer.0.w",
        "head.weight": "m.head.weight",
    }
    # a layer missing from the suspect is never paired with another layer of the same shape
    assert match_names(original, ["encoder.layer.1.w"]) == {
        "bert.encoder.layer.1.w": "encoder.layer.1.w"
    }
    assert match_names(original, ["unrelated"]) == {}


def test_table_and_matrix_scoring_agree(original, alice, bob) -> None:  # type: ignore[no-untyped-def]
    """One suspect is scored through nibble tables, several through a matrix product: the
    same numbers (including a tensor longer than one table window and not a multiple of 8)."""
    from weightvault.fingerprint import trace as trace_module
    from weightvault.fingerprint.keys import keystream
    from weightvault.fingerprint.trace import residual, z_scores

    plan = plan_marks(StateReader(original).infos)
    vectors = [residual(StateReader(original), StateReader(s), plan).vectors for s in (alice, bob)]
    vectors[0]["odd"] = np.random.default_rng(1).standard_normal(1003).astype(np.float32)
    candidates = ["alice", "bob", "carol"]
    previous = trace_module._WINDOW
    trace_module._WINDOW = 256  # many windows (a multiple of 128: whole AES blocks)
    try:
        single = z_scores(KEY, candidates, vectors[:1])
    finally:
        trace_module._WINDOW = previous
    batched = z_scores(KEY, candidates, [vectors[0], vectors[1], vectors[1]])
    assert np.allclose(single[0], batched[0], rtol=1e-5, atol=1e-3)
    assert keystream(b"k" * 32, 48)[32:].tobytes() == keystream(b"k" * 32, 16, offset=32).tobytes()


def test_screened_scores_are_trace_scores_bit_for_bit(original, plan, alice, bob) -> None:  # type: ignore[no-untyped-def]
    """Many suspects at once (matrix products, then the single path from a threshold up):
    every score at or above the threshold is what ``trace`` computes for that suspect alone,
    to the bit; the rest differ by float rounding only; ``skip`` leaves entries as screened."""
    from weightvault.fingerprint.trace import score_recipients, screen_scores

    suspects = [
        attacks.gaussian_noise(alice, 0.01, seed=3),
        bob,
        original,
        attacks.quantize(attacks.repermute(bob, plan, seed=2), 8),
    ]
    traced = plan_marks(StateReader(original).infos)  # the plan trace_state makes
    residuals = [residual_of(original, s, traced) for s in suspects]
    single = np.array(
        [[a.z for a in sorted(score_recipients(KEY, CANDIDATES, r), key=_order)] for r in residuals]
    )
    everything = screen_scores(KEY, CANDIDATES, residuals, exact_above=-math.inf)
    assert everything.exact.all() and np.array_equal(everything.z, single)
    screen = screen_scores(KEY, CANDIDATES, residuals, exact_above=1.0)
    assert screen.exact[0, 0] and screen.exact[1, 1]  # alice's and bob's own keys
    assert np.array_equal(screen.z[screen.exact], single[screen.exact])
    assert (single[~screen.exact] < 1.0).all()
    assert np.allclose(screen.z, single, rtol=0, atol=1e-4) and 0 < screen.largest_gap < 1e-4
    assert screen.recomputed == int(screen.exact.sum())
    # the trace of one suspect names the same recipients with the same numbers
    result = trace_state(suspects[1], original, KEY, CANDIDATES)
    assert [a.recipient for a in result.attributed] == ["bob"]
    assert result.attributed[0].z == screen.z[1, 1]
    skip = np.zeros_like(screen.exact)
    skip[0, 0] = True
    skipped = screen_scores(KEY, CANDIDATES, residuals, exact_above=1.0, skip=skip)
    assert not skipped.exact[0, 0] and skipped.exact[1, 1]


def _order(attribution):  # type: ignore[no-untyped-def]
    return CANDIDATES.index(attribution.recipient)


def residual_of(original, suspect, plan):  # type: ignore[no-untyped-def]
    from weightvault.fingerprint.trace import residual

    return residual(StateReader(original), StateReader(suspect), plan).vectors
