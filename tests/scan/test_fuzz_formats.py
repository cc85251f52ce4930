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


def _gguf(path: Path, template: str) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from scan_corpus import _gguf as write

    write(path, template=template)


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
    out.update(_container_samples())
    return out


def _container_samples() -> dict[str, bytes]:
    """Containers and compressed streams (issue 12): TorchScript, tar layouts, joblib-style
    compression by content, a GGUF chat template, structured .npy dtypes."""
    import gzip
    import lzma
    import tarfile
    import warnings

    import torch

    out: dict[str, bytes] = {}

    class Tiny(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x) + 1

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Tiny()), buffer)
    out["ts.pt"] = buffer.getvalue()
    clean = pickle.dumps({"w": list(range(20))}, protocol=4)
    out["z.bin"] = lzma.compress(clean, format=lzma.FORMAT_ALONE)
    out["g.model"] = gzip.compress(clean)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for name, data in (("pickle", clean), ("notes.txt", b"hi")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    out["m.tar"] = raw.getvalue()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.gguf"
        _gguf(path, template="{% for m in messages %}{{ m['role'] ~ ': ' ~ m.content|trim }}"
              "{% endfor %}{{ messages|map(attribute='role')|join(',') }}")
        out["t.gguf"] = path.read_bytes()
    buffer = io.BytesIO()
    np.save(buffer, np.zeros(2, dtype=[("a", "<i4"), ("t", "<M8[s]"), ("s", "S3")]))
    out["r.npy"] = buffer.getvalue()
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


def _zip_sample() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"a": 1}, protocol=2))
        archive.writestr("archive/version", b"3\n")
        archive.writestr("archive/data/0", b"\x00" * 16, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


ZIP = _zip_sample()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flips=st.lists(st.tuples(st.integers(0, 140), st.integers(0, 255)), min_size=1,
                   max_size=4),
    prefix=st.binary(max_size=40),
    suffix=st.binary(max_size=40),
)
def test_where_miniz_view_claims_agreement_zipfile_reads_the_same_list(
    flips: list[tuple[int, int]], prefix: bytes, suffix: bytes,
) -> None:
    """The fast path skips zipfile only when it provably reads what miniz reads: mutate the end
    of a zip (central directory, end records) and check the claim against the real zipfile."""
    from weightvault.scan.formats.zip_views import ZipReadError, read_miniz

    data = bytearray(prefix + ZIP + suffix)
    for back, value in flips:
        data[len(data) - 1 - back % len(data)] = value
    blob = bytes(data)
    try:
        miniz = read_miniz(io.BytesIO(blob), 0, len(blob))
    except ZipReadError:
        return
    if not miniz.zipfile_agrees:
        return
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        infos = archive.infolist()
    assert [(m.raw_name, m.method, m.compress_size, m.file_size, m.header_offset)
            for m in miniz.members] == [
        (i.orig_filename.encode("utf-8" if i.flag_bits & 0x800 else "cp437"), i.compress_type,
         i.compress_size, i.file_size, i.header_offset) for i in infos]
