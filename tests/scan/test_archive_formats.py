"""LZMA zip members, other zip methods, encryption, and 7z archives (py7zr): bounds, errors."""

from __future__ import annotations

import io
import lzma
import os
import pickle
import random
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import py7zr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from py7zr.properties import FILTER_DEFLATE64
from scan_corpus import _repack_zip, _sevenzip, build_corpus

from weightvault.scan import FileResult, ScanLimits, Severity, scan_file

EVIL = b"\x80\x04\x8c\x05posix\x8c\x06system\x93\x8c\x04true\x85R."  # posix.system('true')
CLEAN = pickle.dumps({"epoch": 3, "lr": 0.5}, protocol=4)
LZMA1 = {"id": lzma.FILTER_LZMA1, "dict_size": 1 << 16, "lc": 3, "lp": 0, "pb": 2}
LZMA1_PROPS = bytes([(2 * 5 + 0) * 9 + 3]) + struct.pack("<I", 1 << 16)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _raw_zip(members: list[tuple[str, int, int, bytes, int]]) -> bytes:
    """A zip written field by field: (name, method, flags, stored data, declared size)."""
    out = bytearray()
    central = bytearray()
    for name, method, flags, payload, size in members:
        raw_name = name.encode()
        offset = len(out)
        crc = zlib.crc32(payload)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 63, flags, method, 0, 0, crc,
                           len(payload), size, len(raw_name), 0) + raw_name + payload
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 63, 63, flags, method, 0, 0, crc,
                               len(payload), size, len(raw_name), 0, 0, 0, 0, 0,
                               offset) + raw_name
    count = len(members)
    return bytes(out + central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count,
                                             len(central), len(out), 0))


def _lzma_member(data: bytes, *, cut: int = 0, props: bytes = LZMA1_PROPS,
                 props_size: int | None = None) -> bytes:
    """A zip method-14 member body: version, properties size, properties, raw LZMA1 stream."""
    stream = lzma.compress(data, format=lzma.FORMAT_RAW, filters=[LZMA1])
    size = len(props) if props_size is None else props_size
    return b"\x10\x02" + struct.pack("<H", size) + props + stream[: len(stream) - cut]


def _one_error(result: FileResult) -> str:
    assert result.status != "safe"
    assert not any("internal error" in e for e in result.errors), result.errors
    assert all("\n" not in e and "Traceback" not in e for e in result.errors)
    assert len(result.errors) == 1, result.errors
    return result.errors[0]


# -- zip: LZMA (method 14) ---------------------------------------------------------------------


def test_lzma_zip_members_are_expanded_and_scanned(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_LZMA) as archive:
        archive.writestr("weights/readme.txt", EVIL)
        archive.writestr("clean.pkl", CLEAN)
    result = scan_file(_write(tmp_path, "m.zip", buffer.getvalue()))
    assert result.max_severity == Severity.DANGEROUS and not result.errors
    assert {f.location.split("@")[0] for f in result.findings} == {"weights/readme.txt"}


def test_lzma_zip_member_without_end_marker_ends_at_its_declared_size(tmp_path: Path) -> None:
    # Flag bit 1 clear: no end-of-stream marker; the stream ends with the member's data.
    body = _lzma_member(CLEAN, cut=5)  # the marker's bytes cut off: all data still decodable
    result = scan_file(_write(tmp_path, "m.zip", _raw_zip([("a.pkl", 14, 0, body, len(CLEAN))])))
    assert (result.status, result.errors) == ("safe", ())
    # Cut into the data itself: fewer bytes than declared come out, an error.
    body = _lzma_member(CLEAN, cut=12)
    error = _one_error(scan_file(_write(tmp_path, "m.zip", _raw_zip(
        [("a.pkl", 14, 0, body, len(CLEAN))]))))
    assert error.startswith("a.pkl: ") and "ended before its end marker" in error


def test_lzma_zip_hostile_dictionary_size_is_clamped(tmp_path: Path) -> None:
    props = LZMA1_PROPS[:1] + struct.pack("<I", 0xFFFFFFFF)
    body = _lzma_member(EVIL, props=props)
    result = scan_file(_write(tmp_path, "m.zip", _raw_zip([("a.pkl", 14, 2, body, len(EVIL))])))
    assert result.max_severity == Severity.DANGEROUS and not result.errors


