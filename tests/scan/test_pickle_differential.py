"""Differential tests: the scanner sees every global that any real unpickler would resolve.

Generated and mutated opcode streams (protocols 0-5, FRAME splits with right and wrong lengths,
memo tricks, STACK_GLOBAL with strings from the memo and from text opcodes, byte flips) are fed
to the real unpicklers in a child process:

* ``pickle.Unpickler`` (C) reading a *file*, buffered (``peek``) and unbuffered (``FileIO``:
  every read is a ``read(n)``, as in ``_pickle.c`` when a frame or argument is larger than the
  prefetch),
* ``pickle.loads`` (C, reading bytes),
* ``pickle._Unpickler`` (pure Python),
* ``torch.load(weights_only=True)``'s reader (``torch._weights_only_unpickler``, pure Python).

``find_class`` is overridden to *record* every ``(module, name)`` and return an inert dummy
class; ``pickle.loads`` cannot be given a ``find_class``, so there the ``pickle.find_class``
audit hook records and plants inert stand-in modules in ``sys.modules`` for the duration of the
call (restored after). Nothing real is ever imported or called. The property: the globals the
scanner judged are a superset of what every real unpickler resolved, or the scanner refused the
file (an error, never "safe").
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightvault.scan import scan_file
from weightvault.scan.policy import Judgement, Policy

HARNESS = r'''
import _compat_pickle, base64, io, json, os, pickle, resource, signal, sys, types, warnings

resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
warnings.simplefilter("ignore")
RECORD = []


class _Meta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _dummy()


class _Dummy(metaclass=_Meta):
    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return _dummy()()

    def __setstate__(self, state):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass

    def add(self, item):
        pass

    def __setitem__(self, key, value):
        pass


def _dummy():
    return _Meta("Dummy", (_Dummy,), {})


def _record(module, name):
    RECORD.append([module, name])
    return _dummy()


class CFile(pickle.Unpickler):
    def find_class(self, module, name):
        return _record(module, name)


class PyUnpickler(pickle._Unpickler):
    def find_class(self, module, name):
        return _record(module, name)


class _FakeModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _dummy()


_MISSING = object()
PLANTED = {}
ACTIVE = [False]


def _plant(module):
    for candidate in (module, _compat_pickle.IMPORT_MAPPING.get(module, module)):
        parts = candidate.split(".")
        if not all(part.isidentifier() for part in parts):
            continue
        for count in range(1, len(parts) + 1):
            key = ".".join(parts[:count])
            if key not in PLANTED:
                PLANTED[key] = sys.modules.get(key, _MISSING)
                sys.modules[key] = _FakeModule(key)


def _audit(event, args):
    if event == "pickle.find_class" and ACTIVE[0]:
        module, name = args
        RECORD.append([module, name])
        if isinstance(module, str):
            _plant(module)
            mapped = _compat_pickle.NAME_MAPPING.get((module, name))
            if mapped:
                _plant(mapped[0])


sys.addaudithook(_audit)


def _loads(data):
    ACTIVE[0] = True
    try:
        pickle.loads(data)
    finally:
        ACTIVE[0] = False
        for key, old in PLANTED.items():
            if old is _MISSING:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = old
        PLANTED.clear()


try:
    import torch._weights_only_unpickler as wo
except Exception:
    wo = None
if wo is not None:
    _allowed = {key: _dummy() for key in wo._get_allowed_globals()}
    wo._get_allowed_globals = lambda: _allowed
    wo._get_user_allowed_globals = lambda: {}

    def _read_global(readline):
        module = readline()[:-1].decode("utf-8")
        name = readline()[:-1].decode("utf-8")
        RECORD.append([module, name])
        if (module, name) in wo.NAME_MAPPING:
            return wo.NAME_MAPPING[(module, name)]
        return wo.IMPORT_MAPPING.get(module, module), name

    wo._read_global_instruction = _read_global


def _timeout(signum, frame):
    raise TimeoutError


signal.signal(signal.SIGALRM, _timeout)
path = sys.argv[1]


def run(loader):
    del RECORD[:]
    signal.alarm(5)
    try:
        loader()
    except BaseException as exc:
        if not isinstance(exc, Exception | TimeoutError):
            raise
    finally:
        signal.alarm(0)
    return list(RECORD)


def c_file():
    with open(path, "rb") as handle:
        CFile(handle).load()


def c_file_unbuffered():
    with open(path, "rb", buffering=0) as handle:
        CFile(handle).load()


for line in sys.stdin:
    data = base64.b64decode(line)
    with open(path, "wb") as handle:
        handle.write(data)
    result = {
        "c_file": run(c_file),
        "c_file_unbuffered": run(c_file_unbuffered),
        "c_bytes": run(lambda: _loads(data)),
        "python": run(lambda: PyUnpickler(io.BytesIO(data)).load()),
    }
    if wo is not None:
        result["weights_only"] = run(lambda: wo.Unpickler(io.BytesIO(data)).load())
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
'''


class _Harness:
    """The real unpicklers in one child process, fed one case per line (base64)."""

    def __init__(self, workdir: Path) -> None:
        script = workdir / "harness.py"
        script.write_text(HARNESS)
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(script), str(workdir / "case.pkl")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def resolve(self, cases: list[bytes]) -> list[dict[str, list[list[str]]]]:
        import base64

        assert self.proc.stdin is not None and self.proc.stdout is not None
        payload = "".join(base64.b64encode(case).decode() + "\n" for case in cases)
        self.proc.stdin.write(payload)
        self.proc.stdin.flush()
        return [json.loads(self.proc.stdout.readline()) for _ in cases]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Harness]:
    running = _Harness(tmp_path_factory.mktemp("harness"))
    yield running
    running.close()


class _Recording(Policy):
    """The default policy, recording every ``(module, name)`` the scanner judged (as written in
    the stream: what ``find_class`` would receive)."""

    __slots__ = ("seen",)

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def judge(self, module: str, name: str, protocol: int = 4) -> Judgement:
        self.seen.add((module, name))
        return super().judge(module, name, protocol)


def _scanner_view(path: Path, data: bytes) -> tuple[set[tuple[str, str]], tuple[str, ...]]:
    path.write_bytes(data)
    policy = _Recording()
    result = scan_file(path, policy=policy)
    return policy.seen, result.errors


def _check(harness: _Harness, tmp_path: Path, cases: list[bytes]) -> list[str]:
    """The cases the scanner refused (by reason); fails on any case where a real unpickler
    resolved a global the scanner did not judge and the scanner did not refuse the file."""
    refused: list[str] = []
    for data, resolved in zip(cases, harness.resolve(cases), strict=True):
        seen, errors = _scanner_view(tmp_path / "case.pkl", data)
        missed = {
            loader: sorted({(m, n) for m, n in names} - seen)
            for loader, names in resolved.items()
            if {(m, n) for m, n in names} - seen
        }
        if errors:
            refused.append(errors[0])
            continue
        assert not missed, (data, missed, seen)
    return refused


# -- generated programs --------------------------------------------------------------------------

_MODULES = ["os", "posix", "builtins", "__builtin__", "copy_reg", "collections", "mypkg.sub",
            "torch._utils", "a.b", "subprocess"]
_NAMES = ["system", "OrderedDict", "eval", "Block", "x.y", "_reconstructor", "getattr", "Popen",
          "_rebuild_tensor_v2"]
_TEXTS = _MODULES + _NAMES


def _u32(n: int) -> bytes:
    return struct.pack("<I", n)


def _string(kind: str, text: str) -> bytes:
    data = text.encode()
    if kind == "short":
        return b"\x8c" + bytes([len(data)]) + data
    if kind == "bin":
        return b"X" + _u32(len(data)) + data
    if kind == "bin8":
        return b"\x8d" + struct.pack("<Q", len(data)) + data
    if kind == "unicode":
        return b"V" + data + b"\n"
    if kind == "string":
        return b"S'" + data + b"'\n"
    if kind == "binstring":
        return b"U" + bytes([len(data)]) + data
    return b"T" + _u32(len(data)) + data


_STRING_KINDS = ["short", "bin", "bin8", "unicode", "string", "binstring", "binstring4"]


@st.composite
def _op(draw: st.DrawFn) -> bytes:
    """One opcode, or a short idiom (an import through STACK_GLOBAL with memo-routed strings)."""
    kind = draw(st.integers(0, 11))
    if kind == 0:  # GLOBAL / INST text import
        module, name = draw(st.sampled_from(_MODULES)), draw(st.sampled_from(_NAMES))
        if draw(st.booleans()):
            return b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        return b"(i" + module.encode() + b"\n" + name.encode() + b"\n"
    if kind in (1, 2):  # STACK_GLOBAL with strings from any string opcode, maybe via the memo
        out = b""
        for pool in (_MODULES, _NAMES):
            text = draw(st.sampled_from(pool if draw(st.integers(0, 4)) else _TEXTS))
            out += _string(draw(st.sampled_from(_STRING_KINDS)), text)
            slot = draw(st.integers(0, 3))
            how = draw(st.integers(0, 4))
            if how == 1:  # through the memo and back
                out += b"q" + bytes([slot]) + b"0h" + bytes([slot])
            elif how == 2:
                out += b"p" + str(slot).encode() + b"\n0g" + str(slot).encode() + b"\n"
            elif how == 3:
                out += b"\x94"
        return out + b"\x93"
    if kind == 3:  # memo
        slot = draw(st.integers(0, 3))
        return draw(st.sampled_from([
            b"q" + bytes([slot]), b"h" + bytes([slot]), b"\x94", b"r" + _u32(slot),
            b"j" + _u32(slot), b"p" + str(slot).encode() + b"\n", b"g" + str(slot).encode() + b"\n",
        ]))
    if kind == 4:  # strings
        return _string(draw(st.sampled_from(_STRING_KINDS)), draw(st.sampled_from(_TEXTS)))
    if kind == 5:  # calls and builders
        return draw(st.sampled_from([b"R", b"\x81", b"\x92", b"b", b"o", b"a", b"e", b"s", b"u",
                                     b"\x90", b"t", b"\x85", b"\x86", b"\x87", b"l", b"d"]))
    if kind == 6:  # stack shape
        return draw(st.sampled_from([b"(", b"0", b"1", b"2", b")", b"]", b"}", b"\x8f", b"N",
                                     b"\x88", b"\x89"]))
    if kind == 7:  # numbers
        return draw(st.sampled_from([b"K\x01", b"M\x01\x02", b"J\x01\x02\x03\x04", b"I1\n",
                                     b"I00\n", b"L5L\n", b"\x8a\x01\x05", b"F1.5\n",
                                     b"G" + struct.pack(">d", 2.5)]))
    if kind == 8:  # bytes, sometimes holding a pickle
        blob = draw(st.sampled_from([b"xy", b"\x80\x04\x8c\x02os\x8c\x06system\x93.", b"\x00" * 9]))
        return b"C" + bytes([len(blob)]) + blob if draw(st.booleans()) else b"B" + _u32(
            len(blob)) + blob
    if kind == 9:  # a protocol change mid-stream
        return b"\x80" + bytes([draw(st.integers(0, 5))])
    if kind == 10:  # the canonical call: import, argument tuple, REDUCE
        module, name = draw(st.sampled_from(_MODULES)), draw(st.sampled_from(_NAMES))
        return (_string("short", module) + _string("short", name) + b"\x93"
                + _string("short", "id") + b"\x85R")
    return b"."


@st.composite
def _value(draw: st.DrawFn, depth: int = 0) -> list[bytes]:
    """Opcodes that push exactly one value (a well-formed expression), one chunk per opcode, so
    that frames can be cut between any two of them."""
    kind = draw(st.integers(0, 7 if depth < 3 else 2))
    if kind == 0:
        return [_string(draw(st.sampled_from(_STRING_KINDS)), draw(st.sampled_from(_TEXTS)))]
    if kind == 1:
        return [draw(st.sampled_from([b"N", b"K\x07", b"I12\n", b"\x88", b"J\x00\x01\x00\x00"]))]
    if kind == 2:  # an import
        module, name = draw(st.sampled_from(_MODULES)), draw(st.sampled_from(_NAMES))
        if draw(st.booleans()):
            return [b"c" + module.encode() + b"\n" + name.encode() + b"\n"]
        chunks = []
        for text in (module, name):
            chunks.append(_string(draw(st.sampled_from(_STRING_KINDS)), text))
            if draw(st.booleans()):  # through the memo and back
                slot = draw(st.integers(0, 255))
                chunks += [b"q" + bytes([slot]), b"0", b"h" + bytes([slot])]
        return [*chunks, b"\x93"]
    if kind == 3:  # a call: REDUCE, NEWOBJ or INST
        how = draw(st.integers(0, 2))
        args = [c for _ in range(draw(st.integers(0, 2))) for c in draw(_value(depth + 1))]
        if how == 2:
            module, name = draw(st.sampled_from(_MODULES)), draw(st.sampled_from(_NAMES))
            return [b"(", *args, b"i" + module.encode() + b"\n" + name.encode() + b"\n"]
        func = draw(_value(depth + 1))
        return [*func, b"(", *args, b"t", b"R" if how == 0 else b"\x81"]
    if kind == 4:  # containers
        items = [c for _ in range(draw(st.integers(0, 3))) for c in draw(_value(depth + 1))]
        return draw(st.sampled_from([[b"(", *items, b"t"], [b"]", b"(", *items, b"e"],
                                     [b"(", *items, b"l"]]))
    if kind == 5:  # a dict
        pair = draw(_value(depth + 1)) + draw(_value(depth + 1))
        return [b"}", b"(", *pair, b"u"]
    if kind == 6:  # BUILD: state on an object
        return [*draw(_value(depth + 1)), *draw(_value(depth + 1)), b"b"]
    inner = draw(_value(depth + 1))  # memoized and fetched back
    slot = draw(st.integers(0, 3))
    return [*inner, b"p" + str(slot).encode() + b"\n", b"0", b"g" + str(slot).encode() + b"\n"]


@st.composite
def programs(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        chunks = draw(st.lists(_op(), min_size=1, max_size=14))
        if draw(st.integers(0, 3)):
            chunks.append(b".")
    else:
        chunks = [*draw(_value()), b"."]
    out = bytearray(b"\x80" + bytes([draw(st.integers(0, 5))]))
    index = 0
    while index < len(chunks):
        if draw(st.integers(0, 2)) == 0:  # a FRAME over the next few opcodes, length varied
            span = draw(st.integers(1, 5))
            body = b"".join(chunks[index : index + span])
            delta = draw(st.sampled_from([0] * 24 + [-1, 1, -2, 2, -5, 5, 1000, -3]))
            out += b"\x95" + struct.pack("<Q", max(0, len(body) + delta)) + body
            index += span
        else:
            out += chunks[index]
            index += 1
    for _ in range(draw(st.sampled_from([0, 0, 0, 0, 0, 1, 1, 2]))):  # mutations
        position = draw(st.integers(0, len(out)))
        action = draw(st.integers(0, 2))
        if action == 0 and position < len(out):
            out[position] = draw(st.integers(0, 255))
        elif action == 1:
            out[position:position] = bytes([draw(st.integers(0, 255))])
        elif position < len(out):
            del out[position]
    return bytes(out)


@settings(
    max_examples=8, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)
@given(st.lists(programs(), min_size=120, max_size=120))
def test_scanner_sees_every_global_any_unpickler_resolves(
    harness: _Harness, tmp_path: Path, cases: list[bytes]
) -> None:
    _check(harness, tmp_path, cases)


# -- known divergences: the harness sees them, and the scanner refuses them ------------------------


def _divergent_frame(size: int) -> bytes:
    """A frame whose last opcode's argument crosses its end. pickle.load on a file reads the
    frame with read(n) and takes the argument from the bytes after it (``posix`` + a
    STACK_GLOBAL call of ``posix.system``); pickle.loads takes it from the frame's rest and reads
    a harmless stream."""
    filler = b"N0" * ((size - 4) // 2)
    body = filler + b"\x8c\x05" + b"he"  # SHORT_BINUNICODE 5: only 2 bytes left in the frame
    after = b"posix" + b"\x8c\x06system\x93" + b"\x8c\x02id\x85R."
    return b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body + after


@pytest.mark.parametrize("size", [8, 10_000])
def test_a_frame_crossing_runs_a_payload_only_under_the_file_reader(
    harness: _Harness, tmp_path: Path, size: int
) -> None:
    data = _divergent_frame(size)
    (resolved,) = harness.resolve([data])
    unbuffered = {tuple(pair) for pair in resolved["c_file_unbuffered"]}
    assert ("posix", "system") in unbuffered
    assert ("posix", "system") not in {tuple(pair) for pair in resolved["c_bytes"]}
    assert ("posix", "system") not in {tuple(pair) for pair in resolved["python"]}
    if size > 8192:  # larger than the buffered reader's peek: plain pickle.load diverges too
        assert ("posix", "system") in {tuple(pair) for pair in resolved["c_file"]}
    _seen, errors = _scanner_view(tmp_path / "case.pkl", data)
    assert errors and "crosses the end of its FRAME" in errors[0]


def test_a_truncated_frame_runs_a_payload_only_under_the_python_reader(
    harness: _Harness, tmp_path: Path
) -> None:
    payload = b"\x8c\x02os\x8c\x06system\x93\x8c\x02id\x85R."
    data = b"\x80\x04\x95" + struct.pack("<Q", 1000) + payload
    (resolved,) = harness.resolve([data])
    assert resolved["python"] == [["os", "system"]]
    assert resolved["c_bytes"] == resolved["c_file"] == []
    seen, errors = _scanner_view(tmp_path / "case.pkl", data)
    assert ("os", "system") in seen and errors and "FRAME declares 1000" in errors[0]
    result = scan_file(tmp_path / "case.pkl")
    assert result.status == "dangerous"


def test_the_harness_resolves_without_importing(harness: _Harness, tmp_path: Path) -> None:
    """A sanity check of the harness itself: every reader records the import, nothing runs."""
    marker = tmp_path / "pwned"
    command = f"touch {marker}".encode()
    data = b"\x80\x02cos\nsystem\nX" + _u32(len(command)) + command + b"\x85R."
    (resolved,) = harness.resolve([data])
    for loader, names in resolved.items():
        assert names == [["os", "system"]], loader
    assert not marker.exists()
    assert set(resolved) >= {"c_file", "c_file_unbuffered", "c_bytes", "python"}
