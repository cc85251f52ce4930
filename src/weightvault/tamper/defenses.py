"""Training-time defenses: MLAC-style (second order) and TAR-style (first order).

Both start from the undefended release and train on the *defender* split only; neither sees the
attacker pool or the test split. Each records the attack families it trained against (declared,
and the ones actually sampled), so evaluation can report which families were held out.

MLAC (Henderson, Mitchell et al. 2023, "self-destructing models"), per outer step:

1. a simulated attacker starts from a meta-learned head ``phi0`` and a meta-learned learning rate
   ``exp(log_lr)`` (clamped), and takes K differentiable Adam steps on a harmful batch, updating
   the whole model (trunk and head);
2. after every inner step its logits on a held-out harmful batch pass through the *best linear
   re-mapping* ``L W* + b*`` (fitted on detached logits; by the envelope theorem the gradient at
   the optimum needs no differentiation through the fit), so the model cannot "win" by making the
   attacker confidently predict the opposite label;
3. outer loss = desired CE on the unadapted model - ``harm_weight`` x mean calibrated harmful loss
   (+ ``grad_penalty`` x the attacker's squared gradient norm); the gradient flows back through
   all K inner steps (second order);
4. the attacker's ``phi0`` and ``log_lr`` take a step to *lower* the mean harmful loss.

TAR (Tamirisa et al. 2024), per outer step: sample an adversary (AdamW, lr from a set, constant or
warmup, harmful or benign-then-harmful with the switch at Beta(6, 3) x K), run K real optimizer
steps on a copy; every ``tr_every`` steps take the gradient of the tamper-resistance loss
(negative entropy of the adversary's predictions on held-out harmful data) at the attacked
weights and accumulate it with weight ``exp(tr_decay (i - K + 1))`` (first-order approximation);
restore, add the retain loss (desired CE + L2 distance of the features to the original model's)
and take one AdamW step.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from weightvault.errors import FormatError, UsageError
from weightvault.tamper._determinism import deterministic
from weightvault.tamper._jsonfiles import field_values
from weightvault.tamper.base import Split, TamperData, TamperModel, Testbed
from weightvault.tamper.finetune import make_optimizer, schedule_factor
from weightvault.tamper.grid import GridSplit
from weightvault.tamper.spec import AttackSpec

__all__ = [
    "DefenseRecord",
    "MLACConfig",
    "TARConfig",
    "adversary_settings",
    "calibrated_loss",
    "defend",
    "defense_config",
    "desired_accuracy",
    "train_defense",
]


@dataclass(frozen=True)
class MLACConfig:
    """Hyperparameters of the MLAC-style defense (defaults sized for the digits testbed)."""

    outer_steps: int = 200
    inner_steps: int = 16
    inner_batch_sizes: tuple[int, ...] = (8, 16, 32)
    #: Example counts the simulated attacker trains on (a fresh subset of the defender split per
    #: outer step); empty: the whole defender split.
    inner_budgets: tuple[int, ...] = ()
    outer_lr: float = 1e-3
    meta_lr: float = 1e-2
    init_inner_lr: float = 3e-3
    lr_clamp: tuple[float, float] = (1e-5, 1e-1)
    harm_weight: float = 1.0
    grad_penalty: float = 0.0
    desired_batch: int = 64
    eval_batch: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.outer_steps < 1 or self.inner_steps < 1:
            raise FormatError("mlac: outer_steps and inner_steps must be >= 1")
        if not self.inner_batch_sizes or min(self.inner_batch_sizes) < 1:
            raise FormatError("mlac.inner_batch_sizes: must list sizes >= 1")
        if self.inner_budgets and min(self.inner_budgets) < 2:
            raise FormatError("mlac.inner_budgets: example counts must be >= 2")

    @property
    def families(self) -> list[str]:
        """The simulated attacker: differentiable Adam, constant lr, whole model, harmful data."""
        return ["adam/constant/full/harmful"]


@dataclass(frozen=True)
class TARConfig:
    """Hyperparameters of the TAR-style defense (defaults sized for the digits testbed)."""

    outer_steps: int = 100
    inner_steps: int = 16
    tr_every: int = 4
    tr_scale: float = 4.0
    #: Exponent of the per-step weight ``exp(tr_decay (i - K + 1))``; TAR used 0.0625 at K = 64.
    tr_decay: float = 0.25
    lrs: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
    schedules: tuple[str, ...] = ("constant", "warmup")
    datas: tuple[str, ...] = ("harmful", "benign-then-harmful")
    optimizers: tuple[str, ...] = ("adamw",)
    outer_lr: float = 1e-3
    retain_weight: float = 1.0
    batch_size: int = 32
    #: Batch sizes of the sampled adversaries (empty: ``batch_size``).
    batch_sizes: tuple[int, ...] = ()
    #: Example counts of the sampled adversaries (a fresh defender subset each; empty: all).
    inner_budgets: tuple[int, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.outer_steps < 1 or self.inner_steps < 1 or self.tr_every < 1:
            raise FormatError("tar: outer_steps, inner_steps and tr_every must be >= 1")
        if not (self.lrs and self.schedules and self.datas and self.optimizers):
            raise FormatError("tar: lrs, schedules, datas and optimizers must be non-empty")
        for opt in self.optimizers:
            if opt not in ("adam", "adamw", "sgd", "sgd-momentum"):
                raise FormatError(f"tar.optimizers: {opt!r} is not an attack optimizer")
        if self.inner_budgets and min(self.inner_budgets) < 2:
            raise FormatError("tar.inner_budgets: example counts must be >= 2")

    @property
    def families(self) -> list[str]:
        return sorted(
            f"{o}/{s}/full/{d}" for o in self.optimizers for s in self.schedules for d in self.datas
        )


@dataclass(frozen=True)
class DefenseRecord:
    """What a defense did: method, configuration, and the attack families it trained against."""

    method: str
    config: dict[str, Any]
    #: Families the defense declared it trains against.
    training_families: tuple[str, ...]
    #: Families actually sampled during training (always a subset of ``training_families``).
    sampled_families: tuple[str, ...]
    #: Loss summaries: first and last outer-step values of each tracked loss.
    history: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return field_values(self)

    @classmethod
    def from_dict(cls, obj: Any) -> DefenseRecord:
        if not isinstance(obj, dict):
            raise FormatError("defense: expected an object")
        keys = {"method", "config", "training_families", "sampled_families", "history"}
        if set(obj) != keys:
            diff = sorted(set(obj) ^ keys)
            raise FormatError(f"defense.{diff[0]}: missing or unknown field")
        return cls(
            method=str(obj["method"]),
            config=dict(obj["config"]),
            training_families=_families(obj, "training_families"),
            sampled_families=_families(obj, "sampled_families"),
            history={k: list(v) for k, v in obj["history"].items()},
        )


def _families(record: dict[str, Any], key: str) -> tuple[str, ...]:
    """``record[key]``, a list of attack family names, as a tuple."""
    value = record[key]
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise FormatError(f"defense.{key}: expected a list of strings")
    return tuple(value)


def calibrated_loss(
    logits: torch.Tensor, labels: torch.Tensor, iterations: int = 25
) -> torch.Tensor:
    """Cross-entropy after the best affine re-mapping of ``logits`` (fitted on detached logits).

    Without it, a defense can "win" by making the attacker confidently wrong (flipped labels);
    the re-mapped loss is at most the label entropy, because a constant prediction is one of the
    maps considered.
    """
    classes = logits.shape[1]
    detached = logits.detach()
    weight = torch.eye(classes, dtype=logits.dtype, device=logits.device).requires_grad_(True)
    bias = torch.zeros(classes, dtype=logits.dtype, device=logits.device).requires_grad_(True)
    opt = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(detached @ weight + bias, labels)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    with torch.enable_grad():
        opt.step(closure)  # type: ignore[no-untyped-call]
    return nn.functional.cross_entropy(logits @ weight.detach() + bias.detach(), labels)


def _rows(split: Split, count: int, generator: torch.Generator) -> torch.Tensor:
    index = torch.randint(0, len(split), (min(count, len(split)),), generator=generator)
    return index.to(split.x.device)


def _subset(split: Split, budgets: tuple[int, ...], generator: torch.Generator) -> Split:
    """A fresh random subset of ``split`` with one of ``budgets`` examples (all if empty)."""
    if not budgets:
        return split
    pick = budgets[int(torch.randint(0, len(budgets), (1,), generator=generator))]
    order = torch.randperm(len(split), generator=generator)[: min(pick, len(split))]
    return split.take(order.to(split.x.device))


def _accuracy(model: TamperModel, split: Split) -> float:
    with torch.no_grad():
        return float((model(split.x).argmax(1) == split.desired).float().mean())


def train_defense(
    release: TamperModel,
    data: TamperData,
    config: MLACConfig | TARConfig,
    *,
    threads: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[TamperModel, DefenseRecord]:
    """Train the defense ``config`` describes (MLAC or TAR, see the module docstring) from
    ``release``, on the defender split only; returns the model (on the CPU) and its record.

    Both methods train a copy of ``release`` on ``device`` under :func:`deterministic`, draw from
    their own seeded generator and are recorded the same way.
    """
    method = "mlac" if isinstance(config, MLACConfig) else "tar"
    with deterministic(config.seed, threads):
        model = copy.deepcopy(release).to(device)
        data = data.to(device)
        generator = torch.Generator().manual_seed(config.seed + _SEED_OFFSETS[method])
        run = _Run(model, data, generator, device)
        if isinstance(config, MLACConfig):
            history, sampled = _train_mlac(run, config), tuple(config.families)
        else:
            history, sampled = _train_tar(run, config, release)
        model.zero_grad(set_to_none=True)
        desired_acc = _accuracy(model, data.defender)
    record = DefenseRecord(
        method=method,
        config=_config_dict(config),
        training_families=tuple(config.families),
        sampled_families=sampled,
        history=_summarize(history) | {"desired_acc_defender": [desired_acc]},
    )
    return model.to("cpu"), record


#: Added to the configuration's seed for each method's generator.
_SEED_OFFSETS = {"mlac": 101, "tar": 202}


@dataclass(frozen=True)
class _Run:
    """What :func:`train_defense` hands a method: the model being trained (a copy of the
    release) and the data, both on ``device``, and the method's seeded generator."""

    model: TamperModel
    data: TamperData
    generator: torch.Generator
    device: str | torch.device