@pytest.mark.parametrize(("body", "message"), [
    (_lzma_member(CLEAN, props=LZMA1_PROPS + b"\0", props_size=6), "properties size is 6"),
    (_lzma_member(CLEAN, props=b"", props_size=0), "properties size is 0"),
    (b"\x10\x02\x05", "header cut off"),
    (b"\x10\x02\x05\x00\x5d\x00", "properties cut off"),
    (_lzma_member(CLEAN, props=b"\xe1" + LZMA1_PROPS[1:]), "invalid LZMA properties byte"),
    (_lzma_member(CLEAN, props=bytes([(2 * 5 + 1) * 9 + 4]) + LZMA1_PROPS[1:]), "lc + lp > 4"),
    (b"\x10\x02\x05\x00" + LZMA1_PROPS + random.Random(7).randbytes(300), "not scanned"),
    (_lzma_member(CLEAN)[:-30], "not scanned"),
])
def test_malformed_lzma_zip_members_are_one_line_errors(
    tmp_path: Path, body: bytes, message: str
) -> None:
    data = _raw_zip([("a.pkl", 14, 2, body, len(CLEAN)), ("b.txt", 0, 0, b"ok", 2)])
    error = _one_error(scan_file(_write(tmp_path, "m.zip", data)))
    assert error.startswith("a.pkl: ") and message in error, error


def test_lzma_zip_bombs_are_bounded(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_LZMA) as archive:
        archive.writestr("big.bin", bytes(64 << 20))
    data = buffer.getvalue()
    assert len(data) < 64 << 10
    result = scan_file(_write(tmp_path, "bomb.zip", data))
    assert any("ratio" in f.message for f in result.findings) and result.errors
    # The same member declaring 1000 bytes: expanded, but capped at 1 MiB (a size that lied).
    body = _lzma_member(bytes(8 << 20))
    result = scan_file(_write(tmp_path, "liar.zip", _raw_zip([("big.bin", 14, 2, body, 1000)])))
    assert [f.subject for f in result.findings] == ["<compression bomb>"]
    assert "exceeds the limit of 1048576 bytes" in _one_error(result)


def test_npz_repacked_with_lzma_is_clean(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, a=np.arange(5), b=np.ones((2, 2)))
    npz = scan_file(_write(tmp_path, "a.npz", _repack_zip(buffer.getvalue(), zipfile.ZIP_LZMA)))
    assert (npz.format, npz.status, npz.errors) == ("npz", "safe", ())


# -- zip: other methods and encryption ---------------------------------------------------------


@pytest.mark.parametrize(("method", "name"), [
    (9, "deflate64"), (93, "zstandard"), (98, "PPMd"), (95, "xz"), (1, "shrink"),
    (6, "implode"), (200, "unknown"),
])
def test_unsupported_zip_methods_are_errors_naming_the_method(
    tmp_path: Path, method: int, name: str
) -> None:
    data = _raw_zip([("model.pkl", method, 0, b"\x00" * 64, 500)])
    error = _one_error(scan_file(_write(tmp_path, "m.zip", data)))
    assert f"zip compression method {method} ({name}) is not supported" in error


def test_aes_encrypted_member_is_an_error(tmp_path: Path) -> None:
    data = _raw_zip([("model.pkl", 99, 1, os.urandom(80), 64)])
    result = scan_file(_write(tmp_path, "m.zip", data))
    assert "AES-encrypted member (zip method 99) cannot be scanned" in _one_error(result)
    assert result.status == "error"


@pytest.mark.parametrize("flag", [0x1, 0x41])
@pytest.mark.parametrize("method", [0, 8])
def test_really_encrypted_members_are_never_clean(tmp_path: Path, flag: int, method: int) -> None:
    ciphertext = random.Random(3).randbytes(12 + 200)  # ZipCrypto: 12-byte header + data
    data = _raw_zip([("weights.bin", method, flag, ciphertext, 200)])
    result = scan_file(_write(tmp_path, "m.zip", data))
    assert result.max_severity == Severity.UNKNOWN
    assert any("encrypted member cannot be scanned" in e for e in result.errors), result.errors


def test_encrypted_flag_on_plain_data_is_scanned_as_plain_data(tmp_path: Path) -> None:
    data = _raw_zip([("clean.pkl", 0, 1, CLEAN, len(CLEAN)), ("evil.pkl", 0, 1, EVIL, len(EVIL))])
    result = scan_file(_write(tmp_path, "m.zip", data))
    assert result.max_severity == Severity.DANGEROUS and not result.errors
    assert sum("flagged as encrypted" in f.message for f in result.findings) == 2


