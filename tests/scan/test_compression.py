"""Compressed pickles found by content, as joblib finds them: every compressor, any file name,
old joblib 'ZF' files, concatenated streams, data after the stream, partial streams."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import random
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import joblib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightvault.scan import Severity, scan_file

COMPRESSORS = ["zlib", "gzip", "bz2", "lzma", "xz"]
NAMES = ["model.joblib", "model.bin", "model.model", "model", "weights.pkl", "notes.txt"]


def _payload(marker: Path) -> bytes:
    """``builtins.open(marker, "w")`` at protocol 4: creates an empty file, nothing else."""
    path = str(marker).encode()
    return (b"\x80\x04\x8c\x08builtins\x8c\x04open\x93X" + len(path).to_bytes(4, "little") + path
            + b"\x8c\x01w\x86R.")


class _Open:
    """Pickles as ``builtins.open(marker, "w")`` without ever calling it here."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        import builtins

        return builtins.open, (self.marker, "w")


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_benign_joblib_files_are_read_under_any_name(tmp_path: Path, compressor: str) -> None:
    model = {"coef": np.arange(6.0).reshape(2, 3), "classes": ["a", "b"], "n": 3}
    for name in NAMES:
        path = tmp_path / name
        joblib.dump(model, path, compress=(compressor, 3))
        result = scan_file(path)
        assert (result.status, result.errors) == ("safe", ()), (compressor, name, result)
        assert result.format == compressor, (name, result.format)


def test_joblib_payloads_fire_under_joblib_and_are_dangerous_under_every_name(
    tmp_path: Path,
) -> None:
    paths = []
    for compressor in COMPRESSORS:
        for name in NAMES:
            path = tmp_path / compressor / name
            path.parent.mkdir(exist_ok=True)
            marker = tmp_path / "markers" / f"{compressor}-{name}"
            joblib.dump([np.arange(3), _Open(str(marker))], path, compress=(compressor, 1))
            result = scan_file(path)
            assert result.max_severity == Severity.DANGEROUS, (compressor, name, result)
            assert any(f.subject.endswith(".open") for f in result.findings), result.findings
            paths.append((path, marker))
    (tmp_path / "markers").mkdir()
    assert not any(m.exists() for _, m in paths)
    code = "import sys, joblib\nfor p in sys.argv[1:]:\n    joblib.load(p)\n"
    subprocess.run([sys.executable, "-c", code, *(str(p) for p, _ in paths)], check=True,
                   timeout=120, capture_output=True)
    assert all(m.exists() for _, m in paths)


def test_old_joblib_zfile_is_decompressed(tmp_path: Path) -> None:
    """joblib < 0.10 wrote b'ZF' + the length in hex + a zlib stream; joblib.load still reads
    them (load_compatibility)."""
    from joblib.numpy_pickle_compat import write_zfile

    marker = tmp_path / "marker"
    path = tmp_path / "old.pkl"
    with open(path, "wb") as handle:
        write_zfile(handle, _payload(marker))
    result = scan_file(path)
    assert result.format == "joblib-zfile"
    assert result.max_severity == Severity.DANGEROUS, result
    subprocess.run([sys.executable, "-W", "ignore", "-c",
                    "import sys, joblib; joblib.load(sys.argv[1])", str(path)],
                   check=True, timeout=60, capture_output=True)
    assert marker.exists()
    benign = tmp_path / "benign.pkl"
    with open(benign, "wb") as handle:
        write_zfile(handle, pickle.dumps({"a": 1}, protocol=2))
    assert scan_file(benign).status == "safe"


@pytest.mark.parametrize(("opener", "compress"), [
    ("gzip", gzip.compress), ("bz2", bz2.compress), ("lzma", lzma.compress),
])
def test_a_payload_split_across_concatenated_streams_is_found(
    tmp_path: Path, opener: str, compress: object,
) -> None:
    """gzip.open / bz2.open / lzma.open read concatenated streams as one: a pickle whose
    payload starts in the second stream is still one pickle to them."""
    marker = tmp_path / "marker"
    data = _payload(marker)
    cut = len(data) // 2
    path = tmp_path / "split.bin"
    path.write_bytes(compress(data[:cut]) + compress(data[cut:]))  # type: ignore[operator]
    result = scan_file(path)
    assert result.max_severity == Severity.DANGEROUS and not result.errors, result
    subprocess.run([sys.executable, "-c",
                    f"import sys, pickle, {opener}; pickle.load({opener}.open(sys.argv[1]))",
                    str(path)], check=True, timeout=60, capture_output=True)
    assert marker.exists()


