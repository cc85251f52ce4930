"""Byte-flip fuzzing of every format parser: a verdict or a clean error, never an internal error."""

from __future__ import annotations

import io
import pickle
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightvault.scan import scan_file


def _samples() -> dict[str, bytes]:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from safetensors.numpy import save
    from scan_corpus import _gguf, _keras_zip, _onnx_model

    out: dict[str, bytes] = {}
    out["m.safetensors"] = save({"a": np.arange(6, dtype=np.float32).reshape(2, 3)})
    buffer = io.BytesIO()
    np.save(buffer, np.arange(5))
    out["a.npy"] = buffer.getvalue()
    buffer = io.BytesIO()
    np.save(buffer, np.array([1, "x"], dtype=object), allow_pickle=True)
    out["o.npy"] = buffer.getvalue()
    out["m.onnx"] = _onnx_model(external="w.bin")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.gguf"
        _gguf(path, template="{{ x }}")
        out["g.gguf"] = path.read_bytes()
    out["m.keras"] = _keras_zip({"class_name": "Sequential", "config": {"layers": []}})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"a": 1}, protocol=2))
        archive.writestr("archive/data/0", b"\x00" * 16)
    out["t.pt"] = buffer.getvalue()
    return out


SAMPLES = _samples()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_samples_are_valid_to_start_with(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(SAMPLES[name])
    result = scan_file(path)
    assert not result.errors, result.errors


@settings(max_examples=300, deadline=3000, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(sorted(SAMPLES)),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1,
                   max_size=4),
    cut=st.floats(0, 1),
)
def test_mutations_never_cause_internal_errors(
    tmp_path: Path, name: str, flips: list[tuple[float, int]], cut: float
) -> None:
    data = bytearray(SAMPLES[name])
    for where, value in flips:
        data[int(where * len(data))] = value
    if cut < 0.3:
        data = data[: int(len(data) * (1 - cut))]
    path = tmp_path / name
    path.write_bytes(bytes(data))
    result = scan_file(path)
    assert not any("internal error" in e for e in result.errors), result.errors