# -- 7z ----------------------------------------------------------------------------------------


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_7z_members_are_scanned_recursively(tmp_path: Path) -> None:
    inner = _sevenzip({"deep/model.pkl": EVIL})
    data = _sevenzip({"a/inner.zip": _zip({"x.pkl": EVIL}), "b/inner.7z": inner,
                      "c/clean.pkl": CLEAN, "d/empty.txt": b""})
    result = scan_file(_write(tmp_path, "m.7z", data))
    assert result.format == "7z" and not result.errors
    assert {f.location.split("@")[0] for f in result.findings} == {
        "a/inner.zip!x.pkl", "b/inner.7z!deep/model.pkl",
    }


def test_benign_7z_is_clean(tmp_path: Path) -> None:
    from safetensors.numpy import save

    npy = io.BytesIO()
    np.save(npy, np.arange(6.0))
    data = _sevenzip({"m/model.safetensors": save({"w": np.ones(3, dtype=np.float32)}),
                      "m/a.npy": npy.getvalue(), "m/config.json": b'{"a": 1}'})
    result = scan_file(_write(tmp_path, "m.7z", data))
    assert (result.status, result.findings, result.errors) == ("safe", (), ())


def test_7z_nesting_depth_is_bounded(tmp_path: Path) -> None:
    data = EVIL
    for level in range(5):
        data = _sevenzip({f"level{level}.7z" if level else "x.pkl": data})
    result = scan_file(_write(tmp_path, "deep.7z", data), limits=ScanLimits(max_archive_depth=2))
    assert any("nested more than 2" in e for e in result.errors)


def test_7z_declared_sizes_over_the_limits_are_not_expanded(tmp_path: Path) -> None:
    data = _sevenzip({"a.bin": random.Random(1).randbytes(5000), "b.pkl": EVIL})
    result = scan_file(_write(tmp_path, "m.7z", data),
                       limits=ScanLimits(max_decompressed_bytes=4000))
    assert [f.subject for f in result.findings] == ["<compression bomb>"]
    assert "declare 5" in _one_error(result) and result.max_severity == Severity.UNKNOWN
    bomb = _sevenzip({"zeros.bin": bytes(16 << 20)})
    result = scan_file(_write(tmp_path, "bomb.7z", bomb))
    assert [f.subject for f in result.findings] == ["<compression bomb>"]
    assert "compression ratio" in _one_error(result)


def test_7z_bytes_produced_are_capped_as_they_arrive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Declared sizes pass, the writer cap still stops the expansion (a py7zr that over-produces
    or sizes that lie): a bomb finding, and the partial member is not scanned."""
    from weightvault.scan.formats import sevenzip

    original = sevenzip._ScanningFactory.__init__

    def small_cap(self: sevenzip._ScanningFactory, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        self.limit = 3000

    monkeypatch.setattr(sevenzip._ScanningFactory, "__init__", small_cap)
    data = _sevenzip({"a.pkl": EVIL, "b.bin": random.Random(2).randbytes(5000), "c.pkl": EVIL})
    result = scan_file(_write(tmp_path, "m.7z", data))
    assert any(f.subject == "<compression bomb>" for f in result.findings)
    assert "more than the limit of 3000 bytes" in _one_error(result)


def test_7z_traversal_links_duplicates_and_trailing_data(tmp_path: Path) -> None:
    data = _sevenzip({"xx/xx/evil.pkl": EVIL, "ok.pkl": CLEAN},
                     rename={"xx/xx/evil.pkl": "../../evil.pkl"})
    result = scan_file(_write(tmp_path, "t.7z", data))
    assert ("../../evil.pkl", Severity.DANGEROUS) in {(f.subject, f.severity)
                                                     for f in result.findings}
    assert "unsafe name not expanded" in _one_error(result)

    (tmp_path / "outside.bin").write_bytes(b"x")  # py7zr archives links whose target exists
    link = tmp_path / "a" / "src" / "link"
    link.parent.mkdir(parents=True)
    link.symlink_to("../../outside.bin")
    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w") as archive:
        archive.write(link, "model/weights.bin")
        archive.writestr(b"a", "dup.txt")
        archive.writestr(b"b", "dup.txt")
    result = scan_file(_write(tmp_path, "l.7z", buffer.getvalue()))
    found = {(f.subject, f.severity) for f in result.findings}
    assert ("model/weights.bin", Severity.DANGEROUS) in found
    assert ("dup.txt", Severity.UNKNOWN) in found
    assert not result.errors

    result = scan_file(_write(tmp_path, "trail.7z", _sevenzip({"a.pkl": CLEAN}) + EVIL))
    found = {(f.subject, f.severity) for f in result.findings}
    assert ("<data after the archive>", Severity.UNKNOWN) in found
    assert result.max_severity == Severity.DANGEROUS


def test_7z_members_are_never_written_to_the_file_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """py7zr's only ways to extract go through pathlib: make each one fail loudly."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"file system write during a scan: {args}")

    data = _sevenzip({"model/evil.pkl": EVIL, "b/c/d.txt": b"x", "e.bin": b""})
    path = _write(tmp_path, "m.7z", data)
    for method in ("open", "mkdir", "touch", "symlink_to", "chmod", "write_bytes", "unlink"):
        monkeypatch.setattr(Path, method, refuse)
    monkeypatch.chdir(tmp_path)
    result = scan_file(path)
    monkeypatch.undo()
    assert result.max_severity == Severity.DANGEROUS and not result.errors
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.7z"]


