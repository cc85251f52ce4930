"""The pickle interpreter: C-unpickler semantics, streaming, malformed input, fuzzing."""

from __future__ import annotations

import io
import pickle
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightvault.scan import Severity, scan_file, scan_paths
from weightvault.scan._engine import FileContext, ScanLimits
from weightvault.scan._io import ByteReader
from weightvault.scan.formats.pickle import PickleError, PickleMachine
from weightvault.scan.policy import DEFAULT_POLICY, Policy


def _scan_bytes(tmp_path: Path, data: bytes, name: str = "x.pkl"):  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_bytes(data)
    return scan_file(path)


def _bu(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def _subjects(result) -> list[str]:  # type: ignore[no-untyped-def]
    return [f.subject for f in result.findings]


def test_benign_pickles_of_every_protocol_are_safe(tmp_path: Path) -> None:
    value = {"a": [1, 2.5, -3, 2**70, None, True], "b": ("x", b"y" * 300), "c": {1, 2},
             "d": bytearray(b"z"), "e": frozenset({3})}
    for proto in range(6):
        result = _scan_bytes(tmp_path, pickle.dumps(value, protocol=proto), f"p{proto}.pkl")
        assert result.status == "safe", (proto, result)
        assert result.format == "pickle"


def test_frame_longer_than_the_data_is_refused_and_its_payload_reported(tmp_path: Path) -> None:
    """The C unpicklers stop at such a FRAME; the pure-Python one runs the opcodes it has (up to
    STOP): a disagreement, so the file is refused, and what the Python reader runs is reported."""
    payload = _bu("os") + _bu("system") + b"\x93(" + _bu("true") + b"tR."
    data = b"\x80\x04\x95" + struct.pack("<Q", 10_000) + payload
    result = _scan_bytes(tmp_path, data)
    assert result.errors and "FRAME declares 10000 bytes" in result.errors[0]
    assert "os.system" in _subjects(result)
    assert result.max_severity == Severity.DANGEROUS


@pytest.mark.parametrize("frame", [3, 7, 8, 11])
def test_an_argument_crossing_a_frame_end_is_refused(tmp_path: Path, frame: int) -> None:
    """A read that straddles a frame's end: pickle.load(file) discards the frame's rest,
    pickle.loads reads on, the Python unpickler fails. The readers disagree, so the file is
    malformed (never safe), wherever the cut is."""
    payload = _bu("os") + _bu("system") + b"\x93(" + _bu("true") + b"tR."
    data = b"\x80\x04\x95" + struct.pack("<Q", frame) + payload
    result = _scan_bytes(tmp_path, data)
    assert result.errors and "crosses the end of its FRAME" in result.errors[0], result
    assert result.status != "safe"


@pytest.mark.parametrize("frame", [1, 2, 5, 6])
def test_a_frame_ending_between_two_reads_is_read_on(tmp_path: Path, frame: int) -> None:
    """After an opcode byte, or a length before its data: every reader then reads on from the
    file (the C file reader's buffer is exhausted, the Python one drops its empty frame)."""
    payload = _bu("os") + _bu("system") + b"\x93(" + _bu("true") + b"tR."
    data = b"\x80\x04\x95" + struct.pack("<Q", frame) + payload
    result = _scan_bytes(tmp_path, data)
    assert not result.errors, result
    assert _subjects(result) == ["os.system"]


def test_frames_that_end_on_opcode_boundaries_are_read_on(tmp_path: Path) -> None:
    body = _bu("os") + _bu("system")
    data = (b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body
            + b"\x95" + struct.pack("<Q", 4) + b"\x93)R.")
    result = _scan_bytes(tmp_path, data)
    assert not result.errors
    assert _subjects(result) == ["os.system"]
    assert result.findings[0].usage == "called"


@pytest.mark.parametrize(("data", "message"), [
    # a FRAME inside a frame that has bytes left: the Python unpickler refuses it
    (b"\x80\x04\x95" + struct.pack("<Q", 20) + b"N0\x95" + struct.pack("<Q", 2) + b"N."
     + b"N" * 9, "before the end of the previous frame"),
    # STOP with bytes of its frame left: loaders disagree on where the next read starts
    (b"\x80\x04\x95" + struct.pack("<Q", 5) + b"N.NNN", "STOP before the end of its FRAME"),
    # a text line (GLOBAL) that runs past the frame's end
    (b"\x80\x04\x95" + struct.pack("<Q", 3) + b"cos\nsystem\n.", "crosses the end"),
])
def test_other_frame_disagreements_are_refused(tmp_path: Path, data: bytes, message: str) -> None:
    result = _scan_bytes(tmp_path, data)
    assert result.errors and message in result.errors[0], result


def test_memo_assembled_stack_global_is_resolved(tmp_path: Path) -> None:
    data = (b"\x80\x04" + _bu("subprocess") + b"\x94" + _bu("Popen") + b"\x94" + b"00"
            + b"h\x00h\x01\x93.")
    result = _scan_bytes(tmp_path, data)
    assert _subjects(result) == ["subprocess.Popen"]
    assert result.max_severity == Severity.DANGEROUS


def test_unresolvable_stack_global_is_dangerous(tmp_path: Path) -> None:
    data = b"\x80\x04" + b"B" + struct.pack("<I", 70_000) + b"o" * 70_000 + _bu("system") + b"\x93."
    result = _scan_bytes(tmp_path, data)
    assert result.max_severity == Severity.DANGEROUS
    assert result.errors


@pytest.mark.parametrize(("module", "name", "effective"), [
    ("__builtin__", "eval", "builtins.eval"),
    ("copy_reg", "_reconstructor", "copyreg._reconstructor"),
    ("commands", "getoutput", "subprocess.getoutput"),
    ("urllib2", "urlopen", "urllib.request.urlopen"),
])
def test_python2_names_are_remapped_for_protocols_below_3(
    tmp_path: Path, module: str, name: str, effective: str
) -> None:
    data = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."
    result = _scan_bytes(tmp_path, data)
    assert effective in _subjects(result)


def test_copyreg_reconstructor_is_safe_when_called_and_its_class_counts_as_called(
    tmp_path: Path,
) -> None:
    assert DEFAULT_POLICY.classify("copyreg", "_reconstructor").severity == Severity.SAFE
    assert DEFAULT_POLICY.classify(
        "copyreg", "_reconstructor", called=False
    ).severity == Severity.UNKNOWN
    # protocol 0: the class handed to _reconstructor is instantiated, so it is "called"
    data = b"ccopy_reg\n_reconstructor\n(ctorch._C._nn\ngelu\ncbuiltins\nobject\nNtR."
    result = _scan_bytes(tmp_path, data)
    assert [(f.subject, f.usage, f.severity) for f in result.findings] == [
        ("torch._C._nn.gelu", "called", Severity.UNKNOWN)
    ]


@pytest.mark.parametrize(("module", "name"), [
    ("pathlib", "os.system"), ("mimetypes", "os.popen"), ("builtins", "eval.__call__"),
    ("torch._utils", "_rebuild_tensor_v2.__globals__"), ("collections", "OrderedDict.__class__"),
    ("numpy", "load"), ("os.path", "join"), ("importlib.util", "spec_from_file_location"),
])
def test_dotted_and_sub_module_names_are_dangerous(module: str, name: str) -> None:
    assert DEFAULT_POLICY.classify(module, name).severity == Severity.DANGEROUS


def test_allow_list_and_user_allow() -> None:
    assert DEFAULT_POLICY.classify("torch._utils", "_rebuild_tensor_v2").severity == Severity.SAFE
    assert DEFAULT_POLICY.classify("mypkg", "Layer").severity == Severity.UNKNOWN
    policy = Policy.with_allowed(["mypkg.Layer", "other.*"])
    assert policy.classify("mypkg", "Layer").severity == Severity.SAFE
    assert policy.classify("other.sub", "Thing").severity == Severity.SAFE
    assert policy.classify("mypkg", "Other").severity == Severity.UNKNOWN
    # --allow never downgrades a dangerous import
    assert Policy.with_allowed(["os.system"]).classify("os", "system").severity == (
        Severity.DANGEROUS
    )
    with pytest.raises(ValueError):
        Policy.with_allowed(["bad name"])


def test_stacked_pickles_are_all_read(tmp_path: Path) -> None:
    evil = b"\x80\x04" + _bu("os") + _bu("system") + b"\x93."
    data = pickle.dumps(1) + pickle.dumps("two") + evil
    result = _scan_bytes(tmp_path, data)
    assert "os.system" in _subjects(result)
    assert "stacked" in result.format


def test_garbage_after_a_pickle_is_an_error(tmp_path: Path) -> None:
    result = _scan_bytes(tmp_path, pickle.dumps({"a": 1}) + b"\xff\xfe")
    assert result.errors and result.status == "error"


@pytest.mark.parametrize("cut", [1, 2, 5, 20, 60])
def test_truncated_pickle_is_an_error_never_clean(tmp_path: Path, cut: int) -> None:
    data = pickle.dumps({"w": np.arange(10.0), "k": "v"}, protocol=4)
    result = _scan_bytes(tmp_path, data[:-cut])
    assert result.status != "safe"
    assert result.errors


def test_bytes_are_skipped_not_read(tmp_path: Path) -> None:
    """A 64 MiB pickle of arrays scans with a few MiB of Python memory (seek, not read)."""
    path = tmp_path / "arrays.pkl"
    with open(path, "wb") as handle:
        pickle.dump({f"w{i}": np.full(2 << 20, i, dtype=np.float32) for i in range(8)}, handle,
                    protocol=4)
    tracemalloc.start()
    try:
        result = scan_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.status == "safe"
    assert path.stat().st_size > 60 << 20
    assert peak < 4 << 20, peak


def test_value_limit_stops_pathological_pickles(tmp_path: Path) -> None:
    data = b"\x80\x04]" + b"N" * 2000 + b"."
    path = tmp_path / "many.pkl"
    path.write_bytes(data)
    result = scan_file(path, limits=ScanLimits(max_pickle_values=1000))
    assert result.errors and "more than 1000 opcodes" in result.errors[0]


def test_nested_pickle_depth_is_bounded(tmp_path: Path) -> None:
    inner = b"\x80\x04" + _bu("os") + _bu("system") + b"\x93."
    for _ in range(8):
        inner = pickle.dumps({"b": inner}, protocol=4)
    result = _scan_bytes(tmp_path, inner)
    assert result.max_severity >= Severity.UNKNOWN
    assert any("nested more than" in f.message for f in result.findings)


def test_findings_before_an_error_are_kept() -> None:
    data = b"\x80\x04" + _bu("os") + _bu("system") + b"\x93(" + _bu("x") + b"tRh\x07."
    ctx = FileContext("mem", DEFAULT_POLICY, ScanLimits())
    machine = PickleMachine(ctx, "")
    with pytest.raises(PickleError) as info:
        machine.run_one(ByteReader(io.BytesIO(data), 0, len(data)))
    assert [f.subject for f in info.value.run.findings] == ["os.system"]  # type: ignore[attr-defined]


_BENIGN = pickle.dumps({"w": np.arange(4, dtype=np.float32), "n": [1, "a", (2.0, None)]},
                       protocol=2)


def _scan_fuzz(data: bytes) -> None:
    ctx = FileContext("fuzz", DEFAULT_POLICY, ScanLimits(max_pickle_values=100_000))
    reader = ByteReader(io.BytesIO(data), 0, len(data))
    from weightvault.scan.formats.pickle import scan_pickle_file

    scan_pickle_file(reader, ctx, "", claimed=True)
    # every run ends in either a verdict or an error: never an exception
    assert all(f.severity in Severity for f in ctx.findings)


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data: bytes) -> None:
    _scan_fuzz(data)


