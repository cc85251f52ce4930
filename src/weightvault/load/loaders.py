"""Verified loaders: safetensors, PyTorch checkpoints, transformers models.

Each reads every byte once, hashing it in the same pass, and returns nothing unless the whole
model (or the one file asked for) matches a signature that verifies::

    from weightvault.load import safetensors, torch, from_pretrained
    tensors = safetensors("model/model.safetensors", verifier=KeyVerifier.from_file("key.pub"))
    model = from_pretrained(AutoModelForCausalLM, "model/", verifier=verifier)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from weightvault.errors import FormatError, InputError
from weightvault.load._errors import listed
from weightvault.load._formats import safetensors_from_buffer, torch_from_buffer
from weightvault.load._originals import real
from weightvault.load._place import CheckpointPlacer, TensorPlacer
from weightvault.load._verified import VerifiedModel, read_verified
from weightvault.oms.manifest import component_key
from weightvault.signing import Verifier

if TYPE_CHECKING:
    import torch as torch_module

__all__ = ["from_pretrained", "safetensors", "torch", "weight_files"]

PathLike = str | os.PathLike[str]


def _only_or_all(verified: VerifiedModel, suffixes: tuple[str, ...]) -> list[str]:
    """The files to turn into tensors: the one file read, or a folder's weight files."""
    names = verified.names()
    if len(names) == 1:
        return names
    chosen = [n for n in names if "/" not in n and n.endswith(suffixes)]
    if not chosen:
        raise FormatError(
            f"{verified.model_path}: holds no {' or '.join(suffixes)} file at its top level"
        )
    return chosen


def safetensors(
    path: PathLike,
    *,
    signature: PathLike | None = None,
    verifier: Verifier,
    device: str = "cpu",
    max_workers: int | None = None,
    into: torch_module.nn.Module | Mapping[str, torch_module.Tensor] | None = None,
    strict: bool = True,
) -> dict[str, torch_module.Tensor]:
    """Load safetensors tensors after verifying them in the pass that reads them.

    ``path`` is a ``.safetensors`` file (its own signature, or one covering its folder) or a
    model folder / cache snapshot (every file verified; the top-level ``.safetensors`` files
    merged). The tensors are views of the verified buffer. Raises a
    :class:`~weightvault.load.LoadRefusedError` subclass before returning anything.

    ``into`` (a module, or a mapping of names to CPU tensors) loads the tensors into the
    destination's tensors of the same names instead, as ``load_state_dict`` would, and returns
    those: their bytes are read straight into them and hashed there, skipping a buffer of our
    own and the copy out of it. A load that raises leaves every tensor it wrote zeroed. A
    tensor of the file without a destination of its dtype and shape is refused (after the
    verification); so is, with ``strict``, a destination tensor the files do not fill.
    """
    if into is not None:
        if device != "cpu":
            raise ValueError("into= loads into the destination's own tensors: leave device out")
        options = _Into(signature, verifier, max_workers, strict)
        return options.load(path, into, TensorPlacer, (".safetensors",), safetensors_from_buffer)
    verified = read_verified(path, signature=signature, verifier=verifier, max_workers=max_workers)
    tensors: dict[str, torch_module.Tensor] = {}
    for name in _only_or_all(verified, (".safetensors",)):
        loaded = safetensors_from_buffer(verified.files[name], name, device)
        _merge(tensors, loaded, name)
    return tensors


def torch(
    path: PathLike,
    *,
    signature: PathLike | None = None,
    verifier: Verifier,
    map_location: Any = None,
    max_workers: int | None = None,
    into: torch_module.nn.Module | Mapping[str, torch_module.Tensor] | None = None,
    strict: bool = True,
) -> Any:
    """``torch.load(path, weights_only=True)`` of a verified checkpoint.

    The checkpoint is unpickled from the verified buffer by PyTorch's weights-only unpickler
    (tensors, containers and plain values only). A folder loads its top-level ``.bin`` /
    ``.pt`` / ``.pth`` files and merges their (dictionary) contents.

    ``into`` loads a state dict into the destination's tensors, as for :func:`safetensors`:
    the storages of a zip checkpoint (one tensor each) are read straight into them.
    """
    suffixes = (".bin", ".pt", ".pth")
    load = real("torch.load")
    if into is not None:
        if map_location is not None:
            raise ValueError("into= loads into the destination's own tensors: no map_location")
        options = _Into(signature, verifier, max_workers, strict)
        return options.load(
            path,
            into,
            CheckpointPlacer,
            suffixes,
            lambda buffer, name: _state_dict(torch_from_buffer(buffer, name, load, "cpu"), name),
        )
    verified = read_verified(path, signature=signature, verifier=verifier, max_workers=max_workers)
    names = _only_or_all(verified, suffixes)
    if len(names) == 1:
        return torch_from_buffer(verified.files[names[0]], names[0], load, map_location)
    merged: dict[str, Any] = {}
    for name in names:
        part = torch_from_buffer(verified.files[name], name, load, map_location)
        if not isinstance(part, dict):
            raise FormatError(f"{name}: holds no dictionary to merge with the other checkpoints")
        _merge(merged, part, name)
    return merged


def _state_dict(part: Any, name: str) -> dict[str, torch_module.Tensor]:
    import torch as torch_module

    if not isinstance(part, dict) or not all(
        isinstance(v, torch_module.Tensor) for v in part.values()
    ):
        raise FormatError(f"{name}: is not a state dict (names to tensors)")
    return part


