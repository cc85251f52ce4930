"""Issuing a recipient's fingerprinted copy of a model: a file or a folder, streamed.

safetensors files are rewritten as streams (header as read, then each tensor read, marked and
written before the next is read), so a multi-gigabyte model needs memory for its largest tensor,
not for the model. Torch state dicts are read through the safe loader (``weights_only``,
memory-mapped) and written back as torch files; other files of a folder (config, tokenizer) are
copied as they are.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from weightvault import _interrupt
from weightvault._dataclass_json import field_dict
from weightvault._fs import atomic_output, ensure_writable_destination, fsync_dir, temporary_name
from weightvault.errors import InputError
from weightvault.fingerprint._io import (
    SAFETENSORS_SUFFIXES,
    ModelReader,
    load_torch_state,
    opened,
    rewrite_safetensors,
)
from weightvault.fingerprint.keys import FingerprintKey, check_recipient
from weightvault.fingerprint.marks import (
    DEFAULT_STRENGTH,
    GroupTransform,
    group_transform,
    mark_tensor,
)
from weightvault.fingerprint.structure import MarkPlan, TensorInfo, plan_marks

__all__ = ["IssuedCopy", "MarkOptions", "Marker", "issue_copy", "mark_state", "read_heads"]


@dataclass(frozen=True)
class MarkOptions:
    """How a copy is marked. ``strength``: robust-mark amplitude as a fraction of each tensor's
    standard deviation (0 turns it off); ``heads``: attention heads per layer (attention is
    permuted only when known; read from a ``config.json`` beside the model when not given);
    ``relu``: the feed-forward activation is ReLU (units may then also be rescaled)."""

    strength: float = DEFAULT_STRENGTH
    heads: int | None = None
    relu: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.strength <= 0.5:
            raise ValueError("strength must be between 0 and 0.5")
        if self.heads is not None and self.heads < 1:
            raise ValueError("heads must be positive")


@dataclass(frozen=True)
class IssuedCopy:
    """What :func:`issue_copy` wrote."""

    recipient: str
    fingerprint_id: str
    key_id: str
    output: Path
    files: tuple[str, ...]
    permuted_groups: int
    robust_tensors: int
    robust_elements: int

    def to_json(self) -> dict[str, Any]:
        return {**field_dict(self), "output": str(self.output), "files": list(self.files)}


def read_heads(model: Path) -> int | None:
    """The attention head count from a Hugging Face ``config.json`` in (or beside) ``model``."""
    from weightvault._json import load_object

    folder = model if model.is_dir() else model.parent
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        doc = load_object(config.read_bytes(), str(config), max_bytes=1 << 20)
    except Exception:  # a config we cannot read says nothing about heads
        return None
    for key in ("num_attention_heads", "n_head", "num_heads"):
        value = doc.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class Marker:
    """One recipient's marks over one model plan; :meth:`rewrite` streams a safetensors file."""

    def __init__(
        self, plan: MarkPlan, key: FingerprintKey, recipient: str, options: MarkOptions
    ) -> None:
        self.plan = plan
        self.key = key
        self.recipient = check_recipient(recipient)
        self.options = options
        self.transforms: dict[str, GroupTransform] = {
            name: group_transform(key, recipient, group)
            for name, group in plan.groups.items()
            if group.permute
        }

    def change(self, name: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The function that marks tensor ``name``, or ``None`` when it stays as it is."""
        if name not in self.plan.robust and not self.plan.ops(name, issuing=True):
            return None

        def mark(tensor: torch.Tensor) -> torch.Tensor:
            return mark_tensor(
                name, tensor, self.plan, self.transforms, self.key, self.recipient,
                self.options.strength,
            )  # fmt: skip

        return mark

    def rewrite(self, source: BinaryIO, sink: BinaryIO, where: str) -> int:
        """Stream one safetensors file of the model from ``source`` to ``sink``, marked."""
        return rewrite_safetensors(source, sink, self.change, where)


def mark_state(
    state: Mapping[str, torch.Tensor],
    key: FingerprintKey,
    recipient: str,
    options: MarkOptions | None = None,
) -> dict[str, torch.Tensor]:
    """``recipient``'s marked copy of a state dict in memory (the same marks as
    :func:`issue_copy` writes for the same tensors)."""
    from weightvault.fingerprint._io import StateReader

    options = options or MarkOptions()
    marker = Marker(plan_for(StateReader(state).infos, options), key, recipient, options)
    out = {}
    for name, tensor in state.items():
        rewrite = marker.change(name)
        out[name] = tensor if rewrite is None else rewrite(tensor)
    return out


def plan_for(
    infos: dict[str, TensorInfo], options: MarkOptions, heads: int | None = None
) -> MarkPlan:
    """The plan for a model's tensors under ``options`` (``heads`` fills in a missing count)."""
    return plan_marks(infos, heads=options.heads or heads, relu=options.relu)


