"""Atomic output: nothing partial under the final name, no silent overwrite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from weightvault._fs import atomic_output, write_bytes_atomic
from weightvault.errors import InputError


def test_write_appears_complete(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    write_bytes_atomic(target, b"x" * 1000)
    assert target.read_bytes() == b"x" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_output(target) as handle:
        handle.write(b"partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_kept_without_force(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"original")
    with pytest.raises(InputError, match="already exists") as refused:
        write_bytes_atomic(target, b"new")
    assert refused.value.remedy == "overwrite"  # the CLI says "pass --force"
    assert target.read_bytes() == b"original"
    write_bytes_atomic(target, b"new", force=True)
    assert target.read_bytes() == b"new"


def test_race_with_concurrent_creator_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(InputError), atomic_output(target) as handle:
        handle.write(b"mine")
        target.write_bytes(b"theirs")  # someone else created it meanwhile
    assert target.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_directory_and_missing_parent_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a directory"):
        write_bytes_atomic(tmp_path, b"x")
    with pytest.raises(InputError, match="folder does not exist"):
        write_bytes_atomic(tmp_path / "nope" / "out.bin", b"x")


def test_special_file_never_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        write_bytes_atomic(fifo, b"x", force=True)
    assert fifo.is_fifo()
    with pytest.raises(InputError, match="not a regular file"):
        write_bytes_atomic(Path(os.devnull), b"x", force=True)
    assert Path(os.devnull).is_char_device()


def test_kill_during_write_leaves_no_final_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    code = (
        "import os, sys, time\n"
        "from weightvault._fs import atomic_output\n"
        f"with atomic_output(__import__('pathlib').Path({str(target)!r})) as h:\n"
        "    h.write(b'a' * 4096); h.flush(); print('written', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"written"
    proc.kill()
    proc.wait()
    assert not target.exists()
    leftovers = os.listdir(tmp_path)
    assert all(name.startswith(".out.bin.wvtmp-") for name in leftovers)