@dataclass(frozen=True)
class _Into:
    """A verified load into a destination's own tensors (``into=``)."""

    signature: PathLike | None
    verifier: Verifier
    max_workers: int | None
    strict: bool

    def load(
        self,
        path: PathLike,
        into: torch_module.nn.Module | Mapping[str, torch_module.Tensor],
        placer_class: type[TensorPlacer] | type[CheckpointPlacer],
        suffixes: tuple[str, ...],
        parse: Callable[[memoryview, str], dict[str, torch_module.Tensor]],
    ) -> dict[str, torch_module.Tensor]:
        """Files placed by ``placer_class`` where they fit; any other chosen file parsed from
        its verified buffer and copied in. Whatever fails zeroes what was written."""
        destinations = dict(into.state_dict() if hasattr(into, "state_dict") else into)
        folder = os.path.isdir(path)
        placer = placer_class(
            destinations, lambda name: name.endswith(suffixes) and not (folder and "/" in name)
        )
        copied: list[str] = []
        try:
            verified = read_verified(
                path,
                signature=self.signature,
                verifier=self.verifier,
                max_workers=self.max_workers,
                place=placer,
            )
            loaded: dict[str, torch_module.Tensor] = {}
            for name in _only_or_all(verified, suffixes):
                keys = placer.placed.get(name)
                if keys is not None:
                    _merge(loaded, {key: destinations[key] for key in keys}, name)
                    continue
                part = parse(verified.files[name], name)
                for key, tensor in part.items():
                    target = destinations.get(key)
                    if target is None or (target.dtype, target.shape) != (
                        tensor.dtype,
                        tensor.shape,
                    ):
                        raise FormatError(
                            f"{name}: tensor {key!r} ({tensor.dtype}, {list(tensor.shape)}) has "
                            "no place of that dtype and shape in the destination"
                        )
                _merge(loaded, {key: destinations[key] for key in part}, name)
                for key, tensor in part.items():
                    copied.append(key)
                    destinations[key].detach().copy_(tensor)
            filled = {tensor.data_ptr() for tensor in loaded.values()}
            missing = [
                k for k, t in destinations.items() if k not in loaded and t.data_ptr() not in filled
            ]
            if self.strict and missing:
                raise FormatError(f"{verified.model_path}: no tensor for {listed(missing)}")
        except BaseException:
            placer.erase()
            for key in copied:
                destinations[key].detach().zero_()
            raise
        return loaded


def _merge(into: dict[str, Any], part: dict[str, Any], name: str) -> None:
    clash = into.keys() & part.keys()
    if clash:
        raise FormatError(f"{name}: tensor {sorted(clash)[0]!r} is also in another weight file")
    into.update(part)


def weight_files(verified: VerifiedModel) -> tuple[str, dict[str, Any]]:
    """A transformers folder's state dict from its verified weight files (safetensors first)."""
    names = [n for n in verified.names() if "/" not in n]
    safetensor_files = [n for n in names if n.endswith(".safetensors")]
    state: dict[str, Any] = {}
    if safetensor_files:
        for name in safetensor_files:
            _merge(state, safetensors_from_buffer(verified.files[name], name), name)
        return "safetensors", state
    checkpoints = [n for n in names if n.startswith("pytorch_model") and n.endswith(".bin")]
    if not checkpoints:
        raise FormatError(f"{verified.model_path}: holds no model weights (safetensors or .bin)")
    load = real("torch.load")
    for name in sorted(checkpoints, key=component_key):
        part = torch_from_buffer(verified.files[name], name, load, "cpu")
        if not isinstance(part, dict):
            raise FormatError(f"{name}: is not a state dict")
        _merge(state, part, name)
    return "torch", state


def from_pretrained(
    model_class: Any,
    path: PathLike,
    *,
    signature: PathLike | None = None,
    verifier: Verifier,
    max_workers: int | None = None,
    **kwargs: Any,
) -> Any:
    """``model_class.from_pretrained(path, **kwargs)`` from verified bytes only.

    ``path`` is a local model folder or a Hugging Face cache snapshot
    (``.../models--org--name/snapshots/REV``). Every file of it is verified; the configuration
    and the weights are then built from the verified buffers (transformers reads no file).
    ``model_class`` is a model class or an ``AutoModel...`` class; ``kwargs`` are
    configuration overrides and model options, as for transformers.
    """
    verified = read_verified(path, signature=signature, verifier=verifier, max_workers=max_workers)
    return build_pretrained(model_class, verified, kwargs)


def build_pretrained(model_class: Any, verified: VerifiedModel, kwargs: dict[str, Any]) -> Any:
    """The model of a verified transformers folder (the hook's and :func:`from_pretrained`'s
    common step)."""
    config_bytes = verified.files.get("config.json")
    config = kwargs.pop("config", None)
    if config is None or isinstance(config, str | os.PathLike):
        if config_bytes is None:
            raise InputError(f"{verified.model_path}: has no config.json")
        try:
            config_dict = json.loads(bytes(config_bytes))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise FormatError(f"{verified.model_path}/config.json: not JSON ({exc})") from exc
        config_class = getattr(model_class, "config_class", None)
        if config_class is None:
            from transformers import AutoConfig

            config_class = type(AutoConfig.for_model(**config_dict))
        config, kwargs = config_class.from_dict(config_dict, return_unused_kwargs=True, **kwargs)
    mapping = getattr(model_class, "_model_mapping", None)
    if mapping is not None:  # an Auto class: pick the model class for this configuration
        model_class = mapping[type(config)]
    _, state = weight_files(verified)
    return real("PreTrainedModel.from_pretrained")(
        model_class, None, config=config, state_dict=state, **kwargs
    )
