"""Differential fuzzing of weightvault's safetensors readers against the real ``safetensors``.

Why: a checker that reads a file differently from the loader the user runs can be shown one model
while the user gets another. Real files (``safetensors.torch.save``) get their header JSON and
layout mutated the ways an attacker would (duplicate names and fields, moved / overlapping /
out-of-range offsets, gaps, trailing bytes, shapes that disagree with their bytes, odd dtypes,
odd ``__metadata__``, a wrong header length, padding, non-UTF-8 text, number spellings Python
reads and Rust does not, an empty tensor list), and every outcome is compared:

1. whatever ``weightvault.load.safetensors`` returns, the real library returns too, with the same
   names, dtypes, shapes and bytes;
2. whatever the real library refuses, the verified loader refuses with a weightvault error;
3. the fingerprint reader and the scanner raise nothing but weightvault's errors;
4. whatever the scanner calls clean, the loader loads as the real library does, or refuses only
   a dtype it does not build (the scanner judges the layout of every dtype; the real library's
   torch side lacks some too).

Where weightvault is deliberately stricter than safetensors 0.8 (the real library loads the file,
weightvault refuses it), and why:

- duplicate keys anywhere in the header (two tensors of one name, a repeated
  ``__metadata__`` key): safetensors keeps the last, other JSON readers the first, so the file
  names two models (scanner and loader both refuse);
- a tensor entry with a field besides dtype, shape and data_offsets: room for a second reading;
- dtypes the loader does not build (``F8_E8M0``, ``F4``, ``F6_*``): refused, not guessed;
- the scanner alone: a header not starting with ``{`` (leading whitespace), which no writer
  produces: the scanner does not take the file for safetensors at all.

Gaps, overlaps and bytes after the last tensor are refused by safetensors as well, so they are
compared, not exempted. All four readers parse the header with one function
(:func:`weightvault._safetensors.parse_header`), whose parameters are their only differences.
The fingerprint reader streams (it does not know the file's size), so it is held only to its
errors; :func:`test_known_divergences` pins each finding as a minimal file.
"""

from __future__ import annotations

import json
import struct
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from safetensors.torch import save as save_torch

import weightvault.load as load
from weightvault.errors import WeightvaultError
from weightvault.fingerprint._io import read_header
from weightvault.scan import scan_file
from weightvault.signing import KeySigner, KeyVerifier, sign

_KEY = ec.generate_private_key(ec.SECP256R1())
SIGNER = KeySigner(_KEY)
VERIFIER = KeyVerifier(_KEY.public_key())

pytestmark = pytest.mark.filterwarnings("ignore:The given buffer is not writable")


# ---- a header as a list of pairs, so duplicates and raw tokens survive serialization ----


@dataclass(frozen=True)
class Raw:
    """A JSON token written as these bytes (``-0``, ``NaN``, a lone surrogate escape, ...)."""

    data: bytes


@dataclass
class Obj:
    """A JSON object as its pairs in order (duplicate keys allowed)."""

    pairs: list[tuple[str | Raw, Any]]

    def get(self, key: str) -> Any:
        return next((v for k, v in self.pairs if k == key), None)

    def set(self, key: str, value: Any) -> None:
        self.pairs = [(k, value if k == key else v) for k, v in self.pairs]


def dumps(value: Any) -> bytes:
    if isinstance(value, Raw):
        return value.data
    if isinstance(value, Obj):
        return b"{" + b",".join(dumps(k) + b":" + dumps(v) for k, v in value.pairs) + b"}"
    if isinstance(value, list):
        return b"[" + b",".join(dumps(v) for v in value) + b"]"
    return json.dumps(value).encode()


