"""Zips on which torch.load (miniz) and zipfile / numpy.load disagree: the real loaders, run in
a child process on generated archives, against the scanner.

Every archive is built field by field so that one reader sees a benign checkpoint and the other a
payload (a harmless one: ``builtins.open(marker, "w")`` creates an empty marker file). The child
process loads each archive with ``torch.load(weights_only=False)``, with ``zipfile`` + ``pickle``
(what code that unpacks a checkpoint by hand does, storages stubbed) and, for ``.npz`` layouts,
with ``numpy.load(allow_pickle=True)``. The test asserts that the scanner refuses every archive,
that the payload fired under the loader it was built for, and that the other reader loaded the
benign checkpoint without error (the archive really is divergent).
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightvault.scan import Severity, scan_file
from weightvault.scan.formats.zip_views import ZipReadError, read_miniz

Members = list[tuple[str, bytes]]


def _payload(marker: Path) -> bytes:
    """``builtins.open(marker, "w")``: creates an empty file, nothing else."""
    path = str(marker).encode()
    return (b"\x80\x02cbuiltins\nopen\nX" + struct.pack("<I", len(path)) + path
            + b"X\x01\x00\x00\x00w\x86R.")


def _torch_members() -> Members:
    import torch

    buffer = io.BytesIO()
    torch.save({"w": torch.arange(4.0)}, buffer)
    import zipfile

    with zipfile.ZipFile(buffer) as archive:
        return [(i.filename, archive.read(i)) for i in archive.infolist()]


TORCH_MEMBERS = _torch_members()


def _npz_members(value: np.ndarray) -> Members:
    buffer = io.BytesIO()
    np.savez(buffer, x=value)
    import zipfile

    with zipfile.ZipFile(buffer) as archive:
        return [(i.filename, archive.read(i)) for i in archive.infolist()]


def _object_npy(marker: Path) -> bytes:
    """An ``.npy`` object array whose pickle is the payload (numpy.load(allow_pickle=True))."""
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + _payload(marker)


def _with_evil(members: Members, marker: Path, target: str = "data.pkl") -> Members:
    if target == "data.pkl":
        return [(n, _payload(marker) if n.endswith("/data.pkl") else d) for n, d in members]
    return [(n, _object_npy(marker) if n == target else d) for n, d in members]


# -- writing zips field by field -----------------------------------------------------------------


def _local(name: bytes, data: bytes) -> bytes:
    return struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, zlib.crc32(data), len(data),
                       len(data), len(name), 0) + name + data


def _central(name: bytes, data: bytes, offset: int) -> bytes:
    return struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, zlib.crc32(data),
                       len(data), len(data), len(name), 0, 0, 0, 0, 0, offset) + name


def _eocd(count: int, size: int, offset: int, comment: bytes = b"") -> bytes:
    return struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, size, offset,
                       len(comment)) + comment


def _zip64_record(count: int, size: int, offset: int) -> bytes:
    return struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, offset)


def _locator(record_at: int) -> bytes:
    return struct.pack("<4sLQL", b"PK\x06\x07", 0, record_at, 1)


def _body(members: Members, base: int, names: list[bytes] | None = None,
          shift: int = 0) -> tuple[bytes, bytes]:
    """Local headers + data at ``base``, and a central directory recording ``offset - shift``."""
    body, central = bytearray(), bytearray()
    for index, (name, data) in enumerate(members):
        raw = name.encode()
        central_name = names[index] if names else raw
        central += _central(central_name, data, base + len(body) - shift)
        body += _local(raw, data)
    return bytes(body), bytes(central)


def plain(members: Members) -> bytes:
    body, central = _body(members, 0)
    return body + central + _eocd(len(members), len(central), len(body))


def zip64_locator(torch_sees: Members, zipfile_sees: Members, pad: int = 0) -> bytes:
    """The locator points at one zip64 record (miniz); another sits right before it (zipfile)."""
    a_body, a_central = _body(torch_sees, 0)
    b_body, b_central = _body(zipfile_sees, len(a_body) + pad)
    out = bytearray(a_body + bytes(pad) + b_body)
    a_at = len(out)
    out += a_central
    a_record = len(out)
    out += _zip64_record(len(torch_sees), len(a_central), a_at)
    b_at = len(out)
    out += b_central + _zip64_record(len(zipfile_sees), len(b_central), b_at)
    out += _locator(a_record) + _eocd(0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    return bytes(out)


def prepended(torch_sees: Members, zipfile_sees: Members, pad: int = 0) -> bytes:
    """miniz reads the central directory at its recorded offset; zipfile reads the one that ends
    at the end record and shifts every offset by the difference ("data before the archive")."""
    t_body, t_central = _body(torch_sees, 0)
    z_len = len(_body(zipfile_sees, 0)[0])
    out = bytearray(t_body + bytes(max(z_len, 0) + pad))
    t_at = len(out)
    out += t_central
    z_start = len(out)
    z_body, _ = _body(zipfile_sees, z_start)
    z_central_at = z_start + len(z_body)
    shift = z_central_at - t_at
    _, z_central = _body(zipfile_sees, z_start, shift=shift)
    assert len(z_central) == len(t_central), "both directories must have the same size"
    out += z_body + z_central + _eocd(len(zipfile_sees), len(z_central), t_at)
    return bytes(out)


def count_mismatch(torch_sees: Members, extra: Members) -> bytes:
    """The end record counts fewer entries than the directory holds: miniz stops at the count,
    zipfile reads until the directory's size is used up (and keeps the last of a name)."""
    members = torch_sees + extra
    body, central = _body(members, 0)
    return body + central + _eocd(len(torch_sees), len(central), len(body))


