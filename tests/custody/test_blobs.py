"""Blob stores: ranged reads, atomic puts, and the sweep of ciphertext from uploads that died."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest

from weightvault.custody.blobs import FileBlobStore, open_blob_store
from weightvault.errors import UsageError


def test_file_store_reads_any_range_and_refuses_foreign_keys(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    data = os.urandom(9 << 20)
    source = tmp_path / "src"
    source.write_bytes(data)
    prefix = secrets.token_hex(16)
    store.put_file(f"{prefix}/0.wvenc", source)
    assert store.size(f"{prefix}/0.wvenc") == len(data)
    for start, length in ((0, 1), (5, 4 << 20), (len(data) - 3, 3), (123, 8 << 20)):
        got = b"".join(store.read_range(f"{prefix}/0.wvenc", start, length))
        assert got == data[start : start + length]
    for key in ("../x", f"{prefix}/../../etc/passwd", "a/0.wvenc", f"{prefix}/0.txt"):
        with pytest.raises(ValueError):
            store.size(key)


def test_sweep_removes_only_old_unreferenced_uploads(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path / "blobs")
    names = {kind: secrets.token_hex(16) for kind in ("kept", "old", "fresh")}
    for name in names.values():
        (tmp_path / "blobs" / name).mkdir()
        (tmp_path / "blobs" / name / "0.wvenc").write_bytes(b"x")
    hour_ago = time.time() - 7200
    for kind in ("kept", "old"):
        os.utime(tmp_path / "blobs" / names[kind], (hour_ago, hour_ago))
    removed = store.sweep({names["kept"]}, time.time() - 3600)
    assert removed == [names["old"]]
    assert {p.name for p in (tmp_path / "blobs").iterdir()} == {names["kept"], names["fresh"]}


@pytest.mark.parametrize("spec", ["ftp://x/y", "s3://", "http://bucket"])
def test_bad_blob_locations_are_usage_errors(tmp_path: Path, spec: str) -> None:
    with pytest.raises(UsageError):
        open_blob_store(spec, tmp_path)