@settings(max_examples=300, deadline=2000)
@given(st.lists(st.tuples(st.integers(0, len(_BENIGN) - 1), st.integers(0, 255)), max_size=6))
def test_mutated_pickles_never_crash(flips: list[tuple[int, int]]) -> None:
    data = bytearray(_BENIGN)
    for index, value in flips:
        data[index] = value
    _scan_fuzz(bytes(data))


@settings(max_examples=100, deadline=2000)
@given(st.integers(0, len(_BENIGN) - 1))
def test_every_truncation_is_an_error(cut: int) -> None:
    ctx = FileContext("fuzz", DEFAULT_POLICY, ScanLimits())
    data = _BENIGN[:cut]
    from weightvault.scan.formats.pickle import scan_pickle_file

    scan_pickle_file(ByteReader(io.BytesIO(data), 0, len(data)), ctx, "", claimed=True)
    assert ctx.errors


def test_directory_scan_continues_after_unreadable_files(tmp_path: Path) -> None:
    (tmp_path / "good.pkl").write_bytes(pickle.dumps([1, 2]))
    (tmp_path / "bad.pkl").write_bytes(b"\x80\x04\x95")
    (tmp_path / "evil.pkl").write_bytes(b"\x80\x04" + _bu("os") + _bu("system") + b"\x93.")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    report = scan_paths([tmp_path, tmp_path / "missing.pkl"])
    statuses = {Path(r.path).name: r.status for r in report.files}
    assert statuses == {"bad.pkl": "error", "evil.pkl": "dangerous", "good.pkl": "safe",
                        "link": "error", "missing.pkl": "error"}
    assert all("\n" not in message for _, message in report.errors)


def test_results_do_not_depend_on_the_number_of_workers(corpus_root: Path) -> None:
    one = scan_paths([corpus_root], workers=1)
    two = scan_paths([corpus_root], workers=2)
    three = scan_paths([corpus_root], workers=3)
    assert len(one.files) > 64
    assert one.to_json() == two.to_json() == three.to_json()