def issue_copy(
    model: Path,
    output: Path,
    key: FingerprintKey,
    recipient: str,
    options: MarkOptions | None = None,
    *,
    force: bool = False,
) -> IssuedCopy:
    """Write ``recipient``'s fingerprinted copy of ``model`` (a file or folder) to ``output``.

    Deterministic: the same key, recipient, options and model give the same bytes.
    """
    options = options or MarkOptions()
    recipient = check_recipient(recipient)
    model, output = Path(model), Path(output)
    reader = ModelReader(model)
    plan = plan_for(reader.infos, options, read_heads(model))
    marker = Marker(plan, key, recipient, options)
    if model.is_file():
        if output.exists() and output.is_dir():
            raise InputError(f"{output}: is a folder; the model is one file, give a file name")
        _write_file(marker, reader, model, output, force=force)
        files: tuple[str, ...] = (output.name,)
    else:
        files = _write_folder(marker, reader, model, output, force=force)
    robust = [name for name in plan.robust if options.strength > 0]
    return IssuedCopy(
        recipient=recipient,
        fingerprint_id=key.fingerprint_id(recipient),
        key_id=key.key_id(),
        output=output,
        files=files,
        permuted_groups=len(marker.transforms),
        robust_tensors=len(robust),
        robust_elements=sum(plan.tensors[name].numel for name in robust),
    )


def _mark_into(marker: Marker, reader: ModelReader, source: Path, handle: BinaryIO) -> None:
    if source.suffix in SAFETENSORS_SUFFIXES:
        with opened(source) as stream:
            marker.rewrite(stream, handle, str(source))
        return
    state = load_torch_state(source)
    marked = {}
    for name, tensor in state.items():
        rewrite = marker.change(name)
        marked[name] = tensor if rewrite is None else rewrite(tensor)
    torch.save(marked, handle)


def _write_file(
    marker: Marker, reader: ModelReader, source: Path, output: Path, *, force: bool
) -> None:
    if source.resolve() == output.resolve():
        raise InputError(f"{output}: is the model itself; write the copy elsewhere")
    if source.suffix != output.suffix and (
        source.suffix in SAFETENSORS_SUFFIXES or output.suffix in SAFETENSORS_SUFFIXES
    ):
        raise InputError(
            f"{output}: the copy keeps the model's format; name it with {source.suffix}"
        )
    with atomic_output(output, force=force) as handle:
        _mark_into(marker, reader, source, handle)


def _write_folder(
    marker: Marker, reader: ModelReader, model: Path, output: Path, *, force: bool
) -> tuple[str, ...]:
    """Build the copy in a hidden folder beside ``output``, then give it its name in one step."""
    if output.exists() and not output.is_dir():
        raise InputError(f"{output}: is a file; the model is a folder, give a folder name")
    if output.exists() and not force:
        ensure_writable_destination(output / "x", force=False)  # folder checks, then:
        from weightvault._fs import already_exists

        raise already_exists(output)
    if output.resolve() == model.resolve() or model.resolve() in output.resolve().parents:
        raise InputError(f"{output}: is inside the model; write the copy elsewhere")
    if not output.parent.exists():
        raise InputError(f"{output.parent}: folder does not exist; create it first")
    weights = set(reader.files)
    staging = temporary_name(output)
    names: list[str] = []
    try:
        staging.mkdir()
        for path in sorted(p for p in model.rglob("*") if p.is_file()):
            relative = path.relative_to(model)
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if path in weights:
                with target.open("xb") as handle:
                    _mark_into(marker, reader, path, handle)
                    handle.flush()
                    os.fsync(handle.fileno())
            else:
                shutil.copyfile(path, target)
            names.append(relative.as_posix())
            _interrupt.check_stop()
        with _interrupt.deferred():
            existed = output.exists()
            if existed:
                shutil.rmtree(output)
            os.rename(staging, output)
            _interrupt.record_created(output, existed=existed)
            for name in names:
                _interrupt.record_created(output / name, existed=existed)
            fsync_dir(output.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise
    return tuple(names)
