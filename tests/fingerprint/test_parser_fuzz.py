"""The streaming safetensors rewriter parses untrusted files: any byte flip, truncation or
hostile header is a one-line FormatError (or a well-formed file), never another exception."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save

from weightvault.errors import FormatError
from weightvault.fingerprint._io import rewrite_safetensors

FILE = save({
    "net.0.weight": np.arange(64, dtype=np.float32).reshape(8, 8),
    "net.0.bias": np.ones(8, dtype=np.float16),
    "net.2.weight": np.zeros((4, 8), dtype=np.float32),
})  # fmt: skip


def _rewrite(data: bytes) -> bytes:
    sink = io.BytesIO()
    rewrite_safetensors(io.BytesIO(data), sink, lambda _name: lambda t: t * 2, "suspect")
    return sink.getvalue()


def test_a_well_formed_file_round_trips() -> None:
    out = _rewrite(FILE)
    assert len(out) == len(FILE) and out[:100] == FILE[:100] and out != FILE


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(FILE) - 1), st.integers(1, 255), st.integers(0, len(FILE)))
def test_flipped_or_truncated_bytes_are_format_errors(at: int, xor: int, cut: int) -> None:
    data = bytearray(FILE)
    data[at] ^= xor
    for candidate in (bytes(data), FILE[:cut]):
        try:
            _rewrite(candidate)
        except FormatError as exc:
            assert "\n" not in exc.message


@pytest.mark.parametrize(
    "header",
    [
        {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}},  # size mismatch
        {"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}},
        {"w": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}},
        {"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}},  # gap at the start
        {"w": {"dtype": "F32", "shape": [1]}},
        {"w": ["F32", [1], [0, 4]]},
        {"w": {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}},
        [1, 2, 3],
    ],
)
def test_hostile_headers_are_refused(header: object) -> None:
    raw = json.dumps(header).encode()
    data = struct.pack("<Q", len(raw)) + raw + bytes(8)
    with pytest.raises(FormatError):
        _rewrite(data)


def test_a_huge_header_length_is_refused_before_reading() -> None:
    with pytest.raises(FormatError, match="header length"):
        _rewrite(struct.pack("<Q", 1 << 40) + b"{}")