def _train_mlac(run: _Run, config: MLACConfig) -> dict[str, list[float]]:
    """The MLAC outer loop on ``run.model``; returns the loss history."""
    model, data, generator, device = run.model, run.data, run.generator, run.device
    defender = data.defender
    names = [n for n, _ in model.trunk.named_parameters()]
    buffers = dict(model.trunk.named_buffers())
    head0 = nn.Linear(model.feature_dim, data.num_harmful).to(device)
    log_lr = torch.tensor(math.log(config.init_inner_lr), device=device, requires_grad=True)
    outer = make_optimizer("adam", list(model.parameters()), config.outer_lr)
    meta = torch.optim.Adam([*head0.parameters(), log_lr], lr=config.meta_lr)
    low, high = math.log(config.lr_clamp[0]), math.log(config.lr_clamp[1])
    history: dict[str, list[float]] = {"desired": [], "harmful_calibrated": [], "inner_lr": []}
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    n_trunk = len(names)

    def harmful_logits(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        trunk_params = dict(zip(names, params[:n_trunk], strict=True)) | buffers
        feats: torch.Tensor = functional_call(model.trunk, trunk_params, (x,))
        return feats @ params[n_trunk].T + params[n_trunk + 1]

    for _ in range(config.outer_steps):
        d_idx = _rows(defender, config.desired_batch, generator)
        desired_loss = nn.functional.cross_entropy(
            model(defender.x[d_idx]), defender.desired[d_idx]
        )
        pick = int(torch.randint(0, len(config.inner_batch_sizes), (1,), generator=generator))
        batch = config.inner_batch_sizes[pick]
        pool = _subset(defender, config.inner_budgets, generator)
        e_idx = _rows(defender, config.eval_batch, generator)
        x_eval, y_eval = defender.x[e_idx], defender.harmful[e_idx]
        lr = torch.exp(log_lr.clamp(low, high))
        # The simulated attacker's state: trunk params, head weight and bias (all in the graph).
        state: list[torch.Tensor] = [p for p in model.trunk.parameters()]
        state += [head0.weight, head0.bias]
        m1 = [torch.zeros_like(p) for p in state]
        m2 = [torch.zeros_like(p) for p in state]
        adv_losses: list[torch.Tensor] = []
        penalty = torch.zeros((), device=device)
        for k in range(config.inner_steps):
            i_idx = _rows(pool, batch, generator)
            loss_k = nn.functional.cross_entropy(
                harmful_logits(state, pool.x[i_idx]), pool.harmful[i_idx]
            )
            grads = torch.autograd.grad(loss_k, state, create_graph=True)
            if config.grad_penalty:
                penalty = penalty + sum((g * g).sum() for g in grads) / config.inner_steps
            t = k + 1
            new_state = []
            for j, (p, g) in enumerate(zip(state, grads, strict=True)):
                m1[j] = beta1 * m1[j] + (1 - beta1) * g
                m2[j] = beta2 * m2[j] + (1 - beta2) * g * g
                m_hat = m1[j] / (1 - beta1**t)
                v_hat = m2[j] / (1 - beta2**t)
                new_state.append(p - lr * m_hat / (torch.sqrt(v_hat + 1e-16) + eps))
            state = new_state
            adv_losses.append(calibrated_loss(harmful_logits(state, x_eval), y_eval))
        mean_adv = torch.stack(adv_losses).mean()
        outer_loss = desired_loss - config.harm_weight * mean_adv + config.grad_penalty * penalty
        params = list(model.parameters())
        outer_grads = torch.autograd.grad(outer_loss, params, retain_graph=True, allow_unused=True)
        meta_params = [head0.weight, head0.bias, log_lr]
        meta_grads = torch.autograd.grad(mean_adv, meta_params, allow_unused=True)
        for p, g in zip(params, outer_grads, strict=True):
            p.grad = None if g is None else g.detach()
        for p, g in zip(meta_params, meta_grads, strict=True):
            p.grad = None if g is None else g.detach()
        outer.step()
        meta.step()
        history["desired"].append(float(desired_loss.detach()))
        history["harmful_calibrated"].append(float(mean_adv.detach()))
        history["inner_lr"].append(float(lr.detach()))
    return history


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1).mean()


