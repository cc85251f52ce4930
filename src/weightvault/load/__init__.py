"""Verified loading: hash each file in the pass that reads it, refuse before returning a tensor.

Public API::

    from weightvault.load import safetensors, torch, from_pretrained, install_hooks
    tensors = safetensors("model/", verifier=KeyVerifier.from_file("key.pub"))
    state = torch("model/pytorch_model.bin", verifier=verifier)
    model = from_pretrained(AutoModelForCausalLM, "model/", verifier=verifier)
    with install_hooks(LoadPolicy(verifier)):      # unchanged code verifies too
        safetensors.torch.load_file("model/model.safetensors")

Every file is opened once and read into private memory while it is hashed; tensors are built
from those bytes, so a file swapped between the check and the load cannot be loaded. Refusals
are :class:`LoadRefusedError` subclasses, one per reason. Sign on save:
:func:`sign_on_save` and :class:`SigningCallback` (a transformers ``TrainerCallback``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from weightvault import _lazy_attributes
from weightvault.load._errors import (
    BadSignatureError,
    DigestMismatchError,
    ExtraFileError,
    LoadRefusedError,
    MissingFileError,
    SymlinkEscapeError,
)
from weightvault.load._verified import VerifiedModel, read_verified
from weightvault.load.loaders import from_pretrained, safetensors, torch

if TYPE_CHECKING:
    from weightvault.load.hooks import LoadPolicy, install_hooks, uninstall_hooks
    from weightvault.load.save import (
        SigningCallback,
        WrittenFile,
        save_safetensors,
        sign_on_save,
        sign_written,
    )

__all__ = [
    "BadSignatureError",
    "DigestMismatchError",
    "ExtraFileError",
    "LoadPolicy",
    "LoadRefusedError",
    "MissingFileError",
    "SigningCallback",
    "SymlinkEscapeError",
    "VerifiedModel",
    "WrittenFile",
    "from_pretrained",
    "install_hooks",
    "read_verified",
    "safetensors",
    "save_safetensors",
    "sign_on_save",
    "sign_written",
    "torch",
    "uninstall_hooks",
]

__getattr__ = _lazy_attributes(
    __name__,
    {
        "LoadPolicy": "weightvault.load.hooks",
        "install_hooks": "weightvault.load.hooks",
        "uninstall_hooks": "weightvault.load.hooks",
        "SigningCallback": "weightvault.load.save",
        "WrittenFile": "weightvault.load.save",
        "save_safetensors": "weightvault.load.save",
        "sign_on_save": "weightvault.load.save",
        "sign_written": "weightvault.load.save",
    },
)
