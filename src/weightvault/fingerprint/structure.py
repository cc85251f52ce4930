"""Which units of a model may be permuted (and rescaled) without changing what it computes.

The function-preserving mark needs to know, from tensor names and shapes alone, where the
hidden units are. Three families are recognised:

* **BERT-like** encoders (``...layer.N.attention.self.query.weight``, ``intermediate.dense``,
  ``output.dense``; Hugging Face BERT, RoBERTa, MiniLM, and the tamper lab's ``bios``): the
  feed-forward units of each layer; with the head count, the attention heads too.
* **GPT-2-like** decoders (``...h.N.attn.c_attn.weight``, ``mlp.c_fc``, ``mlp.c_proj``; Conv1D
  weights stored ``[in, out]``): the same two groups.
* **Sequential MLPs** (``P.0.weight``, ``P.2.weight`` ...: consecutive linear layers of one
  ``nn.Sequential`` with only parameter-free modules between them; the tamper lab's ``digits``
  trunk): the hidden units between each pair.

Why each transform keeps the function:

* permuting feed-forward units permutes the rows of the first matrix (and its bias) and the
  columns of the second the same way: the activation acts element by element, so the sum over
  units is unchanged;
* permuting attention heads (query, key and value rows together, the output projection's
  columns the same way), and within one head permuting query and key dimensions jointly (the
  dot product ``q.k`` is a sum over them) and value dimensions with the output's columns;
* scaling a query dimension by ``c`` and its key dimension by ``1/c`` (``q.k`` unchanged), a value
  dimension by ``c`` and the output column by ``1/c`` (attention mixes values linearly): valid for
  every activation and LayerNorm placement, but not with rotary embeddings or query/key norms,
  which these names do not describe;
* scaling a feed-forward unit by ``c > 0`` and its outgoing column by ``1/c`` only when the
  activation is positively homogeneous (ReLU). The names do not say which activation a model
  uses, so this is off unless the caller says the model uses ReLU: GELU, SiLU and tanh models
  get permutations only.

A model that matches none of these gets only the robust mark.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from weightvault._safetensors import HeaderTensor

__all__ = ["AxisOp", "MarkPlan", "TensorInfo", "UnitGroup", "plan_marks"]

#: Smallest tensor (elements) that carries the robust mark: biases and norms are too small to
#: add evidence and too sensitive to touch.
MIN_ROBUST_ELEMENTS = 1024

FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})


@dataclass(frozen=True)
class TensorInfo(HeaderTensor):
    """Name, safetensors dtype code (``?`` for one safetensors cannot hold) and shape of one
    tensor, as a header names it, with the element count the planner sizes marks by."""

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class AxisOp:
    """One group's transform on one tensor: along ``axis``, the slice ``[start, stop)`` is the
    group's units; they are permuted, then multiplied (``scale`` 1) or divided (-1) by the
    group's scales, or not scaled (0)."""

    group: str
    axis: int
    start: int
    stop: int
    scale: int


@dataclass
class UnitGroup:
    """Units permuted together: ``kind`` is ``ffn`` (feed-forward / MLP hidden units), ``qk``
    (query and key dimensions) or ``vo`` (value dimensions and output columns)."""

    name: str
    kind: str
    size: int
    heads: int | None = None
    #: The attention block both ``qk`` and ``vo`` belong to (they share one head permutation).
    block: str = ""
    members: list[tuple[str, AxisOp]] = field(default_factory=list)
    #: May this group be permuted (and scaled) at issue time? Attention needs the head count.
    permute: bool = True
    scaled: bool = False


@dataclass
class MarkPlan:
    """What the marks touch: unit groups, per-tensor transforms, robust-mark tensors."""

    tensors: dict[str, TensorInfo]
    groups: dict[str, UnitGroup]
    robust: list[str]

    def ops(self, name: str, *, issuing: bool) -> list[AxisOp]:
        """The transforms of tensor ``name`` (at issue time, only the groups that permute)."""
        if self._index is None:
            index: dict[str, list[tuple[UnitGroup, AxisOp]]] = {}
            for group in self.groups.values():
                for member, op in group.members:
                    index.setdefault(member, []).append((group, op))
            self._index = index
        return [op for group, op in self._index.get(name, []) if group.permute or not issuing]

    _index: dict[str, list[tuple[UnitGroup, AxisOp]]] | None = field(
        default=None, init=False, repr=False
    )