def _pick(values: tuple[Any, ...], generator: torch.Generator) -> Any:
    return values[int(torch.randint(0, len(values), (1,), generator=generator))]


def _train_tar(
    run: _Run, config: TARConfig, release: TamperModel
) -> tuple[dict[str, list[float]], tuple[str, ...]]:
    """The TAR outer loop on ``run.model`` (its retain loss compares features with
    ``release``'s); returns the loss history and the families sampled."""
    model, data, generator, device = run.model, run.data, run.generator, run.device
    original = copy.deepcopy(release).to(device)
    defender = data.defender
    outer = make_optimizer("adamw", list(model.parameters()), config.outer_lr)
    sampled: set[str] = set()
    history: dict[str, list[float]] = {"retain": [], "tamper_resistance": []}
    k_total = config.inner_steps
    batch_sizes = config.batch_sizes or (config.batch_size,)
    for _ in range(config.outer_steps):
        lr = _pick(config.lrs, generator)
        sched = _pick(config.schedules, generator)
        data_kind = _pick(config.datas, generator)
        optimizer = _pick(config.optimizers, generator)
        batch = _pick(batch_sizes, generator)
        pool = _subset(defender, config.inner_budgets, generator)
        family = f"{optimizer}/{sched}/full/{data_kind}"
        if family not in config.families:
            raise AssertionError(f"sampled family {family} outside the declared set")
        sampled.add(family)
        switch = 0
        if data_kind == "benign-then-harmful":
            switch = min(k_total - 1, int(_beta_sample(generator) * k_total))
        spec = AttackSpec(
            name="tar-adversary",
            examples=1,
            optimizer=optimizer,
            lr=lr,
            schedule=sched,
            steps=k_total,
        )
        adv_trunk = copy.deepcopy(model.trunk)
        adv_desired = copy.deepcopy(model.desired_head)
        adv_head = nn.Linear(model.feature_dim, data.num_harmful).to(device)
        opt = make_optimizer(
            optimizer,
            [*adv_trunk.parameters(), *adv_desired.parameters(), *adv_head.parameters()],
            lr,
        )
        tr_grads = [torch.zeros_like(p) for p in model.trunk.parameters()]
        tr_values: list[float] = []
        for i in range(k_total):
            for group in opt.param_groups:
                group["lr"] = lr * schedule_factor(spec, i)
            opt.zero_grad(set_to_none=True)
            if i < switch:
                idx = _rows(defender, batch, generator)
                feats = adv_trunk(defender.x[idx])
                loss = nn.functional.cross_entropy(adv_desired(feats), defender.desired[idx])
            else:
                idx = _rows(pool, batch, generator)
                feats = adv_trunk(pool.x[idx])
                loss = nn.functional.cross_entropy(adv_head(feats), pool.harmful[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            if (i + 1) % config.tr_every == 0 or i == k_total - 1:
                h_idx = _rows(defender, config.batch_size, generator)
                tr_loss = -_entropy(adv_head(adv_trunk(defender.x[h_idx])))
                grads = torch.autograd.grad(tr_loss, list(adv_trunk.parameters()))
                weight = config.tr_scale * math.exp(config.tr_decay * (i - k_total + 1))
                for acc, g in zip(tr_grads, grads, strict=True):
                    acc.add_(weight * g)
                tr_values.append(float(tr_loss.detach()))
        r_idx = _rows(defender, config.batch_size * 2, generator)
        x_r = defender.x[r_idx]
        feats = model.trunk(x_r)
        with torch.no_grad():
            ref = original.trunk(x_r)
        retain = nn.functional.cross_entropy(model.desired_head(feats), defender.desired[r_idx])
        retain = retain + config.retain_weight * ((feats - ref) ** 2).sum(dim=1).mean()
        outer.zero_grad(set_to_none=True)
        retain.backward()
        for p, g in zip(model.trunk.parameters(), tr_grads, strict=True):
            p.grad = g if p.grad is None else p.grad + g
        outer.step()
        history["retain"].append(float(retain.detach()))
        history["tamper_resistance"].append(sum(tr_values) / max(1, len(tr_values)))
    return history, tuple(sorted(sampled))


def _beta_sample(generator: torch.Generator) -> float:
    """Beta(6, 3) from the seeded generator (ratio of gamma sums via exponentials)."""
    u = torch.rand(9, generator=generator).clamp_min(1e-12)
    e = -torch.log(u)
    return float(e[:6].sum() / e.sum())


def _summarize(history: dict[str, list[float]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for key, values in history.items():
        if values:
            window = max(1, len(values) // 10)
            out[key] = [sum(values[:window]) / window, sum(values[-window:]) / window]
    return out


def _config_dict(config: MLACConfig | TARConfig) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(json.dumps(asdict(config)))
    return result


#: Configuration fields that describe the simulated adversaries: they come from the grid's
#: train-time split, never from a defaults file (which could otherwise smuggle in held-out
#: settings).
ADVERSARY_FIELDS: dict[str, frozenset[str]] = {
    "mlac": frozenset({"inner_batch_sizes", "inner_budgets", "lr_clamp", "init_inner_lr"}),
    "tar": frozenset({"lrs", "schedules", "datas", "optimizers", "batch_sizes", "inner_budgets"}),
}


def adversary_settings(method: str, split: GridSplit, defender_size: int) -> dict[str, Any]:
    """The simulated adversaries of ``method``, drawn from the train-time side of ``split``."""
    budgets = tuple(b for b in split.train_budgets if b <= defender_size) or (defender_size,)
    if method == "mlac":
        low, high = split.lr_range
        return {
            "inner_batch_sizes": split.train_batches,
            "inner_budgets": budgets,
            "lr_clamp": (low, high),
            "init_inner_lr": math.sqrt(low * high),
        }
    grid = split.grid
    optimizers = tuple(o for o in grid.train_optimizers if o in ("adam", "adamw")) or ("adamw",)
    return {
        "lrs": split.train_lrs,
        "schedules": grid.train_schedules,
        "datas": grid.train_datas,
        "optimizers": optimizers,
        "batch_sizes": split.train_batches,
        "inner_budgets": budgets,
    }


def defense_config(
    method: str,
    overrides: dict[str, Any] | None = None,
    *,
    split: GridSplit | None = None,
    defender_size: int = 0,
    seed: int = 0,
    steps: int | None = None,
    inner_steps: int | None = None,
) -> MLACConfig | TARConfig:
    """The configuration a defense trains with: class defaults, then ``overrides`` (the defaults
    file's hyperparameters), then the simulated adversaries from ``split``, then ``steps``,
    ``inner_steps`` and ``seed``."""
    if method not in ("mlac", "tar"):
        raise UsageError(f"defense method {method!r}: use mlac or tar")
    values: dict[str, Any] = dict(overrides or {})
    smuggled = sorted(set(values) & ADVERSARY_FIELDS[method])
    if smuggled and split is not None:
        raise FormatError(
            f"{method}.{smuggled[0]}: adversary settings come from the grid's train-time split, "
            "not from defaults"
        )
    if split is not None:
        values.update(adversary_settings(method, split, defender_size))
    if steps is not None:
        values["outer_steps"] = steps
    if inner_steps is not None:
        values["inner_steps"] = inner_steps
    values["seed"] = seed
    config_type = MLACConfig if method == "mlac" else TARConfig
    known = set(config_type.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise FormatError(f"{method}.{unknown[0]}: unknown defense setting")
    return config_type(**_tuples(values))


def defend(
    testbed: Testbed,
    method: str,
    *,
    overrides: dict[str, Any] | None = None,
    split: GridSplit | None = None,
    steps: int | None = None,
    inner_steps: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[TamperModel, DefenseRecord | None, float]:
    """Train ``method`` (``mlac``, ``tar`` or ``none``) from the testbed's release.

    Hyperparameters: ``overrides`` (normally a defaults file, see
    :mod:`weightvault.tamper.defaults`), the simulated adversaries from ``split`` (the grid's
    train-time side), then ``steps``, ``inner_steps`` and ``seed`` (:func:`defense_config`).
    Returns the model, its record (``None`` for ``none``) and its desired-task test accuracy.
    """
    if method not in ("mlac", "tar", "none"):
        raise UsageError(f"defense method {method!r}: use mlac, tar or none")
    release = testbed.release(0)
    data = testbed.data()
    record: DefenseRecord | None
    if method == "none":
        model, record = release, None
    else:
        config = defense_config(
            method,
            overrides,
            split=split,
            defender_size=len(data.defender),
            seed=seed,
            steps=steps,
            inner_steps=inner_steps,
        )
        model, record = train_defense(release, data, config, threads=threads, device=device)
    model.eval()
    return model, record, desired_accuracy(model, data)


def desired_accuracy(model: TamperModel, data: TamperData) -> float:
    """Desired-task accuracy on the test split."""
    with torch.no_grad():
        return float((model(data.test.x).argmax(1) == data.test.desired).float().mean())


def _tuples(values: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
