"""The library functions the hooks replace, as they were before: the loaders call these, so a
verified load never goes through a hook (and never verifies twice)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["real", "saved"]

#: ``"torch.load"`` -> the function the hook replaced (only while hooks are installed).
saved: dict[str, Any] = {}


def real(name: str) -> Callable[..., Any]:
    """The unhooked function ``name``: ``torch.load``, ``safetensors.torch.load_file`` or
    ``PreTrainedModel.from_pretrained`` (its underlying function, taking the class first)."""
    if name in saved:
        function: Callable[..., Any] = saved[name]
        return function
    if name == "torch.load":
        import torch

        return torch.load
    if name == "safetensors.torch.load_file":
        import safetensors.torch

        return safetensors.torch.load_file
    if name == "PreTrainedModel.from_pretrained":
        from transformers import PreTrainedModel

        method: Callable[..., Any] = PreTrainedModel.from_pretrained.__func__  # type: ignore[attr-defined]
        return method
    raise KeyError(name)
