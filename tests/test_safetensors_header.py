"""The one safetensors header parser: its parameters are the readers' only differences.

The JSON and layout rules are fuzzed against the real library in
``tests/load/test_safetensors_differential.py``; these pin what each parameter allows.
"""

from __future__ import annotations

import pytest

from weightvault._safetensors import (
    Header,
    TensorSpan,
    header_length,
    parse_header,
    safetensors_header,
)
from weightvault.errors import FormatError, Reason


def _raw(*tensors: tuple[str, str, list[int], int], **metadata: str) -> bytes:
    return safetensors_header(tensors, metadata)[8:]


def _refused(raw: bytes, data_size: int | None, match: str, **options: object) -> None:
    with pytest.raises(FormatError, match=match) as caught:
        parse_header(raw, "m.safetensors", data_size, **options)  # type: ignore[arg-type]
    assert caught.value.reason is Reason.FORMAT and "\n" not in str(caught.value)


def test_a_written_header_reads_back() -> None:
    raw = _raw(("b", "F32", [2], 8), ("a", "U8", [], 1), format="pt")
    assert parse_header(raw, "m", 9) == Header(
        (TensorSpan("b", "F32", (2,), 0, 8), TensorSpan("a", "U8", (), 8, 9)), {"format": "pt"}
    )


def test_dtypes_is_what_the_reader_builds() -> None:
    raw = _raw(("a", "F8_E8M0", [4], 4))
    assert parse_header(raw, "m", 4).tensors[0].dtype == "F8_E8M0"
    _refused(raw, 4, "tensor 'a': unsupported dtype 'F8_E8M0'", dtypes={"F32"})
    _refused(_raw(("a", "F99", [4], 4)), 4, "unknown dtype 'F99'")


def test_an_unknown_data_size_checks_the_tiling_not_the_end() -> None:
    raw = _raw(("a", "F32", [1], 4))
    assert len(parse_header(raw, "m", None).tensors) == 1
    _refused(raw, 8, "4 bytes of the data section belong to no tensor")
    gap = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}'
    _refused(gap, None, "gap of 4 unused bytes before tensor 'a'")


def test_locating_takes_what_safetensors_reads_and_any_layout_inside_the_data() -> None:
    overlap = (
        b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        b'"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8],"x":1},'
        b'"b":{"dtype":"U8","shape":[1],"data_offsets":[8,9]}}'
    )
    located = parse_header(overlap, "m", 12, locate_only=True)
    assert [(t.name, t.dtype, t.begin) for t in located.tensors] == [
        ("a", "F32", 0),
        ("b", "U8", 8),
    ]
    _refused(overlap, 12, "duplicate key 'b'")
    _refused(overlap.replace(b"[8,9]", b"[8,12]"), 9, "outside the data", locate_only=True)
    extra = b'{"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}'
    assert parse_header(extra, "m", 4, locate_only=True).tensors[0].name == "b"
    _refused(extra, 4, "expected exactly dtype, shape and data_offsets")
    _refused(extra.replace(b'"dtype":"F32",', b""), 4, "expected dtype", locate_only=True)
    tiled = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    _refused(tiled.replace(b"[0,4]", b"[4,8]"), 8, "gap of 4 unused bytes before tensor 'a'")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[-0,4]}}', "data_offsets is not"),
        (b'{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', "lone surrogate"),
        (b'{"__metadata__":{"x":"1","x":"2"}}', "duplicate key 'x'"),
        (b'{"__metadata__":{"x":NaN}}', "holds NaN"),
        (b'{"__metadata__":{"x":1}}', "must map strings to strings"),
        (b'{"a":{"dtype":"F32","shape":[1' + b"0" * 5000 + b'],"data_offsets":[0,4]}}', "number"),
        (b"\xff{}", "not UTF-8"),
        (b"[]", "not a JSON object"),
    ],
)
def test_json_as_safetensors_reads_it(raw: bytes, match: str) -> None:
    _refused(raw, 4, match)


def test_header_length_is_bounded_by_the_file_and_the_caller() -> None:
    prefix = (16).to_bytes(8, "little")
    assert header_length(prefix, "m", 24) == 16 and header_length(prefix, "m", None) == 16
    with pytest.raises(FormatError, match="m: header length 16 is out of bounds"):
        header_length(prefix, "m", 23)
    with pytest.raises(FormatError, match="out of bounds"):
        header_length(prefix, "m", None, max_length=15)
    with pytest.raises(FormatError, match="too short"):
        header_length(prefix[:7], "m", 7)
