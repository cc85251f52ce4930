"""The function-preserving mark keeps outputs (real transformers models, the tamper lab's
testbeds, a ReLU MLP with rescaling), the robust mark stays within its amplitude, and issuing
is deterministic, streamed and format-preserving."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from tests.fingerprint.models import (
    HEADS,
    KEY,
    hidden,
    ids,
    relu_mlp,
    state_of,
    tiny_bert,
    tiny_gpt2,
)

from weightvault.fingerprint import MarkOptions, issue_copy
from weightvault.fingerprint._io import StateReader, rewrite_safetensors
from weightvault.fingerprint.issue import Marker, mark_state
from weightvault.fingerprint.structure import plan_marks

ONLY_PERMUTE = MarkOptions(strength=0.0, heads=HEADS)


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> set[str]:
    return {k for k in a if not torch.equal(a[k], b[k])}


def test_bert_outputs_are_unchanged_by_permutations_and_attention_scalings() -> None:
    model = tiny_bert()
    state = state_of(model)
    plan = plan_marks(StateReader(state).infos, heads=HEADS)
    assert sorted(g.kind for g in plan.groups.values()) == ["ffn", "ffn", "qk", "qk", "vo", "vo"]
    marked = mark_state(state, KEY, "alice", ONLY_PERMUTE)
    # every grouped tensor moved: attention (q, k, v, output) and both feed-forward matrices
    assert {"encoder.layer.0.attention.self.query.weight", "encoder.layer.1.output.dense.weight",
            "encoder.layer.0.attention.output.dense.weight"} <= _changed(state, marked)  # fmt: skip
    copy = tiny_bert()
    copy.load_state_dict(marked)
    x = ids()
    assert torch.allclose(hidden(model, x), hidden(copy, x), atol=1e-5)


def test_gpt2_outputs_are_unchanged_conv1d_layout_and_fused_qkv() -> None:
    model = tiny_gpt2()
    state = state_of(model)
    marked = mark_state(state, KEY, "bob", ONLY_PERMUTE)
    assert {"h.0.attn.c_attn.weight", "h.1.mlp.c_fc.weight", "h.1.mlp.c_proj.weight",
            "h.0.attn.c_proj.weight"} <= _changed(state, marked)  # fmt: skip
    copy = tiny_gpt2()
    copy.load_state_dict(marked)
    x = ids(1)
    assert torch.allclose(hidden(model, x), hidden(copy, x), atol=1e-5)


@pytest.mark.parametrize("build", [tiny_bert, tiny_gpt2])
def test_the_leakers_permutations_keep_the_function_and_sorting_is_canonical(
    build: Callable[[], torch.nn.Module],
) -> None:
    """The removal attempts the table measures are honest: a re-permutation (heads, dimensions
    within heads, feed-forward units) and the canonical sort compute the model's function, and
    the sort ends in one order whatever order the units were in."""
    from weightvault.fingerprint import attacks

    model = build()
    state = state_of(model)
    plan = plan_marks(StateReader(state).infos, heads=HEADS)
    shuffled = [attacks.repermute(state, plan, seed=s) for s in (1, 2)]
    assert len(_changed(state, shuffled[0])) >= 8
    sorted_copies = [attacks.canonicalize(s, plan) for s in (state, *shuffled)]
    for copy_state in (*shuffled, *sorted_copies):
        copy = build()
        copy.load_state_dict(copy_state)
        assert torch.allclose(hidden(model, ids()), hidden(copy, ids()), atol=1e-5)
    assert not _changed(sorted_copies[0], sorted_copies[1])
    assert not _changed(sorted_copies[0], sorted_copies[2])


def test_wrong_head_count_is_caught_by_the_output_check() -> None:
    """The head count matters: permuting as if there were 2 heads of 32 mixes real heads."""
    model = tiny_bert()
    marked = mark_state(state_of(model), KEY, "alice", MarkOptions(strength=0.0, heads=2))
    copy = tiny_bert()
    copy.load_state_dict(marked)
    x = ids()
    assert not torch.allclose(hidden(model, x), hidden(copy, x), atol=1e-3)


def test_without_a_head_count_only_feed_forward_units_move() -> None:
    state = state_of(tiny_bert())
    marked = mark_state(state, KEY, "alice", MarkOptions(strength=0.0))
    changed = _changed(state, marked)
    assert "encoder.layer.0.intermediate.dense.weight" in changed
    assert not any("attention" in name for name in changed)


def test_digits_testbed_gelu_mlp_keeps_its_outputs() -> None:
    from weightvault.tamper.digits import DigitsTestbed

    bed = DigitsTestbed(pretrain_steps=20)
    model = bed.release(0)
    state = state_of(model)
    marked = mark_state(state, KEY, "carol", ONLY_PERMUTE)
    moved = {"trunk.net.0.weight", "trunk.net.0.bias", "trunk.net.2.weight"}
    assert _changed(state, marked) == moved
    copy = bed.release(0)
    copy.load_state_dict(marked)
    x = bed.data().test.x
    with torch.no_grad():
        assert torch.allclose(model(x), copy(x), atol=1e-5)


def test_bios_and_minilm_testbed_trunks_keep_their_outputs() -> None:
    from weightvault.tamper.bios import BertTrunk, BiosSize
    from weightvault.tamper.minilm import MiniLMTrunk

    torch.manual_seed(0)
    bios = BertTrunk(BiosSize(hidden=64, layers=2, heads=HEADS), vocab_size=100).eval()
    marked = mark_state(state_of(bios), KEY, "dave", ONLY_PERMUTE)
    copy = BertTrunk(BiosSize(hidden=64, layers=2, heads=HEADS), vocab_size=100).eval()
    copy.load_state_dict(marked)
    x = torch.randint(1, 100, (4, 12))
    with torch.no_grad():
        assert torch.allclose(bios(x), copy(x), atol=1e-5)

    minilm = MiniLMTrunk(top_layers=1).eval()  # the lab's own BERT layer (MiniLM's 12 heads)
    state = state_of(minilm)
    marked = mark_state(state, KEY, "dave", MarkOptions(strength=0.0, heads=12))
    assert "layers.0.attn_out.weight" in _changed(state, marked)
    copy = MiniLMTrunk(top_layers=1).eval()
    copy.load_state_dict(marked)
    x = torch.cat([torch.randn(2, 8, 384), torch.ones(2, 8, 1)], dim=-1)
    with torch.no_grad():
        assert torch.allclose(minilm(x), copy(x), atol=1e-4)


def test_relu_mlp_rescaling_is_exact_only_when_declared() -> None:
    model = relu_mlp()
    state = state_of(model)
    scaled = mark_state(state, KEY, "erin", MarkOptions(strength=0.0, relu=True))
    plain = mark_state(state, KEY, "erin", MarkOptions(strength=0.0))
    # the scales really apply: same permutation, different values
    assert not torch.equal(scaled["0.weight"], plain["0.weight"])
    x = torch.randn(16, 32)
    for marked in (scaled, plain):
        copy = relu_mlp(1)
        copy.load_state_dict(marked)
        with torch.no_grad():
            assert torch.allclose(model(x), copy(x), atol=1e-5)
    # the same scaling across a GELU would change the function: why it is off by default
    gelu = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.GELU(), torch.nn.Linear(128, 64),
                               torch.nn.GELU(), torch.nn.Linear(64, 4))  # fmt: skip
    gelu.load_state_dict(scaled)
    reference = torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.GELU(),
                                    torch.nn.Linear(128, 64), torch.nn.GELU(),
                                    torch.nn.Linear(64, 4))  # fmt: skip
    reference.load_state_dict(state)
    with torch.no_grad():
        assert not torch.allclose(gelu(x), reference(x), atol=1e-3)


def test_robust_mark_amplitude_is_strength_times_std() -> None:
    state = state_of(tiny_bert())
    marked = mark_state(state, KEY, "alice", MarkOptions(strength=0.02))  # no attention moves
    name = "embeddings.word_embeddings.weight"  # in no unit group: only the robust mark
    delta = (marked[name].double() - state[name].double()) / state[name].double().std()
    assert torch.allclose(delta.abs(), torch.full_like(delta, 0.02), atol=1e-4)
    assert abs(float((delta > 0).double().mean()) - 0.5) < 0.02  # fair signs
    # biases and LayerNorm parameters are left alone
    assert torch.equal(marked["embeddings.LayerNorm.weight"], state["embeddings.LayerNorm.weight"])


def test_issue_is_deterministic_per_recipient_and_keeps_the_layout(tmp_path: Path) -> None:
    state = state_of(tiny_bert())
    state["encoder.layer.0.output.dense.weight"] = state["encoder.layer.0.output.dense.weight"].to(
        torch.bfloat16
    )  # a mixed-precision file
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    first = issue_copy(tmp_path / "model.safetensors", tmp_path / "a1.safetensors", KEY, "alice")
    issue_copy(tmp_path / "model.safetensors", tmp_path / "a2.safetensors", KEY, "alice")
    issue_copy(tmp_path / "model.safetensors", tmp_path / "b.safetensors", KEY, "bob")
    a1, a2 = (tmp_path / "a1.safetensors").read_bytes(), (tmp_path / "a2.safetensors").read_bytes()
    b = (tmp_path / "b.safetensors").read_bytes()
    original = (tmp_path / "model.safetensors").read_bytes()
    assert a1 == a2 and a1 != b
    assert len(a1) == len(original)
    header = 8 + int.from_bytes(original[:8], "little")
    assert a1[:header] == original[:header]  # same header: dtypes, shapes, offsets, metadata
    loaded = load_file(tmp_path / "a1.safetensors")
    assert loaded["encoder.layer.0.output.dense.weight"].dtype == torch.bfloat16
    assert first.fingerprint_id == KEY.fingerprint_id("alice") != KEY.fingerprint_id("bob")
    assert first.robust_tensors == 14 and first.permuted_groups == 2


def _golden_layer(folder: Path) -> Path:
    """One BERT-shaped layer (4 heads, hidden 32, feed-forward 64, an fp16 tensor too) from
    numpy's PCG64, whose values no library version changes."""
    import numpy as np
    from safetensors.numpy import save_file as save_numpy

    rng = np.random.default_rng(21)
    prefix = "encoder.layer.0."
    shapes = {
        "attention.self.query": (32, 32), "attention.self.key": (32, 32),
        "attention.self.value": (32, 32), "attention.output.dense": (32, 32),
        "intermediate.dense": (64, 32), "output.dense": (32, 64),
    }  # fmt: skip
    state = {}
    for name, shape in shapes.items():
        state[f"{prefix}{name}.weight"] = rng.standard_normal(shape, dtype=np.float32)
        state[f"{prefix}{name}.bias"] = rng.standard_normal(shape[0], dtype=np.float32)
    state[f"{prefix}output.dense.weight"] = state[f"{prefix}output.dense.weight"].astype(np.float16)
    path = folder / "layer.safetensors"
    save_numpy(state, str(path))
    return path


