"""The hashing engine: known answers, ranges, worker-count independence, errors, progress."""

from __future__ import annotations

import hashlib
import itertools
import random
from pathlib import Path

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightvault.errors import InputError
from weightvault.hashing import HashJob, default_workers, hash_jobs, new_hasher


def _reference(hash_type: str, data: bytes) -> bytes:
    if hash_type == "sha256":
        return hashlib.sha256(data).digest()
    if hash_type == "blake2":
        return hashlib.blake2b(data).digest()
    return blake3.blake3(data).digest()


@pytest.fixture
def files(tmp_path: Path) -> list[tuple[Path, bytes]]:
    rng = random.Random(7)
    out = []
    for index, size in enumerate([0, 1, 4095, 1 << 20, (1 << 20) + 17, 3 * (1 << 20) + 5]):
        data = rng.randbytes(size)
        path = tmp_path / f"f{index}"
        path.write_bytes(data)
        out.append((path, data))
    return out


@pytest.mark.parametrize("hash_type", ["sha256", "blake2", "blake3"])
def test_whole_files_match_reference(hash_type: str, files: list[tuple[Path, bytes]]) -> None:
    jobs = [HashJob(p, p.name, len(d)) for p, d in files]
    digests = hash_jobs(jobs, hash_type)
    assert digests == [_reference(hash_type, d) for _, d in files]


@pytest.mark.parametrize("hash_type", ["sha256", "blake2", "blake3"])
def test_ranges_match_reference(hash_type: str, files: list[tuple[Path, bytes]]) -> None:
    path, data = files[-1]
    cuts = [(0, 0), (0, 1), (5, 1 << 20), (1 << 20, len(data)), (len(data) - 1, len(data))]
    jobs = [HashJob(path, "x", e - s, s, e) for s, e in cuts]
    assert hash_jobs(jobs, hash_type, chunk_size=65536) == [
        _reference(hash_type, data[s:e]) for s, e in cuts
    ]


@pytest.mark.parametrize("hash_type", ["sha256", "blake2", "blake3"])
def test_max_workers_and_chunk_size_do_not_change_digests(
    hash_type: str, files: list[tuple[Path, bytes]]
) -> None:
    jobs = [HashJob(p, p.name, len(d)) for p, d in files]
    baseline = hash_jobs(jobs, hash_type, max_workers=1)
    for workers in (2, 3, 8):
        for chunk in (None, 4096, 3 * 1000 + 7):
            assert hash_jobs(jobs, hash_type, max_workers=workers, chunk_size=chunk) == baseline


def test_results_keep_job_order_not_completion_order(files: list[tuple[Path, bytes]]) -> None:
    jobs = [HashJob(p, p.name, len(d)) for p, d in reversed(files)]
    assert hash_jobs(jobs, "sha256", max_workers=4) == [
        hashlib.sha256(d).digest() for _, d in reversed(files)
    ]


def test_progress_reports_every_byte(files: list[tuple[Path, bytes]]) -> None:
    seen: list[int] = []
    jobs = [HashJob(p, p.name, len(d)) for p, d in files]
    hash_jobs(jobs, "sha256", max_workers=2, progress=seen.append)
    assert sum(seen) == sum(len(d) for _, d in files)


def test_missing_file_is_input_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"weights\.bin: cannot open"):
        hash_jobs([HashJob(tmp_path / "nope", "weights.bin", 1)], "sha256")


@pytest.mark.parametrize("hash_type", ["sha256", "blake3"])
def test_unreadable_file_is_input_error(tmp_path: Path, hash_type: str) -> None:
    # A folder opens but cannot be read: the same path as an unreadable file, even as root.
    with pytest.raises(InputError, match=r"locked: (read failed|cannot map)"):
        hash_jobs([HashJob(tmp_path, "locked", 1)], hash_type)


def test_byte_at_a_time_reads_give_the_same_digest(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(3000)
    path = tmp_path / "small"
    path.write_bytes(data)
    assert hash_jobs([HashJob(path, "small", len(data))], "sha256", chunk_size=1) == [
        hashlib.sha256(data).digest()
    ]


@pytest.mark.parametrize("hash_type", ["sha256", "blake2", "blake3"])
def test_range_past_end_of_file_is_an_error(tmp_path: Path, hash_type: str) -> None:
    path = tmp_path / "short"
    path.write_bytes(b"abc")
    with pytest.raises(InputError, match="shorter than expected"):
        hash_jobs([HashJob(path, "short", 10, 0, 10)], hash_type)


def test_mapped_and_read_blake3_agree(files: list[tuple[Path, bytes]]) -> None:
    path, data = files[-1]
    cuts = [(0, len(data)), (1, 70000), (65536, len(data)), (5, 5)]
    jobs = [HashJob(path, "x", e - s, s, e) for s, e in cuts]
    expected = [blake3.blake3(data[s:e]).digest() for s, e in cuts]
    assert hash_jobs(jobs, "blake3", use_mmap=True) == expected
    assert hash_jobs(jobs, "blake3", use_mmap=False) == expected


def test_one_failure_stops_the_run(tmp_path: Path, files: list[tuple[Path, bytes]]) -> None:
    jobs = [HashJob(p, p.name, len(d)) for p, d in files]
    jobs.append(HashJob(tmp_path / "gone", "gone", 1 << 30))
    with pytest.raises(InputError, match="gone"):
        hash_jobs(jobs, "blake2", max_workers=3)


def test_bad_arguments_are_caller_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        hash_jobs([], "md5")
    with pytest.raises(ValueError):
        hash_jobs([], "sha256", max_workers=0)
    with pytest.raises(ValueError):
        new_hasher("sha1")
    assert hash_jobs([], "sha256") == []
    assert default_workers() >= 1


@settings(max_examples=25, deadline=None)
@given(
    data=st.binary(max_size=20000),
    cuts=st.lists(st.integers(min_value=0, max_value=20000), max_size=6),
    workers=st.integers(min_value=1, max_value=5),
    chunk=st.integers(min_value=1, max_value=9000),
    hash_type=st.sampled_from(["sha256", "blake2", "blake3"]),
)
def test_any_split_hashes_like_the_reference(
    tmp_path_factory: pytest.TempPathFactory,
    data: bytes,
    cuts: list[int],
    workers: int,
    chunk: int,
    hash_type: str,
) -> None:
    path = tmp_path_factory.mktemp("prop") / "blob"
    path.write_bytes(data)
    points = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
    ranges = list(itertools.pairwise(points)) or [(0, 0)]
    jobs = [HashJob(path, "blob", e - s, s, e) for s, e in ranges]
    assert hash_jobs(jobs, hash_type, max_workers=workers, chunk_size=chunk) == [
        _reference(hash_type, data[s:e]) for s, e in ranges
    ]