@dataclass
class Layout:
    """A safetensors file taken apart: header pairs, data section and the framing around them."""

    header: Obj
    data: bytes
    lead: bytes = b""
    trail: bytes = b""
    length_delta: int = 0
    utf16: bool = False
    applied: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, blob: bytes) -> Layout:
        (size,) = struct.unpack_from("<Q", blob)
        parsed = json.loads(blob[8 : 8 + size], object_pairs_hook=lambda p: Obj(list(p)))
        return cls(parsed, blob[8 + size :])

    def tensors(self) -> list[int]:
        return [
            i
            for i, (k, v) in enumerate(self.header.pairs)
            if k != "__metadata__" and isinstance(v, Obj)
        ]

    def blob(self) -> bytes:
        text = self.lead + dumps(self.header) + self.trail
        if self.utf16:
            text = text.decode("latin-1").encode("utf-16-le")
        return struct.pack("<Q", max(0, len(text) + self.length_delta)) + text + self.data


# ---- mutations -----------------------------------------------------------------------------

Draw = Callable[[st.SearchStrategy[Any]], Any]

ODD_DTYPES: list[Any] = [
    "F32",
    "F16",
    "BF16",
    "I64",
    "I32",
    "I16",
    "I8",
    "U8",
    "BOOL",
    "F64",
    "U16",
    "U32",
    "U64",
    "C64",
    "F8_E4M3",
    "F8_E5M2",
    "F8_E8M0",
    "F4",
    "F6_E2M3",
    "f32",
    "F32 ",
    "X",
    "",
    1,
    None,
    ["F32"],
    Raw(b'"\\u0046\\u0033\\u0032"'),
]
ODD_NUMBERS = [
    b"-0",
    b"0.0",
    b"4e0",
    b"1" + b"0" * 30,
    b"1" + b"0" * 5000,
    b"true",
    b"null",
    b"-4",
    b"18446744073709551616",
    b"NaN",
]
ODD_SHAPES: list[Any] = [
    [],
    [0],
    [1],
    [2, 2],
    [Raw(b"-0")],
    [True],
    [2.0],
    "3",
    [2**64],
    [0, 2**70],
    [2**40, 2**40, 0],
    [Raw(b"1e0")],
    None,
]
ODD_METADATA: list[Any] = [
    Obj([("format", "pt")]),
    Obj([("a", 1)]),
    Obj([("a", Raw(b"NaN"))]),
    None,
    [],
    "s",
    Obj([("a", Obj([("x", "y")]))]),
    Obj([("a", "b"), ("a", "c")]),
    Obj([("a", Raw(b'"\\ud800"'))]),
    Raw(b"[" * 5000 + b"]" * 5000),
    Obj([("dtype", "F32"), ("shape", [0]), ("data_offsets", [0, 0])]),
]
ODD_KEYS = [
    Raw(b'"\xff"'),
    Raw(b'"\xed\xa0\x80"'),
    Raw(b'"\\ud800"'),
    Raw(b'"\\udc00x"'),
    Raw(b'"\\ud83d\\ude00"'),
    Raw('"é"'.encode()),
    Raw(b'"a\\u0000"'),
    Raw(b'"\\u0061"'),
    "__metadata__",
    "",
]


def _tensor(layout: Layout, draw: Draw) -> Obj | None:
    indices = layout.tensors()
    if not indices:
        return None
    value: Obj = layout.header.pairs[draw(st.sampled_from(indices))][1]
    return value


def m_duplicate_tensor(layout: Layout, draw: Draw) -> None:
    indices = layout.tensors()
    if indices:
        key, value = layout.header.pairs[draw(st.sampled_from(indices))]
        copy = Obj(list(value.pairs))
        if draw(st.booleans()):
            copy.set("dtype", draw(st.sampled_from(["F32", "I32", "U8", "F16"])))
        layout.header.pairs.insert(draw(st.integers(0, len(layout.header.pairs))), (key, copy))


def m_duplicate_field(layout: Layout, draw: Draw) -> None:
    entry = _tensor(layout, draw)
    if entry is not None:
        name = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
        value = draw(st.sampled_from([entry.get(name), "I32", [1], [0, 4], [0, 0]]))
        entry.pairs.insert(draw(st.integers(0, len(entry.pairs))), (name, value))


def m_swap_offsets(layout: Layout, draw: Draw) -> None:
    a, b = _tensor(layout, draw), _tensor(layout, draw)
    if a is not None and b is not None:
        first, second = a.get("data_offsets"), b.get("data_offsets")
        a.set("data_offsets", second)
        b.set("data_offsets", first)