@pytest.mark.parametrize("header_encryption", [False, True])
def test_encrypted_7z_is_an_error(tmp_path: Path, header_encryption: bool) -> None:
    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w", password="pw", header_encryption=header_encryption) as z:
        z.writestr(EVIL, "model.pkl")
    result = scan_file(_write(tmp_path, "e.7z", buffer.getvalue()))
    assert "encrypted 7z archive" in _one_error(result)
    assert result.status == "error"


def test_7z_member_limit(tmp_path: Path) -> None:
    data = _sevenzip({f"f{i}.txt": b"x" for i in range(20)})
    result = scan_file(_write(tmp_path, "many.7z", data), limits=ScanLimits(max_archive_members=10))
    assert "over the limit of 10" in _one_error(result)


def test_every_truncation_and_byte_flip_of_a_7z_is_never_silently_clean(tmp_path: Path) -> None:
    """Clean only when py7zr still reads back exactly the original content."""
    members = {"model.pkl": CLEAN, "a.txt": b"hello"}
    data = _sevenzip(members)
    for cut in range(6, len(data)):  # shorter: no 7z signature, not a 7z file
        result = scan_file(_write(tmp_path, "t.7z", data[:cut]))
        assert result.status != "safe", cut
        assert not any("internal error" in e for e in result.errors)
    for at in range(6, len(data)):
        flipped = bytearray(data)
        flipped[at] ^= 0x55
        result = scan_file(_write(tmp_path, "f.7z", bytes(flipped)))
        assert not any("internal error" in e for e in result.errors), (at, result.errors)
        if result.status == "safe":
            with py7zr.SevenZipFile(io.BytesIO(bytes(flipped))) as archive:
                factory = py7zr.io.BytesIOFactory(1 << 20)
                archive.extractall(factory=factory)
                assert {n: factory.get(n).read() for n in members} == members, at


def test_corpus_7z_wrapped_pickle_is_still_an_error(corpus_root: Path) -> None:
    result = scan_file(corpus_root / "malicious" / "sevenzip_wrapped.7z")
    assert result.status == "error" and "7z" in result.errors[0]


def test_7z_without_py7zr_is_an_error_with_an_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "m.7z", _sevenzip({"a.pkl": EVIL}))
    monkeypatch.setitem(sys.modules, "py7zr", None)
    result = scan_file(path)
    assert "pip install 'weightvault[scan]'" in _one_error(result)
    assert result.status == "error"


def test_py7zr_is_imported_only_when_a_7z_file_is_met(tmp_path: Path) -> None:
    plain = _write(tmp_path, "m.zip", _zip({"a.pkl": CLEAN}))
    seven = _write(tmp_path, "m.7z", _sevenzip({"a.pkl": CLEAN}))
    code = (
        "import sys\nfrom weightvault.scan import scan_file\n"
        "assert scan_file(sys.argv[1]).status == 'safe'\n"
        "print('py7zr' in sys.modules)\n"
        "assert scan_file(sys.argv[2]).status == 'safe'\n"
        "print('py7zr' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(plain), str(seven)], check=True,
                         capture_output=True, text=True, timeout=120).stdout.split()
    assert out == ["False", "True"]


# -- fuzzing -----------------------------------------------------------------------------------


def _fuzz_samples() -> dict[str, bytes]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_LZMA) as archive:
        archive.writestr("archive/data.pkl", CLEAN)
        archive.writestr("w.bin", bytes(300))
    return {
        "lzma.zip": buffer.getvalue(),
        "m.7z": _sevenzip({"model.pkl": CLEAN, "n.zip": _zip({"x.pkl": CLEAN})}),
    }


FUZZ = _fuzz_samples()