def duplicate(first: Members, second_data_pkl: bytes) -> bytes:
    name = next(n for n, _ in first if n.endswith("/data.pkl"))
    return plain([*first, (name, second_data_pkl)])


def case_duplicate(members: Members, other_data_pkl: bytes) -> bytes:
    """``archive/DATA.PKL`` first: miniz's case-insensitive search may pick it for data.pkl."""
    name = next(n for n, _ in members if n.endswith("/data.pkl"))
    upper = name.rsplit("/", 1)[0] + "/DATA.PKL"
    return plain([members[0], (upper, other_data_pkl), *members[1:]])


def local_name_mismatch(members: Members, marker: Path) -> bytes:
    """The central directory names a payload ``archive/data.pkl``; its local header another."""
    evil = _with_evil(members, marker)
    names = [n.encode() for n, _ in evil]
    renamed = [(n.replace("data.pkl", "data.pkX"), d) for n, d in evil]
    body, central = _body(renamed, 0, names=names)
    return body + central + _eocd(len(evil), len(central), len(body))


# -- the child process ----------------------------------------------------------------------------

_CHILD = r"""
import io, json, pickle, sys, warnings, zipfile
import numpy as np
warnings.simplefilter("ignore")
import torch

class Unpickler(pickle.Unpickler):
    def persistent_load(self, pid):  # torch storages, zero-filled: only the calls matter
        _, storage_type, _, _, numel = pid
        dtype = storage_type.dtype
        raw = torch.UntypedStorage(numel * torch._utils._element_size(dtype))
        return torch.storage.TypedStorage(wrap_storage=raw, dtype=dtype, _internal=True)

results = {}
for path in sys.argv[1:]:
    outcome = {}
    try:
        torch.load(path, weights_only=False)
        outcome["torch"] = "loaded"
    except Exception as exc:
        outcome["torch"] = "error: " + type(exc).__name__
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("data.pkl")]
            for name in names[-1:]:
                Unpickler(io.BytesIO(z.read(name))).load()
        outcome["zipfile"] = "loaded"
    except Exception as exc:
        outcome["zipfile"] = "error: " + type(exc).__name__
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=True) as npz:
                for key in npz.files:
                    npz[key]
            outcome["numpy"] = "loaded"
        except Exception as exc:
            outcome["numpy"] = "error: " + type(exc).__name__
    results[path] = outcome
print(json.dumps(results))
"""


