"""Running one attack against one model: fine-tuning, linear probes, hyperparameter search.

A fine-tuning attacker draws ``examples`` labelled harmful examples from the attacker pool and
fine-tunes a copy of the model on them (:mod:`weightvault.tamper.finetune`: the modes, the
curves, the divergence retries); a probe fits a logistic regression on the frozen trunk's
features; a search adversary fine-tunes every configuration of its grid and keeps the one its own
validation split prefers. Each returns an :class:`~weightvault.tamper.runs.AttackRun`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from weightvault.errors import FormatError
from weightvault.tamper._determinism import deterministic
from weightvault.tamper.base import Split, TamperData, TamperModel
from weightvault.tamper.finetune import AttackerSample, Trained, finetune
from weightvault.tamper.runs import AttackRun, Attempt, Status, encode_hits
from weightvault.tamper.spec import AnySpec, AttackSpec, ProbeSpec, SearchSpec

__all__ = ["FrozenFeatures", "run_attack"]


def _sample(pool: Split, count: int, generator: torch.Generator) -> tuple[Split, torch.Tensor]:
    if count > len(pool):
        raise FormatError(
            f"attack asks for {count} examples but the attacker pool has only {len(pool)}"
        )
    order = torch.randperm(len(pool), generator=generator)
    return pool.take(order[:count].to(pool.x.device)), order


def _benign_set(pool: Split, order: torch.Tensor, count: int) -> Split:
    # Benign data: desired-task labels on examples the attacker did not use as harmful examples.
    rest = order[count:] if len(order) > count else order
    return pool.take(rest[: max(count, 64)].to(pool.x.device))


@dataclass(frozen=True)
class FrozenFeatures:
    """The unmodified model's trunk features on the attacker pool and the test split, computed
    once per model and shared by its probes, head-only attacks and step-0 measurements (each
    ``[examples, feature_dim]``, in split order)."""

    attacker: torch.Tensor
    test: torch.Tensor

    @classmethod
    def of(cls, model: TamperModel, data: TamperData, threads: int | None = None) -> FrozenFeatures:
        device = data.test.x.device
        trunk = model.trunk if _on(model, device) else copy.deepcopy(model.trunk).to(device)
        previous = torch.get_num_threads()
        torch.set_num_threads(threads or previous)
        try:
            with torch.no_grad():
                return cls(_chunked(trunk, data.attacker.x), _chunked(trunk, data.test.x))
        finally:
            torch.set_num_threads(previous)


def _on(model: nn.Module, device: torch.device) -> bool:
    return all(p.device == device for p in model.parameters())


def _chunked(trunk: nn.Module, x: torch.Tensor, size: int = 512) -> torch.Tensor:
    return torch.cat([trunk(x[i : i + size]) for i in range(0, len(x), size)])


def run_attack(
    model: TamperModel,
    model_name: str,
    spec: AnySpec,
    data: TamperData,
    seed: int,
    *,
    points: int = 8,
    threads: int | None = None,
    frozen: FrozenFeatures | None = None,
) -> AttackRun:
    """Run ``spec`` once (attack seed ``seed``) against ``model``; deterministic for a seed.

    The attack runs on the device ``data`` lives on (see :meth:`TamperData.to`). ``frozen``:
    the model's features from :meth:`FrozenFeatures.of` (saves recomputing them per attack).
    """
    with deterministic(seed, threads):
        generator = torch.Generator().manual_seed(10_007 * seed + 17)
        if isinstance(spec, ProbeSpec):
            return _probe(model, model_name, spec, data, seed, generator, frozen)
        if isinstance(spec, SearchSpec):
            return _search(model, model_name, spec, data, seed, generator, points)
        train, order = _sample(data.attacker, spec.examples, generator)
        benign = _benign_set(data.attacker, order, spec.examples)
        cached = None
        if frozen is not None:
            rows = order[: spec.examples].to(frozen.attacker.device)
            cached = (frozen.attacker[rows], frozen.test)
        sample = AttackerSample(train, benign, cached=cached)
        outcome = finetune(model, replace(spec, seed=seed), sample, data, points)
        return _finetuned_run(model_name, spec, seed, spec.steps, outcome)


def _finetuned_run(
    model_name: str,
    spec: AttackSpec | SearchSpec,
    seed: int,
    steps: int,
    outcome: tuple[Trained, list[Attempt], Status],
    selected: str | None = None,
) -> AttackRun:
    """The record of a fine-tuning or search attack: its best attempt's curve, every attempt."""
    trained, attempts, status = outcome
    return AttackRun(
        model=model_name,
        attack=spec.name,
        kind=spec.kind,
        family=spec.family,
        examples=spec.examples,
        steps=steps,
        seed=seed,
        status=status,
        curve=tuple(trained.curve),
        retain_acc=trained.retain_acc,
        attempts=tuple(attempts),
        selected=selected,
        hits=tuple(trained.hits),
    )


def _probe(
    model: TamperModel,
    model_name: str,
    spec: ProbeSpec,
    data: TamperData,
    seed: int,
    generator: torch.Generator,
    frozen: FrozenFeatures | None = None,
) -> AttackRun:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train, order = _sample(data.attacker, spec.examples, generator)
    if frozen is None:
        frozen = FrozenFeatures.of(model, data)
    rows = order[: spec.examples].to(frozen.attacker.device)
    f_train = frozen.attacker[rows].double().cpu().numpy()
    f_test = frozen.test.double().cpu().numpy()
    labels = train.harmful.cpu().numpy()
    truth = data.test.harmful.cpu().numpy()
    if len(np.unique(labels)) < 2:
        predicted = np.full_like(truth, labels[0])
    else:
        scaler = StandardScaler().fit(f_train)
        clf = LogisticRegression(C=spec.c, max_iter=2000, random_state=seed)
        clf.fit(scaler.transform(f_train), labels)
        predicted = clf.predict(scaler.transform(f_test))
    correct = torch.from_numpy(predicted == truth)
    return AttackRun(
        model=model_name,
        attack=spec.name,
        kind="probe",
        family=spec.family,
        examples=spec.examples,
        steps=0,
        seed=seed,
        status="ok",
        curve=((0, float(correct.float().mean())),),
        retain_acc=None,
        attempts=(),
        hits=(encode_hits(correct),),
    )


def _search(
    model: TamperModel,
    model_name: str,
    spec: SearchSpec,
    data: TamperData,
    seed: int,
    generator: torch.Generator,
    points: int,
) -> AttackRun:
    drawn, order = _sample(data.attacker, spec.examples, generator)
    n_val = spec.validation_examples
    device = data.attacker.x.device
    validation = drawn.take(torch.arange(n_val, device=device))
    train = drawn.take(torch.arange(n_val, len(drawn), device=device))
    sample = AttackerSample(train, _benign_set(data.attacker, order, spec.examples), validation)
    best: tuple[float, AttackSpec, tuple[Trained, list[Attempt], Status]] | None = None
    for candidate in spec.candidates():
        cand = replace(candidate, seed=seed)
        outcome = finetune(model, cand, sample, data, points)
        trained, _, status = outcome
        val = trained.val_acc if status != "diverged" and trained.val_acc is not None else -1.0
        # Selection uses only the attacker's validation split; ties keep the earlier candidate.
        if best is None or val > best[0]:
            best = (val, cand, outcome)
    assert best is not None
    _, chosen, outcome = best
    selected = f"{chosen.optimizer}, lr {chosen.lr:g}, {chosen.steps} steps, {chosen.mode}"
    return _finetuned_run(model_name, spec, seed, chosen.steps, outcome, selected)