@settings(max_examples=200, deadline=3000, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(FUZZ)),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1,
                   max_size=4),
    cut=st.floats(0, 1),
)
def test_mutated_lzma_zips_and_7z_never_cause_internal_errors(
    name: str, flips: list[tuple[float, int]], cut: float
) -> None:
    data = bytearray(FUZZ[name])
    for where, value in flips:
        data[int(where * len(data))] = value
    if cut < 0.3:
        data = data[: int(len(data) * (1 - cut))]
    with tempfile.TemporaryDirectory() as tmp:
        result = scan_file(_write(Path(tmp), name, bytes(data)))
    assert not any("internal error" in e for e in result.errors), result.errors


def test_archived_payloads_are_live_when_extracted_and_unpickled(tmp_path: Path) -> None:
    """The new corpus samples are honest: extracting them (zipfile, py7zr) and unpickling the
    member, in a child process, runs the payload; scanning them is dangerous and runs nothing."""
    samples = build_corpus(tmp_path, only={"zip_lzma_payload.zip", "sevenzip_payload.7z"})
    assert len(samples) == 2
    code = (
        "import io,pickle,sys,zipfile,py7zr\n"
        "zip_path, seven_path = sys.argv[1:]\n"
        "with zipfile.ZipFile(zip_path) as z:\n"
        "    pickle.loads(z.read('model.pkl'))\n"
        "with py7zr.SevenZipFile(seven_path) as z:\n"
        "    f = py7zr.io.BytesIOFactory(1 << 20)\n"
        "    z.extractall(factory=f)\n"
        "    pickle.loads(f.get('model/pytorch_model.bin').read())\n"
    )
    by_name = {s.name: s for s in samples}
    for sample in samples:
        assert scan_file(sample.path).max_severity == Severity.DANGEROUS
        assert sample.marker is not None and not sample.marker.exists()
    subprocess.run([sys.executable, "-c", code, str(by_name["zip_lzma_payload.zip"].path),
                    str(by_name["sevenzip_payload.7z"].path)], check=True, cwd=tmp_path,
                   capture_output=True, timeout=120)
    assert all(s.marker is not None and s.marker.exists() for s in samples)


@pytest.mark.parametrize("coder", [py7zr.FILTER_DEFLATE, FILTER_DEFLATE64])
def test_large_7z_deflate_folders_are_not_expanded(tmp_path: Path, coder: int) -> None:
    """py7zr cannot cap Deflate output: a large Deflate folder is an error, never clean."""
    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w", filters=[{"id": coder}]) as archive:
        archive.writestr(os.urandom(200 << 10), "weights.bin")  # incompressible: 200 KiB packed
        archive.writestr(EVIL, "model.pkl")
    result = scan_file(_write(tmp_path, "big-deflate.7z", buffer.getvalue()))
    assert "cannot be bounded in memory" in _one_error(result)
    assert "Deflate" in result.errors[0]


@pytest.mark.parametrize("coder", [py7zr.FILTER_DEFLATE, FILTER_DEFLATE64])
def test_small_7z_deflate_folders_are_scanned(tmp_path: Path, coder: int) -> None:
    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w", filters=[{"id": coder}]) as archive:
        archive.writestr(EVIL, "model.pkl")
    result = scan_file(_write(tmp_path, "small-deflate.7z", buffer.getvalue()))
    assert not result.errors
    assert result.status == "dangerous"


def test_storage_names_are_recognized_as_the_regex_reads_them() -> None:
    """Storage members are told apart without a regex (it ran for every member of every
    checkpoint); the test holds that check to ``re.search(r"(^|/)FOLDER/\\d+$")``, Unicode
    digits and the final newline that ``$`` allows included."""
    import re

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from weightvault.scan.formats.zip_archive import is_storage_name

    folders = ("data", "constants", "traced_inputs")
    regex = re.compile(r"(^|/)(data|constants|traced_inputs)/\d+$")
    parts = st.sampled_from(["data", "constants", "traced_inputs", "archive", "xdata", "", "0",
                             "12", "\u0661\u0662", "\u00b2", "1\n", "\n", "data.pkl", "a/b"])

    @settings(max_examples=500, deadline=None)
    @given(st.lists(parts, min_size=1, max_size=5), st.sampled_from(["", "\n", "\n\n", "x"]))
    def check(pieces: list[str], tail: str) -> None:
        name = "/".join(pieces) + tail
        assert is_storage_name(name, folders) == bool(regex.search(name)), repr(name)

    check()
    assert is_storage_name("archive/data/0", ("data",))
    assert not is_storage_name("archive/constants/0", ("data",))
