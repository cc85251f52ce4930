"""convert: same tensors as torch.load(weights_only=True); refuses dangerous input; atomic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from weightvault.errors import FormatError, InputError, UnsafeFileError
from weightvault.scan.convert import convert_checkpoint


def _state() -> dict[str, object]:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "f32": torch.randn(3, 5),
        "f16": torch.randn(7, dtype=torch.float16),
        "bf16": torch.randn(2, 3, dtype=torch.bfloat16),
        "f64": torch.randn(2, dtype=torch.float64),
        "i64": torch.arange(9),
        "i32": torch.arange(4, dtype=torch.int32),
        "i8": torch.tensor([-1, 2], dtype=torch.int8),
        "u8": torch.tensor([255, 0], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "transposed": base.t(),
        "row_view": base[2],
        "strided": base[:, ::2],
        "tied": base,
        "param": torch.nn.Parameter(torch.ones(2, 2)),
    }


@pytest.mark.parametrize("legacy", [False, True])
def test_tensors_match_torch_load_weights_only(tmp_path: Path, legacy: bool) -> None:
    source = tmp_path / "ckpt.pt"
    torch.save({"model": _state(), "epoch": 7, "note": "x"}, source,
               _use_new_zipfile_serialization=not legacy)
    out = tmp_path / "out.safetensors"
    result = convert_checkpoint(source, out)
    reference = torch.load(source, weights_only=True)["model"]
    converted = load_file(str(out))
    assert set(converted) == {f"model.{k}" for k in reference}
    for key, tensor in reference.items():
        mine = converted[f"model.{key}"]
        assert mine.dtype == tensor.dtype, key
        assert mine.shape == tensor.shape, key
        assert torch.equal(mine, tensor.detach()), key
    assert set(result.skipped) == {"epoch", "note"}
    assert result.total_bytes == sum(t.numel() * t.element_size() for t in reference.values())


def test_dangerous_checkpoint_is_refused_with_the_finding_named(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, ("true",)

    source = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "x": Evil()}, source)
    out = tmp_path / "out.safetensors"
    with pytest.raises(UnsafeFileError, match="system"):
        convert_checkpoint(source, out)
    assert not out.exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_unknown_classes_refused_unless_allowed_then_inert(tmp_path: Path) -> None:
    import argparse

    source = tmp_path / "with_args.pt"
    torch.save({"args": argparse.Namespace(lr=0.1), "w": torch.ones(3)}, source)
    with pytest.raises(UnsafeFileError, match=r"argparse\.Namespace"):
        convert_checkpoint(source, tmp_path / "a.safetensors")
    result = convert_checkpoint(source, tmp_path / "b.safetensors", allow=["argparse.Namespace"])
    assert [t.name for t in result.tensors] == ["w"]
    assert "args" in result.skipped


def test_output_is_atomic_and_force_is_needed(tmp_path: Path) -> None:
    source = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2)}, source)
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(InputError, match="already exists") as info:
        convert_checkpoint(source, out)
    assert info.value.remedy == "overwrite"  # the CLI words it as its --force option
    assert out.read_bytes() == b"keep me"
    convert_checkpoint(source, out, force=True)
    assert torch.equal(load_file(str(out))["w"], torch.ones(2))


def test_truncated_and_non_torch_inputs(tmp_path: Path) -> None:
    source = tmp_path / "m.pt"
    torch.save({"w": torch.ones(1000)}, source, _use_new_zipfile_serialization=False)
    data = source.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:-100])
    with pytest.raises(FormatError):
        convert_checkpoint(tmp_path / "cut.pt", tmp_path / "o.safetensors")
    (tmp_path / "plain.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(FormatError, match="not a PyTorch"):
        convert_checkpoint(tmp_path / "plain.pkl", tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()
    with pytest.raises(InputError):
        convert_checkpoint(tmp_path / "missing.pt", tmp_path / "o.safetensors")