def test_data_after_the_stream_is_reported(tmp_path: Path) -> None:
    clean = pickle.dumps({"a": 1}, protocol=4)
    for name, data in (("z.bin", zlib.compress(clean)), ("g.bin", gzip.compress(clean)),
                       ("x.bin", lzma.compress(clean))):
        path = tmp_path / name
        path.write_bytes(data + b"JUNK" * 10)
        result = scan_file(path)
        assert [f.subject for f in result.findings] == ["<trailing data>"], (name, result)
        assert "40 bytes after" in result.findings[0].message
    padded = tmp_path / "padded.gz"
    padded.write_bytes(gzip.compress(clean) + bytes(512))  # tape padding: gzip skips zeros
    assert scan_file(padded).status == "safe"


def test_a_payload_before_corrupt_data_is_still_found(tmp_path: Path) -> None:
    """A streaming loader consumes what decompressed before the corruption: it is scanned."""
    marker = tmp_path / "marker"
    # Incompressible filler: the cut falls far behind the payload whatever the path's length.
    stream = gzip.compress(_payload(marker) + random.Random(0).randbytes(200_000), 1)
    broken = stream[: len(stream) // 2] + b"\xff" * 64
    path = tmp_path / "broken.gz"
    path.write_bytes(broken)
    result = scan_file(path)
    assert result.max_severity == Severity.DANGEROUS
    assert any("not scanned completely" in e for e in result.errors), result.errors


@pytest.mark.parametrize("text", [b"x^ hello, a text file\n", b"]\x00 not lzma at all" * 20,
                                  b"x\x9c" + b"\x00" * 40])
def test_weak_magic_that_starts_no_stream_is_read_as_something_else(
    tmp_path: Path, text: bytes,
) -> None:
    path = tmp_path / "notes.bin"
    path.write_bytes(text)
    result = scan_file(path)
    assert not any("compressed" in e for e in result.errors), result.errors
    assert result.format not in ("zlib", "lzma")


def test_corrupt_data_behind_a_strong_magic_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    path.write_bytes(b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 100)
    result = scan_file(path)
    assert result.status == "error" and "not scanned completely" in result.errors[0]


def test_lz4_is_an_error_not_clean(tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    path.write_bytes(b"\x04\x22\x4d\x18" + bytes(40))
    result = scan_file(path)
    assert result.status == "error" and "lz4" in result.errors[0]


def test_compressed_tar_of_a_model_folder(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for name, data in (("model/config.json", b"{}"), ("model/opt.bin", _payload(marker))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    for compress, suffix in ((gzip.compress, "tgz"), (bz2.compress, "tbz"),
                             (lzma.compress, "txz")):
        path = tmp_path / f"model.{suffix}"
        path.write_bytes(compress(raw.getvalue()))
        result = scan_file(path)
        assert result.max_severity == Severity.DANGEROUS, suffix
        assert any(f.location.endswith("model/opt.bin@0") or "model/opt.bin" in f.location
                   for f in result.findings)


def test_v7_tar_without_ustar_magic_is_a_tar(tmp_path: Path) -> None:
    """tarfile (and so torch.load's legacy path) accepts headers without the 'ustar' magic."""
    marker = tmp_path / "marker"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        data = _payload(marker)
        info = tarfile.TarInfo("weights.bin")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    blob = bytearray(raw.getvalue())
    blob[257:265] = bytes(8)  # no magic, no version: a v7 header
    checksum = 256 + sum(blob[:148]) + sum(blob[156:512])
    blob[148:156] = b"%06o\x00 " % checksum
    assert tarfile.open(fileobj=io.BytesIO(bytes(blob))).getnames() == ["weights.bin"]
    path = tmp_path / "v7.tar"
    path.write_bytes(bytes(blob))
    result = scan_file(path)
    assert result.format == "tar" and result.max_severity == Severity.DANGEROUS


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    compressor=st.sampled_from(["zlib", "gzip", "bz2", "xz", "lzma"]),
    cut=st.integers(0, 200),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
)
def test_mutated_compressed_pickles_never_cause_internal_errors(
    compressor: str, cut: int, flips: list[tuple[int, int]],
) -> None:
    import tempfile

    data = pickle.dumps({"w": list(range(50)), "name": "x" * 40}, protocol=4)
    compressed = bytearray({
        "zlib": zlib.compress, "gzip": gzip.compress, "bz2": bz2.compress,
        "xz": lzma.compress, "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
    }[compressor](data))
    for where, value in flips:
        compressed[where % len(compressed)] = value
    blob = bytes(compressed[: max(len(compressed) - cut, 1)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.bin"
        path.write_bytes(blob)
        result = scan_file(path)
    assert not any("internal error" in e for e in result.errors), result.errors
    if blob == bytes(compressed) and not flips:
        assert result.status == "safe"


def _tar_header(name: bytes, typeflag: bytes, size: int) -> bytes:
    block = bytearray(512)
    block[: len(name)] = name
    block[100:108] = b"0000644\x00"
    block[108:116] = block[116:124] = b"0000000\x00"
    block[124:136] = b"%011o\x00" % size
    block[136:148] = b"00000000000\x00"
    block[156:157] = typeflag
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return bytes(block)


def test_a_pickle_in_a_broken_tar_header_is_found(tmp_path: Path) -> None:
    """torch.load tries tarfile first and, when it raises, unpickles the file from byte 0: a
    tar header whose name field is a protocol-0 pickle and whose pax data is broken runs."""
    marker = tmp_path / "marker"  # relative in the header: the name field holds 100 bytes
    name = b"cbuiltins\nopen\n(S'marker'\nS'w'\ntR."
    data = _tar_header(name, b"x", 16) + b"garbage garbage!".ljust(512, b"\x00") + bytes(1024)
    path = tmp_path / "header.pt"
    path.write_bytes(data)
    with pytest.raises(tarfile.ReadError):
        tarfile.open(path, "r:")
    result = scan_file(path)
    assert result.max_severity == Severity.DANGEROUS, result
    subprocess.run([sys.executable, "-c",
                    "import sys, torch; torch.load(sys.argv[1], weights_only=False)", str(path)],
                   check=False, timeout=120, capture_output=True, cwd=tmp_path)
    assert marker.exists()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    block=st.binary(min_size=512, max_size=512),
    fix_checksum=st.booleans(),
    checksum_style=st.sampled_from(["%06o\x00 ", "%07o\x00", "%o", " %06o"]),
)
def test_tar_detection_agrees_with_tarfile_on_the_first_header(
    block: bytes, fix_checksum: bool, checksum_style: str,
) -> None:
    """Whatever tarfile accepts as a first header, the scanner treats as a tar, so no tar reaches
    torch.load's tar branch unscanned. (A header with a valid checksum that tarfile still refuses,
    say for a mode field that is not octal, is scanned as a tar that fails, then as the pickle
    torch.load falls back to.)"""
    from weightvault.scan.formats.tar import looks_like_tar

    data = bytearray(block)
    if fix_checksum:  # numeric fields tarfile parses, so that it accepts many of these
        data[100:148] = b"0000644\x000001750\x000001750\x0000000001000\x0014000000000\x00"
        data[329:345] = bytes(16)
        data[148:156] = b" " * 8
        text = (checksum_style % sum(data)).encode()[:8]
        data[148:156] = text.ljust(8, b"\x00")
    try:
        tarfile.TarInfo.frombuf(bytes(data), "utf-8", "surrogateescape")
        accepted = True
    except tarfile.HeaderError:
        accepted = False
    if accepted:
        assert looks_like_tar(bytes(data))
    elif not fix_checksum:
        assert not looks_like_tar(bytes(data))  # random bytes: no checksum matches by chance
