"""The adapter interface: a trunk, two heads, and data split between defender, attacker and test.

This module holds the types every testbed and the lab share, and model I/O; it knows no testbed.
:mod:`weightvault.tamper.testbed` sits above it and the built-in testbeds, and builds them by name.

Bring your own model by implementing :class:`Testbed` (see ``docs/tamper.md``):

* ``make_trunk(seed)`` returns a freshly initialised trunk ``x -> features [batch, feature_dim]``
  (this is also the *random init* reference model);
* ``release(seed)`` returns the undefended release: the trunk you ship plus its desired-task head;
* ``data()`` returns a :class:`TamperData` with three disjoint splits: ``defender`` (what the
  defense may train on), ``attacker`` (the pool attackers draw their examples from) and ``test``
  (only for measuring);
* ``extra_references()`` returns any further reference models (e.g. the public base model your
  release was fine-tuned from: if an attacker can start from it, protecting the derivative means
  little).

Models are saved as safetensors: tensors ``trunk.*`` and ``desired_head.*``, and the string
metadata ``weightvault.tamper`` (a JSON document naming the testbed and the defense record).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from weightvault._fs import atomic_output
from weightvault.errors import FormatError, InputError

__all__ = [
    "METADATA_KEY",
    "Split",
    "TamperData",
    "TamperModel",
    "Testbed",
    "load_model",
    "random_init_model",
    "read_metadata",
    "save_model",
]

METADATA_KEY = "weightvault.tamper"


@dataclass(frozen=True)
class Split:
    """Inputs and both label sets for one split (labels are int64 class indices)."""

    x: torch.Tensor
    desired: torch.Tensor
    harmful: torch.Tensor

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        if self.desired.shape != (n,) or self.harmful.shape != (n,):
            raise ValueError("Split: x, desired and harmful must have the same length")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def take(self, index: torch.Tensor) -> Split:
        return Split(self.x[index], self.desired[index], self.harmful[index])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.desired.to(device), self.harmful.to(device))


@dataclass(frozen=True)
class TamperData:
    """Disjoint splits: the defender trains on one, attackers draw from another, both are scored
    on the third."""

    defender: Split
    attacker: Split
    test: Split
    num_desired: int
    num_harmful: int

    @property
    def harmful_chance(self) -> float:
        """Accuracy of always predicting the test split's most common harmful label."""
        counts = torch.bincount(self.test.harmful.cpu(), minlength=self.num_harmful)
        return float(counts.max()) / max(1, len(self.test))

    def to(self, device: torch.device | str) -> TamperData:
        """The same splits on ``device`` (attacks run where their data lives)."""
        return TamperData(
            self.defender.to(device),
            self.attacker.to(device),
            self.test.to(device),
            self.num_desired,
            self.num_harmful,
        )


class TamperModel(nn.Module):
    """A released model: a trunk producing features and the desired-task head on top."""

    def __init__(self, trunk: nn.Module, feature_dim: int, num_desired: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.desired_head = nn.Linear(feature_dim, num_desired)
        self.feature_dim = feature_dim
        self.num_desired = num_desired

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.desired_head(self.trunk(x))  # type: ignore[no-any-return]


@runtime_checkable
class Testbed(Protocol):
    """What the lab needs from a model family; see the module docstring."""

    name: str
    feature_dim: int

    def make_trunk(self, seed: int) -> nn.Module: ...

    def release(self, seed: int) -> TamperModel: ...

    def data(self) -> TamperData: ...

    def extra_references(self) -> dict[str, TamperModel]: ...


def random_init_model(testbed: Testbed, seed: int) -> TamperModel:
    """The random-init reference: a fresh trunk and head (the floor a defense aims for)."""
    data = testbed.data()
    torch.manual_seed(seed)
    return TamperModel(testbed.make_trunk(seed), testbed.feature_dim, data.num_desired)


def save_model(
    path: Path, model: TamperModel, metadata: dict[str, Any], *, force: bool = False
) -> None:
    """Write ``model`` as safetensors with ``metadata`` (JSON) under one key, atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    blob = save(tensors, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})
    with atomic_output(Path(path), force=force) as handle:
        handle.write(blob)


def read_metadata(path: Path) -> dict[str, Any]:
    """The ``weightvault.tamper`` metadata of a saved model (empty dict if absent)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own SafetensorError and OSError
        raise FormatError(f"{path}: not a safetensors file ({exc})") from exc
    raw = meta.get(METADATA_KEY)
    if raw is None:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: metadata {METADATA_KEY}: not valid JSON") from exc
    if not isinstance(value, dict):
        raise FormatError(f"{path}: metadata {METADATA_KEY}: expected an object")
    return value


def load_model(path: Path, testbed: Testbed) -> tuple[TamperModel, dict[str, Any]]:
    """Load a model saved by :func:`save_model` into ``testbed``'s architecture.

    Refuses files made for another testbed and tensors that do not match the architecture
    (missing, extra or wrongly shaped), naming the first offending tensor.
    """
    from safetensors.torch import load_file

    path = Path(path)
    metadata = read_metadata(path)
    saved_for = metadata.get("testbed")
    if saved_for is not None and saved_for != testbed.name:
        raise InputError(
            f"{path}: model was saved for testbed {saved_for!r}, not {testbed.name!r}",
            hint="use the testbed the model was saved for",
            remedy="testbed",
        )
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise FormatError(f"{path}: not a safetensors file ({exc})") from exc
    model = random_init_model(testbed, 0)
    expected = model.state_dict()
    for key in sorted(set(expected) | set(tensors)):
        if key not in tensors:
            raise FormatError(f"{path}: tensor {key!r} missing")
        if key not in expected:
            raise FormatError(f"{path}: unexpected tensor {key!r} for testbed {testbed.name!r}")
        if tuple(tensors[key].shape) != tuple(expected[key].shape):
            raise FormatError(
                f"{path}: tensor {key!r} has shape {tuple(tensors[key].shape)}, "
                f"expected {tuple(expected[key].shape)}"
            )
        if not torch.isfinite(tensors[key].float()).all():
            raise FormatError(f"{path}: tensor {key!r} has non-finite values")
    model.load_state_dict(tensors)
    return model, metadata