def _load_all(paths: list[Path], cwd: Path) -> dict[str, dict[str, str]]:
    out = subprocess.run([sys.executable, "-c", _CHILD, *map(str, paths)], cwd=cwd,
                         capture_output=True, text=True, timeout=300, check=True)
    result: dict[str, dict[str, str]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


Layout = Callable[[Path], bytes]


def _layouts() -> dict[str, tuple[Layout, str]]:
    """name -> (builder(marker) -> bytes, the reader the payload is meant for)."""
    benign = TORCH_MEMBERS
    return {
        "zip64-torch-payload.pt": (
            lambda m: zip64_locator(_with_evil(benign, m), benign), "torch"),
        "zip64-zipfile-payload.pt": (
            lambda m: zip64_locator(benign, _with_evil(benign, m)), "zipfile"),
        "prepended-torch-payload.pt": (
            lambda m: prepended(_with_evil(benign, m), benign), "torch"),
        "prepended-zipfile-payload.pt": (
            lambda m: prepended(benign, _with_evil(benign, m)), "zipfile"),
        "count-mismatch.pt": (
            lambda m: count_mismatch(benign, [("archive/data.pkl", _payload(m))]), "zipfile"),
        "duplicate-last.pt": (lambda m: duplicate(benign, _payload(m)), "torch"),
        "case-duplicate.pt": (lambda m: case_duplicate(benign, _payload(m)), "torch"),
        "local-name-mismatch.pt": (lambda m: local_name_mismatch(benign, m), "torch"),
        "zip64-npz.npz": (
            lambda m: zip64_locator(_npz_members(np.arange(3)),
                                    _with_evil(_npz_members(np.arange(3)), m, "x.npy")),
            "numpy"),
        "prepended-npz.npz": (
            lambda m: prepended(_npz_members(np.arange(3)),
                                _with_evil(_npz_members(np.arange(3)), m, "x.npy")),
            "numpy"),
    }


LAYOUTS = _layouts()


def test_divergent_archives_fire_under_a_real_loader_and_are_all_refused(tmp_path: Path) -> None:
    paths: dict[str, Path] = {}
    markers: dict[str, Path] = {}
    for name, (build, _) in LAYOUTS.items():
        markers[name] = tmp_path / "markers" / name
        paths[name] = tmp_path / name
        paths[name].write_bytes(build(markers[name]))
    (tmp_path / "markers").mkdir()
    # 1. The scanner first: it must refuse every one, and run nothing.
    for name, path in paths.items():
        result = scan_file(path)
        assert result.status in ("dangerous", "error"), (name, result)
        assert result.max_severity == Severity.DANGEROUS, (name, result.findings, result.errors)
        assert not any("internal error" in e for e in result.errors)
    assert not any(m.exists() for m in markers.values())
    # 2. Then the real loaders: the payload fires for the reader it was built for.
    outcomes = _load_all(list(paths.values()), tmp_path)
    for name, (_, reader) in LAYOUTS.items():
        assert markers[name].exists(), (name, outcomes[str(paths[name])])
        if reader in ("torch", "zipfile") and not name.startswith(("duplicate", "case", "local")):
            other = "zipfile" if reader == "torch" else "torch"
            # the other reader loads the benign checkpoint without error
            assert outcomes[str(paths[name])][other] == "loaded", (name, outcomes)


def test_held_out_zip64_and_prepended_checkpoints_are_dangerous(tmp_path: Path) -> None:
    """The issue's held-out cases: torch.load reads another central directory than zipfile."""
    for name in ("zip64-torch-payload.pt", "prepended-torch-payload.pt"):
        path = tmp_path / name
        path.write_bytes(LAYOUTS[name][0](tmp_path / "marker"))
        result = scan_file(path)
        subjects = {f.subject: f for f in result.findings}
        assert "<zip readers disagree>" in subjects, result.findings
        assert subjects["<zip readers disagree>"].severity == Severity.DANGEROUS
        assert "builtins.open" in subjects  # the payload itself is found too
        assert "'archive/data.pkl'" in subjects["<zip readers disagree>"].message
        assert "read from different bytes" in subjects["<zip readers disagree>"].message


def test_benign_archives_through_the_same_writer_are_clean(tmp_path: Path) -> None:
    """The writers above make ordinary zips when nothing diverges: no false alarm."""
    path = tmp_path / "plain.pt"
    path.write_bytes(plain(TORCH_MEMBERS))
    result = scan_file(path)
    assert (result.status, result.errors) == ("safe", ()), result
    path = tmp_path / "plain.npz"
    path.write_bytes(plain(_npz_members(np.arange(3))))
    assert scan_file(path).status == "safe"


def test_torch_records_are_found_case_insensitively_like_miniz(tmp_path: Path) -> None:
    """torch.load finds ``archive/DATA.PKL`` for data.pkl: the archive is a checkpoint."""
    members = [(n.replace("data.pkl", "DATA.PKL"), d) for n, d in TORCH_MEMBERS]
    path = tmp_path / "upper.pt"
    path.write_bytes(plain(members))
    assert scan_file(path).format == "pytorch-zip"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=st.sampled_from(["zip64", "prepended"]),
    evil_for=st.sampled_from(["torch", "zipfile"]),
    pad=st.integers(0, 5000),
    drop=st.integers(0, 6),
)
def test_generated_divergent_layouts_are_always_refused(
    layout: str, evil_for: str, pad: int, drop: int
) -> None:
    """Across paddings and member sets, both readers open the archive, they list different
    members, and the scanner refuses it with the payload named."""
    import tempfile

    benign = [m for i, m in enumerate(TORCH_MEMBERS) if i != drop or m[0].endswith("data.pkl")]
    with tempfile.TemporaryDirectory() as tmp:
        marker = Path(tmp) / "m"
        evil = _with_evil(benign, marker)
        torch_sees, zipfile_sees = (evil, benign) if evil_for == "torch" else (benign, evil)
        if layout == "zip64":
            data = zip64_locator(torch_sees, zipfile_sees, pad)
        else:
            data = prepended(torch_sees, zipfile_sees, pad)
        path = Path(tmp) / "m.pt"
        path.write_bytes(data)
        with open(path, "rb") as handle:
            miniz = read_miniz(handle, 0, len(data))
        assert not miniz.zipfile_agrees
        result = scan_file(path)
    assert {"<zip readers disagree>", "builtins.open"} <= {f.subject for f in result.findings}
    assert result.max_severity == Severity.DANGEROUS