def m_shift_offsets(layout: Layout, draw: Draw) -> None:
    entry = _tensor(layout, draw)
    offsets = entry.get("data_offsets") if entry is not None else None
    if entry is not None and isinstance(offsets, list) and len(offsets) == 2:
        begin, end = (o + draw(st.integers(-8, 8)) if isinstance(o, int) else o for o in offsets)
        entry.set("data_offsets", [begin, end])


def m_odd_offsets(layout: Layout, draw: Draw) -> None:
    entry = _tensor(layout, draw)
    if entry is not None:
        begin, end = entry.get("data_offsets")
        token = draw(st.sampled_from(ODD_NUMBERS))
        pair = (Raw(token), end) if draw(st.booleans()) else (begin, Raw(token))
        entry.set("data_offsets", list(pair))


def m_trailing(layout: Layout, draw: Draw) -> None:
    layout.data += draw(st.binary(min_size=1, max_size=16))


def m_truncate(layout: Layout, draw: Draw) -> None:
    layout.data = layout.data[: len(layout.data) - draw(st.integers(1, 16))]


def m_shape(layout: Layout, draw: Draw) -> None:
    entry = _tensor(layout, draw)
    if entry is not None:
        shape = entry.get("shape")
        odd = draw(st.sampled_from(ODD_SHAPES))
        if isinstance(shape, list) and shape and draw(st.booleans()):
            odd = list(shape)
            odd[draw(st.integers(0, len(odd) - 1))] = draw(st.integers(0, 5))
        entry.set("shape", odd)


def m_dtype(layout: Layout, draw: Draw) -> None:
    entry = _tensor(layout, draw)
    if entry is not None:
        entry.set("dtype", draw(st.sampled_from(ODD_DTYPES)))


def m_metadata(layout: Layout, draw: Draw) -> None:
    pairs = [(k, v) for k, v in layout.header.pairs if k != "__metadata__" or draw(st.booleans())]
    pairs.insert(
        draw(st.integers(0, len(pairs))), ("__metadata__", draw(st.sampled_from(ODD_METADATA)))
    )
    layout.header.pairs = pairs


def m_header_length(layout: Layout, draw: Draw) -> None:
    layout.length_delta = draw(
        st.sampled_from(
            [-3, -1, 1, 3, len(layout.data), len(layout.data) + 1, 1 << 40, 100_000_001]
        )
    )


def m_padding(layout: Layout, draw: Draw) -> None:
    if draw(st.booleans()):
        layout.trail += draw(
            st.sampled_from([b" " * 7, b"\t", b"\n", b"\r\n", b"\x00", b" \x00", b"\x0c", b" }"])
        )
    else:
        layout.lead += draw(st.sampled_from([b" ", b"\n", b"\xef\xbb\xbf", b"\x00"]))


def m_encoding(layout: Layout, draw: Draw) -> None:
    indices = layout.tensors()
    if indices and draw(st.booleans()):
        at = draw(st.sampled_from(indices))
        layout.header.pairs[at] = (draw(st.sampled_from(ODD_KEYS)), layout.header.pairs[at][1])
    else:
        layout.utf16 = True


def m_empty(layout: Layout, draw: Draw) -> None:
    layout.header.pairs = [(k, v) for k, v in layout.header.pairs if k == "__metadata__"]
    if draw(st.booleans()):
        layout.data = b""


def m_extra_field(layout: Layout, draw: Draw) -> None:
    entry = _tensor(layout, draw)
    if entry is not None:
        entry.pairs.append((draw(st.sampled_from(["x", "offsets", "DTYPE"])), [0, 4]))


def m_rename(layout: Layout, draw: Draw) -> None:
    indices = layout.tensors()
    if len(indices) >= 2:
        a, b = draw(st.permutations(indices))[:2]
        layout.header.pairs[a] = (layout.header.pairs[b][0], layout.header.pairs[a][1])


def m_reorder(layout: Layout, draw: Draw) -> None:
    layout.header.pairs = draw(st.permutations(layout.header.pairs))