_LAYER = re.compile(r"^(?P<block>(?:.*\.)?(?:layer|layers|h|block|blocks)\.\d+)\.(?P<rest>.+)$")
_SEQUENTIAL = re.compile(r"^(?P<prefix>(?:.*\.)?)(?P<index>\d+)\.(?P<leaf>weight|bias)$")

# suffix -> (group kind, role, axis); roles: in (mul), out (div); q/k/v segments below.
_BERT = {
    "attention.self.query.weight": ("qk", "q", 0),
    "attention.self.query.bias": ("qk", "q", 0),
    "attention.self.key.weight": ("qk", "k", 0),
    "attention.self.key.bias": ("qk", "k", 0),
    "attention.self.value.weight": ("vo", "v", 0),
    "attention.self.value.bias": ("vo", "v", 0),
    "attention.output.dense.weight": ("vo", "o", 1),
    "intermediate.dense.weight": ("ffn", "in", 0),
    "intermediate.dense.bias": ("ffn", "in", 0),
    "output.dense.weight": ("ffn", "out", 1),
}
# The tamper lab's MiniLM testbed names its BERT layers' parts directly.
_LAB_PARTS = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attn_out",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
}
_LAB_BERT = {
    _LAB_PARTS[name.rpartition(".")[0]] + name[name.rindex(".") :]: role
    for name, role in _BERT.items()
}
_GPT2 = {
    "mlp.c_fc.weight": ("ffn", "in", 1),
    "mlp.c_fc.bias": ("ffn", "in", 0),
    "mlp.c_proj.weight": ("ffn", "out", 0),
    "attn.c_proj.weight": ("vo", "o", 0),
}
_GPT2_QKV = {"attn.c_attn.weight": 1, "attn.c_attn.bias": 0}
_SCALE = {"in": 1, "out": -1, "q": 1, "k": -1, "v": 1, "o": -1}


def _is_float(info: TensorInfo) -> bool:
    return info.dtype in FLOAT_DTYPES


def plan_marks(
    tensors: Mapping[str, TensorInfo],
    *,
    heads: int | None = None,
    relu: bool = False,
    min_robust: int = MIN_ROBUST_ELEMENTS,
) -> MarkPlan:
    """The plan for a model whose tensors are ``tensors`` (all of them: a group may span shards).

    ``heads``: the attention head count (attention is permuted only when it is known);
    ``relu``: the feed-forward activation is ReLU (allows unit rescaling).
    """
    if heads is not None and heads < 1:
        raise ValueError("heads must be positive")
    groups: dict[str, UnitGroup] = {}
    by_block: dict[str, dict[str, TensorInfo]] = {}
    for info in tensors.values():
        match = _LAYER.match(info.name)
        if match and _is_float(info):
            by_block.setdefault(match["block"], {})[match["rest"]] = info
    for block, parts in sorted(by_block.items()):
        for table in (_BERT, _LAB_BERT):
            _plan_table(groups, block, parts, table, heads, relu)
        _plan_gpt2(groups, block, parts, heads, relu)
    _plan_sequential(groups, tensors, relu)
    robust = sorted(
        name
        for name, info in tensors.items()
        if _is_float(info) and len(info.shape) >= 2 and info.numel >= min_robust
    )
    return MarkPlan(dict(tensors), groups, robust)


def _attention_permutable(size: int, heads: int | None) -> bool:
    return heads is not None and size % heads == 0


def _add_group(
    groups: dict[str, UnitGroup],
    block: str,
    kind: str,
    members: list[tuple[TensorInfo, str, int, int, int]],
    heads: int | None,
    relu: bool,
) -> None:
    """Add one group if its members agree on the unit count (else the names lied: skip)."""
    sizes = {stop - start for _info, _role, _axis, start, stop in members}
    roles = {role for _info, role, _axis, _start, _stop in members}
    needed = {"ffn": {"in", "out"}, "qk": {"q", "k"}, "vo": {"v", "o"}}[kind]
    if len(sizes) != 1 or not needed <= roles:
        return
    size = sizes.pop()
    name = f"{block}.{kind}"
    if kind == "ffn":
        group = UnitGroup(name, kind, size, block=block, scaled=relu)
    else:
        permute = _attention_permutable(size, heads)
        group = UnitGroup(
            name, kind, size, heads=heads if permute else None, block=block, permute=permute,
            scaled=permute,
        )  # fmt: skip
    for info, role, axis, start, stop in members:
        scale = _SCALE[role] if group.scaled else 0
        group.members.append((info.name, AxisOp(name, axis, start, stop, scale)))
    groups[name] = group


