"""Mapped hashing is guarded by a read lease: truncation mid-hash is an error, never SIGBUS.

These tests use real leases on real files (Linux ``F_SETLEASE``) and real concurrent writers.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import blake3
import pytest

import weightvault.hashing as hashing
from weightvault.errors import InputError
from weightvault.hashing import HashJob, hash_jobs

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux leases")

WINDOW = 16 << 20


def reference(hash_type: str, data: bytes) -> bytes:
    if hash_type == "blake3":
        return blake3.blake3(data).digest()
    return hashlib.blake2b(data).digest()


@pytest.fixture
def model_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(4 * WINDOW + 12345)  # five windows, the last one short
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    return path, data


def lease_breaking(path: Path) -> bool:
    """True once /proc/locks shows a lease on ``path`` being broken."""
    inode = path.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        if "LEASE" in line and "BREAK" in line and f":{inode} " in line:
            return True
    return False


def test_lease_is_taken_on_a_quiet_file_and_released_on_close(
    model_file: tuple[Path, bytes],
) -> None:
    path, _ = model_file
    fd = os.open(path, os.O_RDONLY)
    try:
        assert hashing._take_read_lease(fd)
        assert not hashing._lease_broken(fd)
    finally:
        os.close(fd)
    start = time.monotonic()
    with open(path, "r+b"):  # would wait up to lease-break-time if the lease were still held
        pass
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("hash_type", ["blake3", "blake2"])
def test_hashing_leaves_no_lease_behind(model_file: tuple[Path, bytes], hash_type: str) -> None:
    path, data = model_file
    assert hash_jobs([HashJob(path, "weights.bin", len(data))], hash_type) == [
        reference(hash_type, data)
    ]
    start = time.monotonic()
    os.truncate(path, 0)  # a writer right after the hash is not delayed
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("hash_type", ["blake3", "blake2"])
def test_truncation_while_hashing_is_a_clean_error(
    model_file: tuple[Path, bytes], hash_type: str
) -> None:
    """The truncating process waits for the lease; the hash stops with a message, not SIGBUS."""
    path, data = model_file
    truncated = threading.Event()

    def truncate() -> None:
        os.truncate(path, 100)  # blocks in the kernel until the worker lets go of its lease
        truncated.set()

    writer = threading.Thread(target=truncate, daemon=True)

    def progress(_: int) -> None:
        if writer.is_alive() or truncated.is_set():
            return
        writer.start()
        deadline = time.monotonic() + 10
        while not lease_breaking(path):
            assert time.monotonic() < deadline, "the truncation never started to break the lease"
            time.sleep(0.01)
        assert not truncated.is_set()  # the kernel holds the truncation back

    job = HashJob(path, "weights.bin", len(data))
    with pytest.raises(InputError, match=r"weights\.bin: file changed while hashing"):
        hash_jobs([job], hash_type, max_workers=1, progress=progress)
    writer.join(10)
    assert truncated.is_set()
    assert path.stat().st_size == 100


def test_a_file_open_for_writing_is_read_not_mapped(
    model_file: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a writer present no lease is granted, so the job must not map the file."""
    path, data = model_file

    def no_mmap(*_: Any, **__: Any) -> None:
        raise AssertionError("mapped a file that someone has open for writing")

    with open(path, "r+b"):
        fd = os.open(path, os.O_RDONLY)
        try:
            assert not hashing._take_read_lease(fd)
        finally:
            os.close(fd)
        monkeypatch.setattr(mmap, "mmap", no_mmap)
        digests = hash_jobs([HashJob(path, "weights.bin", len(data))], "blake3")
    assert digests == [reference("blake3", data)]


def test_no_lease_when_the_program_handles_sigurg(model_file: tuple[Path, bytes]) -> None:
    path, _ = model_file
    previous = signal.signal(signal.SIGURG, lambda *_: None)
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            assert not hashing._take_read_lease(fd)
        finally:
            os.close(fd)
    finally:
        signal.signal(signal.SIGURG, previous)


def test_no_lease_when_the_kernel_would_not_wait_for_us(
    model_file: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lease-break-time of 0 lets writers through at once: mapping would be unsafe."""
    path, data = model_file
    monkeypatch.setattr(hashing, "_lease_break_seconds", lambda: 0)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert not hashing._take_read_lease(fd)
    finally:
        os.close(fd)
    assert hash_jobs([HashJob(path, "weights.bin", len(data))], "blake2") == [
        reference("blake2", data)
    ]


def test_sha256_never_maps(model_file: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    path, data = model_file

    def no_mmap(*_: Any, **__: Any) -> None:
        raise AssertionError("SHA-256 should read, not map")

    monkeypatch.setattr(mmap, "mmap", no_mmap)
    assert hash_jobs([HashJob(path, "weights.bin", len(data))], "sha256") == [
        hashlib.sha256(data).digest()
    ]
