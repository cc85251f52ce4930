"""Opt-in global hooks: unchanged code that loads a model verifies it against a signature.

``install_hooks(policy)`` replaces, until ``uninstall_hooks()`` (or the end of its ``with``
block):

* ``safetensors.torch.load_file(path)`` -> :func:`weightvault.load.safetensors`;
* ``torch.load(path)`` -> :func:`weightvault.load.torch` (weights only);
* ``PreTrainedModel.from_pretrained`` and the ``AutoModel...`` classes' ``from_pretrained`` ->
  :func:`weightvault.load.from_pretrained` (a local folder, or a repository already in the
  Hugging Face cache; nothing is downloaded).

The signature is looked for beside the model: ``FOLDER/model.sig`` for a folder, the same name
in the file's folder for a file. Code that imported a function by name before the hooks were
installed (``from torch import load``) keeps the original: install them first.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from weightvault.errors import InputError, PolicyError, Reason, UsageError
from weightvault.load import _originals
from weightvault.load._verified import read_verified
from weightvault.load.loaders import build_pretrained, safetensors, torch
from weightvault.signing import SIGNATURE_FILE_NAME, Verifier

__all__ = ["HookHandle", "LoadPolicy", "install_hooks", "uninstall_hooks"]


@dataclass(frozen=True)
class LoadPolicy:
    """What the hooks verify with, and what they let through unverified.

    ``unsafe_allow_unsigned`` loads a model that has no signature beside it without checking
    it (a model *with* a signature is always checked); ``unsafe_allow_streams`` lets
    ``torch.load`` read an open file or buffer, which has no signature to check against.
    """

    verifier: Verifier
    signature_name: str = SIGNATURE_FILE_NAME
    unsafe_allow_unsigned: bool = False
    unsafe_allow_streams: bool = False

    def signature_for(self, path: Path) -> Path:
        folder = path if path.is_dir() else path.parent
        return folder / self.signature_name


_lock = threading.Lock()
_policy: LoadPolicy | None = None


class HookHandle:
    """Returned by :func:`install_hooks`; a context manager that uninstalls them on exit."""

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        uninstall_hooks()

    def uninstall(self) -> None:
        uninstall_hooks()


def _current() -> LoadPolicy:
    policy = _policy
    if policy is None:  # pragma: no cover - a hook outlived its uninstall
        raise UsageError("weightvault hooks are not installed")
    return policy


def _signed(policy: LoadPolicy, path: Path) -> Path | None:
    """The signature to check ``path`` against, or ``None`` when the policy lets it through."""
    signature = policy.signature_for(path)
    if signature.exists():
        return signature
    if policy.unsafe_allow_unsigned:
        return None
    raise PolicyError(
        f"{path}: no signature beside the model ({signature}); refused by the load policy",
        hint="sign the model, or allow unsigned models in the policy",
    )


def _is_path(value: Any) -> bool:
    return isinstance(value, str | bytes | os.PathLike)


def _load_file(filename: Any, device: Any = "cpu", **kwargs: Any) -> Any:
    policy = _current()
    path = Path(os.fsdecode(filename))
    signature = _signed(policy, path)
    if signature is None:
        return _originals.real("safetensors.torch.load_file")(filename, device=device, **kwargs)
    return safetensors(path, signature=signature, verifier=policy.verifier, device=str(device))


def _torch_load(f: Any, map_location: Any = None, *args: Any, **kwargs: Any) -> Any:
    policy = _current()
    if not _is_path(f):
        if policy.unsafe_allow_streams:
            return _originals.real("torch.load")(f, map_location, *args, **kwargs)
        raise PolicyError(
            "torch.load of an open file or buffer: it has no signature to verify against; "
            "refused by the load policy"
        )
    path = Path(os.fsdecode(f))
    signature = _signed(policy, path)
    if signature is None:
        return _originals.real("torch.load")(f, map_location, *args, **kwargs)
    if kwargs.get("weights_only") is False:
        raise PolicyError(
            f"{path}: torch.load with weights_only=False; verified loads are weights only"
        )
    return torch(path, signature=signature, verifier=policy.verifier, map_location=map_location)


def _snapshot(name: Any, kwargs: dict[str, Any]) -> Path:
    """A local folder, or the cached snapshot of a hub repository (never a download)."""
    path = Path(os.fsdecode(name))
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                os.fsdecode(name),
                revision=kwargs.pop("revision", None),
                cache_dir=kwargs.pop("cache_dir", None),
                local_files_only=True,
            )
        )
    except Exception as exc:  # huggingface_hub raises several kinds for "not cached"
        raise InputError(
            f"{name}: not a local folder nor a repository in the Hugging Face cache; the hooks "
            "never download",
            reason=Reason.NOT_FOUND,
        ) from exc


def _from_pretrained(original: str) -> Any:
    def from_pretrained(cls: Any, name: Any, *model_args: Any, **kwargs: Any) -> Any:
        if name is None:  # a state dict given in memory: nothing to read
            return _originals.real(original)(cls, name, *model_args, **kwargs)
        policy = _current()
        folder = _snapshot(name, kwargs)
        signature = _signed(policy, folder)
        if signature is None:
            return _originals.real(original)(cls, name, *model_args, **kwargs)
        if model_args:
            raise UsageError("verified from_pretrained takes no positional model arguments")
        verified = read_verified(folder, signature=signature, verifier=policy.verifier)
        return build_pretrained(cls, verified, kwargs)

    return classmethod(from_pretrained)


def _auto_classes() -> list[type]:
    """Every ``AutoModel...`` class with its own ``from_pretrained`` (transformers copies the
    method into each one, so hooking their common base is not enough)."""
    import transformers.models.auto.modeling_auto  # noqa: F401 - defines the Auto classes
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    found: list[type] = []
    pending: list[type] = [_BaseAutoModelClass]
    while pending:
        cls = pending.pop()
        if "from_pretrained" in cls.__dict__:
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def _targets() -> list[tuple[Any, str, str, Any]]:
    """(owner, attribute, name in the originals, replacement) for every hooked function."""
    import safetensors.torch
    import torch as torch_module
    import torch.serialization
    from transformers import PreTrainedModel

    targets: list[tuple[Any, str, str, Any]] = [
        (safetensors.torch, "load_file", "safetensors.torch.load_file", _load_file),
        (torch_module, "load", "torch.load", _torch_load),
        (torch.serialization, "load", "torch.serialization.load", _torch_load),
        (
            PreTrainedModel,
            "from_pretrained",
            "PreTrainedModel.from_pretrained",
            _from_pretrained("PreTrainedModel.from_pretrained"),
        ),
    ]
    for cls in _auto_classes():
        name = f"{cls.__module__}.{cls.__qualname__}.from_pretrained"
        targets.append((cls, "from_pretrained", name, _from_pretrained(name)))
    return targets


def install_hooks(policy: LoadPolicy) -> HookHandle:
    """Make safetensors, torch and transformers loads verify under ``policy`` (see the module
    docstring); refused if hooks are already installed."""
    global _policy
    if not isinstance(policy, LoadPolicy):
        raise TypeError("install_hooks takes a LoadPolicy")
    with _lock:
        if _policy is not None:
            raise UsageError("weightvault hooks are already installed; uninstall them first")
        targets = _targets()
        for owner, attribute, name, _ in targets:
            raw = owner.__dict__[attribute]
            _originals.saved[f"raw:{name}"] = raw
            if isinstance(raw, classmethod):
                _originals.saved[name] = raw.__func__
            else:
                _originals.saved[name] = raw
        for owner, attribute, _, replacement in targets:
            setattr(owner, attribute, replacement)
        _policy = policy
    return HookHandle()


def uninstall_hooks() -> None:
    """Put back the original functions (nothing happens if no hooks are installed)."""
    global _policy
    with _lock:
        if _policy is None:
            return
        for owner, attribute, name, _ in _targets():
            setattr(owner, attribute, _originals.saved.pop(f"raw:{name}"))
            _originals.saved.pop(name, None)
        _policy = None