def test_marked_bytes_are_pinned(tmp_path: Path) -> None:
    """Golden bytes: a copy issued today is byte for byte the copy issued by every later
    version (a recipient's re-download and custody's stored copies stay consistent), and a
    change to the arithmetic of either mark shows here first."""
    import hashlib

    model = _golden_layer(tmp_path)
    issued = issue_copy(model, tmp_path / "alice.safetensors", KEY, "alice", MarkOptions(heads=4))
    digest = hashlib.sha256((tmp_path / "alice.safetensors").read_bytes()).hexdigest()
    assert issued.permuted_groups == 3 and issued.robust_tensors == 6
    assert digest == GOLDEN_SHA256


GOLDEN_SHA256 = "7205d6c6ac914e4bba05085875ce62f96482e29b652735fd1c515df0df56ee08"


def test_rewrite_reads_one_tensor_at_a_time() -> None:
    """Streaming: the largest single read is the largest tensor, never the model."""
    state = state_of(tiny_bert())
    buffer = io.BytesIO()
    save_file_bytes = __import__("safetensors.torch", fromlist=["save"]).save(state)
    buffer = io.BytesIO(save_file_bytes)
    reads: list[int] = []

    class Spy(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:  # type: ignore[override]
            data = super().read(size)
            reads.append(len(data))
            return data

        def readinto(self, buffer: Any) -> int:
            count = super().readinto(buffer)
            reads.append(count)
            return count

    marker = Marker(plan_marks(StateReader(state).infos), KEY, "alice", MarkOptions())
    sink = io.BytesIO()
    rewrite_safetensors(Spy(buffer.getvalue()), sink, marker.change, "model")
    largest = max(t.numel() * t.element_size() for t in state.values())
    assert max(reads) <= max(largest, 8 + int.from_bytes(save_file_bytes[:8], "little"))
    assert len(sink.getvalue()) == len(save_file_bytes)


def test_torch_state_dicts_are_read_through_the_safe_loader(tmp_path: Path) -> None:
    state = state_of(relu_mlp())
    torch.save(state, tmp_path / "model.pt")
    issue_copy(tmp_path / "model.pt", tmp_path / "copy.pt", KEY, "alice", MarkOptions(relu=True))
    copy = torch.load(tmp_path / "copy.pt", weights_only=True)
    assert set(copy) == set(state) and _changed(state, copy)

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    torch.save({"0.weight": state["0.weight"], "x": Evil()}, tmp_path / "evil.pt")
    from weightvault.errors import FormatError

    with pytest.raises(FormatError, match="safe loader"):
        issue_copy(tmp_path / "evil.pt", tmp_path / "out.pt", KEY, "alice")
    assert not (tmp_path / "out.pt").exists()


def test_a_folder_model_is_marked_as_one_model(tmp_path: Path) -> None:
    """Shards are marked with the plan of the whole model: a feed-forward pair split across
    two files is permuted consistently, and config.json gives the head count."""
    model = tiny_bert()
    state = state_of(model)
    names = sorted(state)
    folder = tmp_path / "model"
    folder.mkdir()
    save_file({n: state[n] for n in names[::2]}, folder / "model-00001-of-00002.safetensors")
    save_file({n: state[n] for n in names[1::2]}, folder / "model-00002-of-00002.safetensors")
    model.config.save_pretrained(folder)
    issued = issue_copy(folder, tmp_path / "copy", KEY, "alice", MarkOptions(strength=0.0))
    assert issued.permuted_groups == 6  # heads read from config.json
    assert (tmp_path / "copy" / "config.json").read_bytes() == (folder / "config.json").read_bytes()
    merged: dict[str, torch.Tensor] = {}
    for shard in sorted((tmp_path / "copy").glob("*.safetensors")):
        merged.update(load_file(shard))
    copy = tiny_bert()
    copy.load_state_dict(merged)
    x = ids()
    assert torch.allclose(hidden(model, x), hidden(copy, x), atol=1e-5)