def test_miniz_refusals_are_errors_when_zipfile_still_reads_the_archive(tmp_path: Path) -> None:
    """A stored member whose two sizes differ: miniz refuses the whole archive, zipfile reads
    it. No torch.load runs then, but zipfile's members are still scanned, and it is an error."""
    body, central = _body(TORCH_MEMBERS, 0)
    central = bytearray(central)
    struct.pack_into("<L", central, 24, 999)  # first entry: uncompressed size 999, stored
    data = body + bytes(central) + _eocd(len(TORCH_MEMBERS), len(central), len(body))
    with pytest.raises(ZipReadError, match="sizes"):
        read_miniz(io.BytesIO(data), 0, len(data))
    path = tmp_path / "m.pt"
    path.write_bytes(data)
    result = scan_file(path)
    assert result.status != "safe"
    assert "torch.load's reader (miniz) cannot open it" in result.errors[0]


def test_overlapping_members_are_refused(tmp_path: Path) -> None:
    """Two central entries for one local header: one byte range read under two names."""
    data = pickle.dumps({"a": 1}, protocol=2)
    local = _local(b"archive/data.pkl", data)
    central = _central(b"archive/data.pkl", data, 0) + _central(b"archive/data.pkl", data, 0)
    blob = local + central + _eocd(2, len(central), len(local))
    path = tmp_path / "overlap.pt"
    path.write_bytes(blob)
    result = scan_file(path)
    assert result.max_severity == Severity.DANGEROUS
    assert any("overlaps" in f.message for f in result.findings), result.findings


@pytest.mark.parametrize("comment_size", [0, 100, 5000, 65535])
def test_the_end_record_is_found_behind_an_archive_comment_of_any_length(
    tmp_path: Path, comment_size: int
) -> None:
    """miniz searches back up to 64 KiB + 22 bytes for the end record; the scanner reads the
    last 4 KiB first and the whole window only when the record is not there (a long comment)."""
    import zipfile

    path = tmp_path / "commented.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in TORCH_MEMBERS:
            archive.writestr(name, data)
        archive.comment = b"c" * comment_size
    with path.open("rb") as handle:
        listing = read_miniz(handle, 0, path.stat().st_size)
    assert [m.name for m in listing.members] == [name for name, _ in TORCH_MEMBERS]
    assert bool(listing.differences) == (comment_size > 0)  # zipfile reads it another way