def _table_members(
    parts: dict[str, TensorInfo], table: dict[str, tuple[str, str, int]]
) -> dict[str, list[tuple[TensorInfo, str, int, int, int]]]:
    """The whole-axis members a suffix table names, by group kind: one reading of the tables
    for every architecture, so a table entry means the same wherever it is used."""
    by_kind: dict[str, list[tuple[TensorInfo, str, int, int, int]]] = {}
    for suffix, (kind, role, axis) in table.items():
        info = parts.get(suffix)
        if info is not None and axis < len(info.shape):
            by_kind.setdefault(kind, []).append((info, role, axis, 0, info.shape[axis]))
    return by_kind


def _plan_table(
    groups: dict[str, UnitGroup],
    block: str,
    parts: dict[str, TensorInfo],
    table: dict[str, tuple[str, str, int]],
    heads: int | None,
    relu: bool,
) -> None:
    for kind, members in _table_members(parts, table).items():
        _add_group(groups, block, kind, members, heads, relu)


def _plan_gpt2(
    groups: dict[str, UnitGroup],
    block: str,
    parts: dict[str, TensorInfo],
    heads: int | None,
    relu: bool,
) -> None:
    by_kind = _table_members(parts, _GPT2)
    for suffix, axis in _GPT2_QKV.items():
        info = parts.get(suffix)
        if info is None or axis >= len(info.shape) or info.shape[axis] % 3:
            continue
        third = info.shape[axis] // 3
        by_kind.setdefault("qk", []).append((info, "q", axis, 0, third))
        by_kind["qk"].append((info, "k", axis, third, 2 * third))
        by_kind.setdefault("vo", []).append((info, "v", axis, 2 * third, 3 * third))
    for kind, members in by_kind.items():
        _add_group(groups, block, kind, members, heads, relu)


def _plan_sequential(
    groups: dict[str, UnitGroup], tensors: Mapping[str, TensorInfo], relu: bool
) -> None:
    """Consecutive linear layers of one ``nn.Sequential``: ``P.i.weight`` [u, n] then the next
    parameterised index ``P.j`` holding only ``weight`` [m, u] (and a bias)."""
    indices: dict[str, dict[int, dict[str, TensorInfo]]] = {}
    for info in tensors.values():
        match = _SEQUENTIAL.match(info.name)
        if match:
            leaves = indices.setdefault(match["prefix"], {}).setdefault(int(match["index"]), {})
            leaves[match["leaf"]] = info
    for prefix, layers in sorted(indices.items()):
        # A prefix that also holds non-numbered parameters is not a plain Sequential.
        if any(
            name.startswith(prefix) and not _SEQUENTIAL.match(name)
            and name[len(prefix):].split(".")[0].isdigit()
            for name in tensors
        ):  # fmt: skip
            continue
        order = sorted(layers)
        for first, second in itertools.pairwise(order):
            w1, w2 = layers[first].get("weight"), layers[second].get("weight")
            if w1 is None or w2 is None or not (_is_float(w1) and _is_float(w2)):
                continue
            if len(w1.shape) != 2 or len(w2.shape) != 2 or w1.shape[0] != w2.shape[1]:
                continue
            members: list[tuple[TensorInfo, str, int, int, int]] = [
                (w1, "in", 0, 0, w1.shape[0]),
                (w2, "out", 1, 0, w2.shape[1]),
            ]
            b1 = layers[first].get("bias")
            if b1 is not None and b1.shape == (w1.shape[0],):
                members.append((b1, "in", 0, 0, w1.shape[0]))
            _add_group(groups, f"{prefix}{first}", "ffn", members, None, relu)