MUTATIONS = [
    m_duplicate_tensor,
    m_duplicate_field,
    m_swap_offsets,
    m_shift_offsets,
    m_odd_offsets,
    m_trailing,
    m_truncate,
    m_shape,
    m_dtype,
    m_metadata,
    m_header_length,
    m_padding,
    m_encoding,
    m_empty,
    m_extra_field,
    m_rename,
    m_reorder,
]


# ---- the readers, each outcome a dict of (dtype, shape, bytes) or a refusal ----------------

Tensors = dict[str, tuple[torch.dtype, tuple[int, ...], bytes]]


def _described(tensors: dict[str, torch.Tensor]) -> Tensors:
    return {
        name: (
            t.dtype,
            tuple(t.shape),
            t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes(),
        )
        for name, t in tensors.items()
    }


def real_load(path: Path) -> Tensors | BaseException:
    try:
        return _described(load_file(str(path)))
    except BaseException as exc:  # also pyo3's PanicException, a BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return exc


def weightvault_load(path: Path) -> Tensors | WeightvaultError:
    sign(path, SIGNER)
    try:
        return _described(load.safetensors(path, verifier=VERIFIER))
    except WeightvaultError as exc:
        return exc


@dataclass(frozen=True)
class Outcomes:
    real: Tensors | BaseException
    loader: Tensors | WeightvaultError
    scan_status: str
    scan_errors: tuple[str, ...]
    fingerprint: BaseException | None


def outcomes(blob: bytes) -> Outcomes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m" / "model.safetensors"
        path.parent.mkdir()
        path.write_bytes(blob)
        real = real_load(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loader = weightvault_load(path)
        scanned = scan_file(path)
        try:
            with path.open("rb") as handle:
                read_header(handle, "model.safetensors")
            fingerprint = None
        except BaseException as exc:
            fingerprint = exc
    return Outcomes(real, loader, scanned.status, scanned.errors, fingerprint)


def check(blob: bytes) -> Outcomes:
    got = outcomes(blob)
    # 1. whatever weightvault loads, the real library loads the same way
    if isinstance(got.loader, dict):
        assert isinstance(got.real, dict), f"weightvault loads, safetensors refuses: {got.real}"
        assert got.loader == got.real
    # 2. whatever the real library refuses, weightvault refuses with its own error
    if not isinstance(got.real, dict):
        assert isinstance(got.loader, WeightvaultError), "safetensors refuses, weightvault loads"
        assert "\n" not in str(got.loader)
    # 3. the other readers: only weightvault's errors
    assert got.fingerprint is None or isinstance(got.fingerprint, WeightvaultError), repr(
        got.fingerprint
    )
    assert not any("internal error" in e for e in got.scan_errors), got.scan_errors
    # 4. a clean verdict: one reading, the loader's and the real library's, or a dtype the
    # loader does not build
    if got.scan_status == "safe":
        if isinstance(got.loader, dict):
            assert got.real == got.loader
        else:
            assert "unsupported dtype" in str(got.loader), got.loader
    return got


def _base(draw: Draw) -> bytes:
    dtypes = [
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.float64,
        torch.int32,
    ]
    names = st.sampled_from(["a", "b", "w.0", "layer.bias", "z"])
    specs = st.tuples(st.sampled_from(dtypes), st.lists(st.integers(0, 3), max_size=3))
    tensors = {}
    for name, (dtype, shape) in draw(st.dictionaries(names, specs, max_size=3)).items():
        count = 1
        for dim in shape:
            count *= dim
        tensors[name] = (torch.arange(count) % 7).to(dtype).reshape(shape)
    metadata = {"format": "pt"} if draw(st.booleans()) else None
    return save_torch(tensors, metadata=metadata)


# ---- the tests -----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.data())
def test_unmutated_files_read_the_same_everywhere(data: st.DataObject) -> None:
    got = check(_base(data.draw))
    assert isinstance(got.loader, dict) and got.scan_status == "safe" and got.fingerprint is None


@settings(
    max_examples=600,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.data())
def test_mutated_files_read_the_same_or_are_refused(data: st.DataObject) -> None:
    layout = Layout.of(_base(data.draw))
    for mutation in data.draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3)):
        mutation(layout, data.draw)
    check(layout.blob())


