"""Structure checks of the non-pickle formats, archives and bombs: errors and findings, no crash."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from weightvault.scan import ScanLimits, Severity, scan_file


def _safetensors_bytes() -> bytes:
    buffer = io.BytesIO()
    from safetensors.numpy import save

    buffer.write(save({"a": np.arange(4, dtype=np.float32), "b": np.ones(2, dtype=np.int64)}))
    return buffer.getvalue()


def _with_header(header: dict[str, object], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_real_safetensors_is_clean(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"x": np.zeros((2, 3), dtype=np.float16)}, str(path))
    result = scan_file(path)
    assert (result.format, result.status) == ("safetensors", "safe")


@pytest.mark.parametrize(("header", "data", "message"), [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "overlaps"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12, "belong to no"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "gap"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "bytes for shape"),
    ({"a": {"dtype": "X99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown dtype"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, "shape"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 80]}}, b"\0" * 8, "outside"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "x": 1}}, b"\0" * 8,
     "exactly"),
    ({"__metadata__": {"k": 1}}, b"", "__metadata__"),
])
def test_safetensors_header_violations_are_errors(
    tmp_path: Path, header: dict[str, object], data: bytes, message: str
) -> None:
    result = scan_file(_write(tmp_path, "bad.safetensors", _with_header(header, data)))
    assert result.status == "error"
    assert any(message in e for e in result.errors), result.errors


def test_safetensors_duplicate_keys_and_huge_header(tmp_path: Path) -> None:
    raw = b'{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, "a": {"dtype": "U8", ' \
          b'"shape": [1], "data_offsets": [0, 1]}}'
    data = struct.pack("<Q", len(raw)) + raw + b"x"
    result = scan_file(_write(tmp_path, "dup.safetensors", data))
    assert any("duplicate" in e for e in result.errors)
    huge = struct.pack("<Q", 1 << 40) + b"{" + b" " * 16
    result = scan_file(_write(tmp_path, "huge.safetensors", huge))
    assert result.status != "safe"


def test_every_truncation_of_safetensors_is_never_clean(tmp_path: Path) -> None:
    data = _safetensors_bytes()
    for cut in range(1, len(data), 7):
        result = scan_file(_write(tmp_path, "t.safetensors", data[:-cut]))
        assert result.status != "safe", cut


def _gguf_bytes(tmp_path: Path) -> bytes:
    import gguf

    path = tmp_path / "g.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("t")
    writer.add_tensor("w", np.zeros((2, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def test_gguf_inconsistent_counts_and_lengths(tmp_path: Path) -> None:
    data = bytearray(_gguf_bytes(tmp_path))
    assert scan_file(_write(tmp_path, "ok.gguf", bytes(data))).status == "safe"
    for offset, value in ((8, 1 << 40), (16, 1 << 40)):  # tensor count, kv count
        broken = bytearray(data)
        struct.pack_into("<Q", broken, offset, value)
        result = scan_file(_write(tmp_path, "bad.gguf", bytes(broken)))
        assert result.status == "error" and "cannot fit" in result.errors[0]
    broken = bytearray(data)
    struct.pack_into("<Q", broken, 24, 1 << 50)  # first key's string length
    result = scan_file(_write(tmp_path, "bad.gguf", bytes(broken)))
    assert result.status == "error" and "string length" in result.errors[0]
    for cut in (1, 40, 130):
        assert scan_file(_write(tmp_path, "cut.gguf", bytes(data[:-cut]))).status == "error"


def test_npy_truncated_and_trailing(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(10.0))
    data = buffer.getvalue()
    assert scan_file(_write(tmp_path, "a.npy", data[:-3])).status == "error"
    trailing = scan_file(_write(tmp_path, "b.npy", data + b"\x80\x04N."))
    assert trailing.max_severity == Severity.UNKNOWN


def _zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_zip_bomb_is_not_expanded(tmp_path: Path) -> None:
    bomb = _zip({"big.bin": b"\0" * (64 << 20)})
    assert len(bomb) < 200_000
    result = scan_file(_write(tmp_path, "bomb.zip", bomb))
    assert any("ratio" in f.message for f in result.findings)
    assert result.errors


def test_nested_archive_depth_is_bounded(tmp_path: Path) -> None:
    data = b"\x80\x04N."
    for level in range(7):
        data = _zip({f"level{level}.zip" if level else "x.pkl": data})
    result = scan_file(_write(tmp_path, "deep.zip", data), limits=ScanLimits(max_archive_depth=3))
    assert any("nested more than 3" in e for e in result.errors)
    assert result.status == "error"


def test_too_many_members(tmp_path: Path) -> None:
    data = _zip({f"f{i}.txt": b"x" for i in range(20)})
    result = scan_file(_write(tmp_path, "many.zip", data),
                       limits=ScanLimits(max_archive_members=10))
    assert result.errors and "over the limit" in result.errors[0]


def test_corrupt_zip_is_an_error(tmp_path: Path) -> None:
    data = bytearray(_zip({"a.pkl": b"\x80\x04N."}))
    data[-10:] = b"\xff" * 10
    assert scan_file(_write(tmp_path, "c.zip", bytes(data))).status == "error"


def test_tar_traversal_and_devices(tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        info = tarfile.TarInfo("../outside.pkl")
        info.size = 4
        archive.addfile(info, io.BytesIO(b"\x80\x04N."))
        dev = tarfile.TarInfo("dev")
        dev.type = tarfile.CHRTYPE
        archive.addfile(dev)
    result = scan_file(_write(tmp_path, "t.tar", raw.getvalue()))
    kinds = {(f.subject, f.severity) for f in result.findings}
    assert ("../outside.pkl", Severity.DANGEROUS) in kinds
    assert ("dev", Severity.UNKNOWN) in kinds


def test_gzip_bomb_is_bounded(tmp_path: Path) -> None:
    import gzip

    data = gzip.compress(b"\0" * (32 << 20), 9)
    result = scan_file(_write(tmp_path, "b.gz", data),
                       limits=ScanLimits(max_decompressed_bytes=1 << 20))
    assert result.errors


def test_temporary_space_per_member_is_bounded(tmp_path: Path) -> None:
    """A compressed member that is no bomb but expands past max_spool_bytes is not spooled."""
    import gzip
    import os
    import pickle

    payload = os.urandom(3 << 20) + pickle.dumps({"w": 1})  # incompressible: ratio ~1
    data = gzip.compress(payload, 1)
    path = _write(tmp_path, "big.gz", data)
    limited = scan_file(path, limits=ScanLimits(max_spool_bytes=1 << 20))
    assert limited.status == "error"
    assert any("limit of temporary space" in e for e in limited.errors), limited.errors
    assert not scan_file(path).errors  # within the default limit it is scanned


def test_hdf5_without_h5py_is_an_error_not_clean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import h5py

    path = tmp_path / "m.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {}})
    import sys

    monkeypatch.setitem(sys.modules, "h5py", None)
    result = scan_file(path)
    assert result.status == "error" and "weightvault[scan]" in result.errors[0]


def test_onnx_malformed_and_claimed(tmp_path: Path) -> None:
    result = scan_file(_write(tmp_path, "m.onnx", b"\x08\x07\x3a\xff\xff\xff\x0f"))
    assert result.status == "error" and "onnx" in result.errors[0]


def test_special_files_and_read_errors_are_errors(tmp_path: Path) -> None:
    import os

    from weightvault.scan import scan_paths

    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "ok.pkl").write_bytes(b"\x80\x04N.")
    report = scan_paths([tmp_path])
    statuses = {Path(r.path).name: r.status for r in report.files}
    assert statuses == {"pipe": "error", "ok.pkl": "safe"}
    assert scan_file(tmp_path).status == "error"  # a folder given as a file: read error


def _legacy_record(*values: bytes, tensor_type: bytes) -> bytes:
    """A protocol-2 pickle of a 3-tuple whose last item is the GLOBAL ``torch.<tensor_type>``,
    as torch 0.3 pickled ``(key, storage_id, type(tensor))`` (values: pickled items, no frame)."""
    return b"\x80\x02" + b"".join(values) + b"ctorch\n" + tensor_type + b"\n\x87q\x00."


def _item(value: object) -> bytes:
    import pickle

    return pickle.dumps(value, protocol=2)[2:-1]


class _TensorRef:
    """Stands for a tensor in the legacy ``pickle`` member (persistent id ``str(key)``)."""

    def __init__(self, key: int) -> None:
        self.key = key


def _legacy_tar(tmp_path: Path, main_pickle: bytes | None, name: str, *,
                tensors: dict[str, np.ndarray] | None = None,
                member_names: dict[str, str] | None = None,
                tensor_record: bytes | None = None) -> Path:
    """The pre-0.4 PyTorch tar layout, written as torch 0.3's ``_save`` wrote it (torch can no
    longer write it; ``torch.load`` still reads it): ``sys_info``, ``pickle`` (the object, with
    persistent ids ``str(key)`` for tensors), ``tensors`` (count, then per tensor a pickled
    ``(key, storage key, torch.FloatTensor)`` and its sizes and strides), ``storages`` (count,
    then per storage a pickled ``(key, location, torch.FloatStorage)``, its element count and
    bytes, then the list of views)."""
    import pickle

    arrays = tensors if tensors is not None else {"w": np.arange(6, dtype=np.float32)}
    keys = {field: 1000 + i for i, field in enumerate(arrays)}

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj: object) -> str | None:
            return str(obj.key) if isinstance(obj, _TensorRef) else None

    if main_pickle is None:
        buffer = io.BytesIO()
        _Pickler(buffer, protocol=2).dump({f: _TensorRef(k) for f, k in keys.items()})
        main_pickle = buffer.getvalue()
    types = {np.dtype(np.float32): b"Float", np.dtype(np.int64): b"Long"}
    tensors_member = pickle.dumps(len(arrays), protocol=2)
    storages_member = pickle.dumps(len(arrays), protocol=2)
    for field, array in arrays.items():
        key, kind = keys[field], types[array.dtype]
        tensors_member += tensor_record or _legacy_record(
            _item(key), _item(key + 5000), tensor_type=kind + b"Tensor")
        tensors_member += struct.pack("<i", array.ndim) + bytes(4)
        tensors_member += struct.pack(f"<{array.ndim}q", *array.shape)
        tensors_member += struct.pack(f"<{array.ndim}q", *(s // array.itemsize
                                                         for s in array.strides))
        tensors_member += struct.pack("<q", 0)
        storages_member += _legacy_record(_item(key + 5000), _item("cpu"),
                                          tensor_type=kind + b"Storage")
        storages_member += struct.pack("<q", array.size) + array.tobytes()
    storages_member += pickle.dumps([], protocol=2)
    sys_info = pickle.dumps({"protocol_version": 1000, "little_endian": True,
                             "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
    renames = member_names or {}
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member, data in (("sys_info", sys_info), ("pickle", main_pickle),
                             ("tensors", tensors_member), ("storages", storages_member)):
            info = tarfile.TarInfo(renames.get(member, member))
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    path = tmp_path / name
    path.write_bytes(raw.getvalue())
    return path


def test_legacy_tar_layout_loads_under_torch_and_scans_without_danger(tmp_path: Path) -> None:
    import torch

    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.arange(3)}
    path = _legacy_tar(tmp_path, None, "old.pt", tensors=arrays)
    loaded = torch.load(path, weights_only=False)  # benign: shows the writer is faithful
    assert loaded["w"].tolist() == arrays["w"].tolist() and loaded["n"].tolist() == [0, 1, 2]
    result = scan_file(path)
    assert result.format == "pytorch-legacy-tar"
    assert not result.errors and result.max_severity < Severity.DANGEROUS, result
    # torch's getmember wants the exact names: ./storages is no legacy checkpoint to it
    renamed = _legacy_tar(tmp_path, None, "dot.pt", member_names={
        "storages": "./storages", "tensors": "./tensors", "pickle": "./pickle"})
    with pytest.raises(KeyError):
        torch.load(renamed, weights_only=False)
    result = scan_file(renamed)
    assert result.format == "tar" and result.status != "safe", result


def test_legacy_tar_payloads_are_found_in_every_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    payload = (b"\x80\x02cbuiltins\nopen\nX" + struct.pack("<I", len(str(marker)))
               + str(marker).encode() + b"X\x01\x00\x00\x00w\x86R.")
    evil = _legacy_tar(tmp_path, payload, "evil.pt")
    assert scan_file(evil).max_severity == Severity.DANGEROUS
    # a tensor record whose "type" is a call: the record is a payload of its own
    record = (b"\x80\x02" + _item(1000) + _item(6000) + b"cbuiltins\neval\nX\x01\x00\x00\x001"
              b"\x85R\x87q\x00.")
    result = scan_file(_legacy_tar(tmp_path, None, "record.pt", tensor_record=record))
    assert result.max_severity == Severity.DANGEROUS
    assert any(f.subject == "builtins.eval" for f in result.findings), result.findings
    subprocess.run([sys.executable, "-c",
                    "import sys, torch; torch.load(sys.argv[1], weights_only=False)", str(evil)],
                   check=False, timeout=120, capture_output=True)
    assert marker.exists()  # the pickle member runs under torch.load


def test_legacy_pytorch_tar_walked_record_by_record(tmp_path: Path) -> None:
    import pickle

    benign = _legacy_tar(tmp_path, pickle.dumps({"w": "t0"}, protocol=2), "benign.pt")
    result = scan_file(benign)
    assert result.format == "pytorch-legacy-tar" and not result.errors, result
    evil = _legacy_tar(tmp_path, b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.", "evil.pt")
    assert scan_file(evil).max_severity == Severity.DANGEROUS
    # a storage record whose size runs past the member is an error, not clean
    data = bytearray(benign.read_bytes())
    index = data.find(struct.pack("<q", 6) + np.arange(6, dtype=np.float32).tobytes()[:8])
    assert index > 0
    struct.pack_into("<q", data, index, 1 << 40)
    broken = tmp_path / "broken_tar.pt"
    broken.write_bytes(bytes(data))
    broken_result = scan_file(broken)
    assert broken_result.status != "safe" and broken_result.errors, broken_result


def test_npz_with_datetime_structured_and_other_dtypes_is_clean(tmp_path: Path) -> None:
    arrays = {
        "dt": np.array(["2020-01-01", "NaT"], dtype="datetime64[D]"),
        "ns": np.array([1, 2], dtype="datetime64[ns]"),
        "td": np.array([1, 2], dtype="timedelta64[s]"),
        "generic": np.array(["NaT"], dtype="datetime64"),
        "record": np.array([(1, 2.0, b"ab", "xy", (1, 2))], dtype=[
            ("a", "i4"), ("b", "f8"), ("c", "S2"), ("d", "U2"), ("e", "i2", (2,))]),
        "aligned": np.zeros(3, dtype=np.dtype([("a", "u1"), ("b", "f8")], align=True)),
        "titled": np.zeros(2, dtype=np.dtype({"names": ["x"], "formats": ["<f4"],
                                              "titles": ["the x"]})),
        "nested": np.zeros(2, dtype=[("p", [("x", "f4"), ("y", "f4")]), ("t", "M8[ms]")]),
        "text": np.array(["héllo", ""]), "void": np.zeros(2, dtype="V7"),
        "complex": np.array([1 + 2j]), "half": np.ones(3, np.float16),
        "longdouble": np.ones(2, np.longdouble), "big": np.arange(3, dtype=">i8"),
        "empty": np.zeros((0, 5)), "scalar": np.array(3.5),
        "fortran": np.asfortranarray(np.ones((3, 2))),
    }
    np.savez(tmp_path / "mixed.npz", **arrays)  # type: ignore[arg-type]
    np.savez_compressed(tmp_path / "mixed_c.npz", **arrays)  # type: ignore[arg-type]
    for name in ("mixed.npz", "mixed_c.npz"):
        result = scan_file(tmp_path / name)
        assert (result.format, result.status, result.errors) == ("npz", "safe", ()), result
    with zipfile.ZipFile(tmp_path / "mixed.npz") as archive:
        record = archive.read("record.npy")
    assert scan_file(_write(tmp_path, "cut.npy", record[:-3])).status == "error"


@pytest.mark.parametrize("descr", ["'<M8[D]x'", "'<i3'", "[('a', '<i4', (-1,))]",
                                   "[(1, '<i4')]", "('<f4', 'x')", "'<Q8'"])
def test_npy_with_malformed_dtype_descriptions_is_an_error(tmp_path: Path, descr: str) -> None:
    header = f"{{'descr': {descr}, 'fortran_order': False, 'shape': (1,), }}".encode()
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(8)
    result = scan_file(_write(tmp_path, "bad.npy", data))
    assert result.status == "error" and result.errors[0].startswith("npy: "), result


def test_miniz_view_agrees_with_zipfile_on_every_corpus_zip(corpus_root: Path) -> None:
    """Where the miniz emulation says zipfile reads the same list, zipfile really does."""
    from weightvault.scan.formats.zip_views import ZipReadError, read_miniz

    checked = 0
    for path in sorted(corpus_root.rglob("*")):
        if not path.is_file() or not zipfile.is_zipfile(path):
            continue
        with open(path, "rb") as handle:
            try:
                miniz = read_miniz(handle, 0, path.stat().st_size)
            except ZipReadError:
                continue
            with zipfile.ZipFile(handle) as archive:
                infos = archive.infolist()
        if not miniz.zipfile_agrees:
            continue
        checked += 1
        assert [(m.name, m.flags, m.method, m.compress_size, m.file_size, m.header_offset)
                for m in miniz.members] == [
            (i.orig_filename, i.flag_bits, i.compress_type, i.compress_size, i.file_size,
             i.header_offset) for i in infos], path.name
    assert checked >= 10


def test_disagreeing_zip64_end_records_are_never_clean(tmp_path: Path) -> None:
    import torch

    from weightvault.scan.formats.zip_views import ZipReadError, read_miniz

    path = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2)}, path)
    data = bytearray(path.read_bytes())
    with open(path, "rb") as handle:
        assert read_miniz(handle, 0, len(data)).zipfile_agrees
    record = data.rfind(b"PK\x06\x06")
    struct.pack_into("<Q", data, record + 32, 999)  # zip64 entry count differs
    (tmp_path / "bad.pt").write_bytes(bytes(data))
    with open(tmp_path / "bad.pt", "rb") as handle, pytest.raises(ZipReadError, match="multi"):
        read_miniz(handle, 0, len(data))  # total and on-this-disk counts differ
    result = scan_file(tmp_path / "bad.pt")
    assert result.status == "error" and "readers disagree" in result.errors[0]


@pytest.mark.parametrize("junk", [b"", b"\xff\xfe garbage", b"(" * 3])
def test_payload_in_a_tensor_storage_counts_even_if_malformed_after_it(
    tmp_path: Path, junk: bytes
) -> None:
    """A pickle hidden in a storage member that imports os.system and then breaks (no STOP,
    an invalid opcode, an open MARK) was dropped as 'random tensor bytes'."""
    import torch

    payload = b"\x80\x02cos\nsystem\n(X\x04\x00\x00\x00trueR" + junk  # never loaded here
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buffer)
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("archive/data/99", payload)
    result = scan_file(_write(tmp_path, "m.pt", buffer.getvalue()))
    assert result.max_severity == Severity.DANGEROUS, (result.findings, result.errors)
    assert any(f.subject == "os.system" or f.subject == "posix.system" for f in result.findings)


def test_random_tensor_bytes_that_start_like_a_pickle_stay_clean(tmp_path: Path) -> None:
    import random

    import torch

    rng = random.Random(7)
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buffer)
    with zipfile.ZipFile(buffer, "a") as archive:
        for index in range(200):  # PROTO 2 then random bytes: fail at once, import nothing
            data = b"\x80\x02" + bytes(rng.getrandbits(8) for _ in range(256))
            archive.writestr(f"archive/data/{100 + index}", data)
    result = scan_file(_write(tmp_path, "r.pt", buffer.getvalue()))
    assert result.max_severity == Severity.SAFE, result.findings


def test_payload_after_legacy_storages_counts_even_if_malformed_after_it(tmp_path: Path) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buffer, _use_new_zipfile_serialization=False)
    payload = b"\x80\x02cos\nsystem\n(X\x04\x00\x00\x00trueR\xff"  # junk instead of STOP
    result = scan_file(_write(tmp_path, "legacy.pt", buffer.getvalue() + payload))
    assert result.max_severity == Severity.DANGEROUS, (result.findings, result.errors)