def _file(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


_E = b'{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'


@pytest.mark.parametrize(
    ("header", "data"),
    [
        # safetensors refuses these; the loader used to load them (fixed in load/_formats.py)
        (b'{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4)),
        (b'{"a":{"dtype":"F32","shape":[-0,1],"data_offsets":[0,0]}}', b""),
        (b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[-0,4]}}', bytes(4)),
        (b'{"__metadata__":{"x":NaN},"a":' + _E + b"}", bytes(4)),
        (b'{"__metadata__":{"x":1},"a":' + _E + b"}", bytes(4)),
        (b'{"__metadata__":' + _E + b"}", b""),
        (b'{"\\ud800":' + _E + b"}", bytes(4)),
        (b'{"\xed\xa0\x80":' + _E + b"}", bytes(4)),  # a surrogate encoded in UTF-8
        (('{"a":' + _E.decode() + "}").encode("utf-16-le"), bytes(4)),
        (b'\xef\xbb\xbf{"a":' + _E + b"}", bytes(4)),
        # ... and these raised TypeError / RuntimeError / ValueError / RecursionError
        (b'{"a":{"dtype":"F32","shape":[0,%d],"data_offsets":[0,0]}}' % 2**70, b""),
        (b'{"a":{"dtype":"F32","shape":[%d,%d,0],"data_offsets":[0,0]}}' % (2**40, 2**40), b""),
        (b'{"a":{"dtype":["F32"],"shape":[1],"data_offsets":[0,4]}}', bytes(4)),
        (b'{"a":{"dtype":"F32","shape":[1' + b"0" * 5000 + b'],"data_offsets":[0,4]}}', bytes(4)),
        (b'{"__metadata__":' + b"[" * 100_000 + b"]" * 100_000 + b"}", b""),
    ],
    ids=[
        "dup-field",
        "neg0-shape",
        "neg0-offset",
        "meta-nan",
        "meta-int",
        "meta-tensorlike",
        "escaped-surrogate",
        "utf8-surrogate",
        "utf16",
        "bom",
        "dim-past-u64",
        "count-overflow",
        "list-dtype",
        "5000-digits",
        "deep-nesting",
    ],
)
def test_known_divergences(header: bytes, data: bytes) -> None:
    """Each finding, minimal: safetensors refuses the file and so, now, do the loader and the
    scanner (which passed the ``-0`` offset and the escaped surrogate)."""
    got = check(_file(header, data))
    assert not isinstance(got.real, dict) and isinstance(got.loader, WeightvaultError)
    assert got.scan_status == "error", got.scan_errors


@pytest.mark.parametrize(
    "header",
    [
        b'{"a":' + _E + b',"a":' + _E + b"}",
        b'{"__metadata__":{"x":"1","x":"2"},"a":' + _E + b"}",
        b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}',
    ],
    ids=["duplicate-tensor", "duplicate-metadata-key", "extra-field"],
)
def test_deliberately_stricter(header: bytes) -> None:
    """Loaded by safetensors, refused by the loader and flagged by the scanner (docstring)."""
    got = check(_file(header, bytes(4)))
    assert isinstance(got.real, dict) and isinstance(got.loader, WeightvaultError)
    assert got.scan_status == "error"


@pytest.mark.parametrize(
    ("dtype", "count", "nbytes", "real_loads"),
    [("F8_E8M0", 4, 4, True), ("F4", 2, 1, True), ("F6_E2M3", 4, 3, False)],
)
def test_dtypes_the_loader_does_not_build(
    dtype: str, count: int, nbytes: int, real_loads: bool
) -> None:
    """The scanner passes a well-formed file of any safetensors dtype; the loader refuses the
    ones it does not build, by name (safetensors' torch side lacks ``F6_*`` as well)."""
    entry = {"dtype": dtype, "shape": [count], "data_offsets": [0, nbytes]}
    got = check(_file(json.dumps({"a": entry}).encode(), bytes(nbytes)))
    assert got.scan_status == "safe" and isinstance(got.real, dict) is real_loads
    assert isinstance(got.loader, WeightvaultError) and "unsupported dtype" in str(got.loader)
