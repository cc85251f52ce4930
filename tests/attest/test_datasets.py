"""Datasets: signed like models (and verified by model-signing), row groups verified alone."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import model_signing
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightvault.attest import (
    AttestationError,
    AttestationFailure,
    attest_row_groups,
    digest_subject,
    layout_shard,
    make_statement,
    open_dataset_shard,
    row_groups_predicate,
    sign_attestation,
    verify_attestation,
    verify_dataset_rows,
    verify_row_groups,
)
from weightvault.errors import FormatError, InputError, VerificationError
from weightvault.signing import KeySigner, KeyVerifier, check, sign

ROWS = 5000


def _table() -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(ROWS), pa.int64()),
            "text": [f"example {i} " * (i % 7 + 1) for i in range(ROWS)],
            "label": pa.array([i % 3 for i in range(ROWS)]).dictionary_encode(),
        }
    )


def _write_arrow(path: Path, table: pa.Table, *, stream: bool, batch: int) -> None:
    with pa.OSFile(str(path), "wb") as sink:
        opener = pa.ipc.new_stream if stream else pa.ipc.new_file
        with opener(sink, table.schema) as writer:
            for chunk in table.to_batches(max_chunksize=batch):
                writer.write_batch(chunk)


def make_dataset(root: Path) -> Path:
    """Parquet (with page indexes), Arrow file and stream, JSONL shards, and a README."""
    (root / "train").mkdir(parents=True)
    table = _table()
    pq.write_table(table, root / "train" / "part-0.parquet", row_group_size=1200)
    pq.write_table(
        table, root / "train" / "part-1.parquet", row_group_size=2000, write_page_index=True
    )
    _write_arrow(root / "train" / "part-2.arrow", table, stream=False, batch=1500)
    _write_arrow(root / "cache.arrow", table, stream=True, batch=2222)
    (root / "eval.jsonl").write_text(
        "".join(json.dumps({"q": f"question {i}", "a": i}) + "\n" for i in range(95))
    )
    (root / "README.md").write_text("# corpus\n")
    return root


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))


@pytest.mark.parametrize(
    ("name", "fmt", "count", "rows"),
    [
        ("train/part-0.parquet", "parquet", 5, [1200, 1200, 1200, 1200, 200]),
        ("train/part-1.parquet", "parquet", 3, [2000, 2000, 1000]),
        ("train/part-2.arrow", "arrow", 4, [1500, 1500, 1500, 500]),
        ("cache.arrow", "arrow", 3, [2222, 2222, 556]),
        ("eval.jsonl", "jsonl", 4, [30, 30, 30, 5]),
    ],
)
def test_layouts_match_what_readers_read(
    tmp_path: Path, name: str, fmt: str, count: int, rows: list[int]
) -> None:
    dataset = make_dataset(tmp_path / "corpus")
    layout = layout_shard(dataset / name, lines_per_group=30)
    assert layout.format == fmt
    assert [g.rows for g in layout.groups] == rows
    assert len(layout.groups) == count
    # Groups and metadata tile the file exactly: every byte is covered once.
    spans = sorted([*layout.groups, *layout.metadata], key=lambda r: r.start)
    assert spans[0].start == 0 and spans[-1].end == layout.size
    assert all(a.end == b.start for a, b in itertools.pairwise(spans))
    if fmt == "parquet":
        # A row group's range holds what pyarrow reads for it: its column chunks.
        metadata = pq.ParquetFile(dataset / name).metadata
        for index, group in enumerate(layout.groups):
            column = metadata.row_group(index).column(0)
            assert group.start <= column.data_page_offset < group.end


def test_folder_and_shard_datasets_sign_here_and_verify_with_model_signing(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    dataset = make_dataset(tmp_path / "corpus")
    sign(dataset, KeySigner.from_file(keys[0]))
    peer = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=keys[1])
    peer.set_hashing_config(model_signing.hashing.Config().set_ignored_paths(paths=["model.sig"]))
    peer.verify(dataset, dataset / "model.sig")
    # Large shards are cut into pieces (shards serialization): the peer agrees on those too.
    shard = dataset / "train" / "part-1.parquet"
    sign(
        shard,
        KeySigner.from_file(keys[0]),
        signature_path=tmp_path / "shard.sig",
        serialization="shards",
        shard_size=10_000,
    )
    peer_shards = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=keys[1])
    peer_shards.set_hashing_config(
        model_signing.hashing.Config().use_shard_serialization(shard_size=10_000)
    )
    peer_shards.verify(shard, tmp_path / "shard.sig")
    # And both notice one flipped byte.
    _flip(shard, 1234)
    with pytest.raises(ValueError):
        peer_shards.verify(shard, tmp_path / "shard.sig")
    result = check(dataset, None, KeyVerifier.from_file(keys[1]))
    assert result.changed == ("train/part-1.parquet",)


def test_model_signing_signs_a_dataset_weightvault_verifies(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    dataset = make_dataset(tmp_path / "corpus")
    model_signing.signing.Config().use_elliptic_key_signer(private_key=keys[0]).sign(
        dataset, tmp_path / "peer.sig"
    )
    result = check(dataset, tmp_path / "peer.sig", KeyVerifier.from_file(keys[1]))
    assert result.ok, result.problems()
    assert result.manifest is not None
    assert result.manifest.root_digest == digest_subject(dataset).digest


def _signed_rows(dataset: Path, keys: tuple[Path, Path], lines: int = 30) -> Path:
    signed = sign(dataset, KeySigner.from_file(keys[0]))
    predicate = row_groups_predicate(dataset, lines_per_group=lines)
    return attest_row_groups(dataset, signed.manifest, KeySigner.from_file(keys[0]), predicate)


@pytest.mark.parametrize(
    "name", ["train/part-0.parquet", "train/part-1.parquet", "train/part-2.arrow", "eval.jsonl"]
)
def test_a_flipped_byte_in_a_read_row_group_is_caught(
    tmp_path: Path, keys: tuple[Path, Path], name: str
) -> None:
    dataset = make_dataset(tmp_path / "corpus")
    _signed_rows(dataset, keys)
    verifier = KeyVerifier.from_file(keys[1])
    groups = verify_dataset_rows(dataset, name, [0, 2], verifier=verifier)
    assert len(groups) == 2 and groups[0].rows > 0
    layout = layout_shard(dataset / name, lines_per_group=30)
    middle = (layout.groups[1].start + layout.groups[1].end) // 2
    _flip(dataset / name, middle)
    # Groups 0 and 2 were not touched: they still verify, reading only their bytes.
    assert verify_dataset_rows(dataset, name, [0, 2], verifier=verifier) == groups
    with pytest.raises(VerificationError, match="row group 1"):
        verify_dataset_rows(dataset, name, [1], verifier=verifier)
    # The whole-dataset check sees it too.
    assert check(dataset, None, verifier).changed == (name,)


def test_a_changed_footer_is_caught_whatever_group_is_read(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    dataset = make_dataset(tmp_path / "corpus")
    _signed_rows(dataset, keys)
    shard = dataset / "train" / "part-0.parquet"
    _flip(shard, shard.stat().st_size - 20)  # inside the Thrift footer
    with pytest.raises(VerificationError, match="metadata bytes"):
        verify_dataset_rows(
            dataset, "train/part-0.parquet", [0], verifier=KeyVerifier.from_file(keys[1])
        )


def test_row_groups_bound_to_the_dataset_digest(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    dataset = make_dataset(tmp_path / "corpus")
    stored = _signed_rows(dataset, keys)
    verifier = KeyVerifier.from_file(keys[1])
    # Re-signing the dataset after a change moves its root digest: the old row-group
    # attestation no longer applies and is refused as about another subject.
    (dataset / "README.md").write_text("# corpus, edited\n")
    sign(dataset, KeySigner.from_file(keys[0]))
    with pytest.raises(AttestationError) as caught:
        verify_dataset_rows(dataset, "eval.jsonl", [0], verifier=verifier)
    assert caught.value.failure is AttestationFailure.WRONG_SUBJECT
    stored.unlink()
    with pytest.raises(AttestationError) as caught:
        verify_dataset_rows(dataset, "eval.jsonl", [0], verifier=verifier)
    assert caught.value.failure is AttestationFailure.MISSING


def test_single_shard_dataset_and_api_misuse(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    shard = tmp_path / "train.parquet"
    pq.write_table(_table(), shard, row_group_size=1000)
    subject = digest_subject(shard, role="dataset")
    statement = make_statement(subject, "row-groups", row_groups_predicate(shard))
    bundle = sign_attestation(statement, KeySigner.from_file(keys[0]))
    record = verify_attestation(
        bundle,
        verifier=KeyVerifier.from_file(keys[1]),
        expected_subject_digest=subject.digest,
        expected_predicate_type="row-groups",
    )
    assert [f["name"] for f in record.predicate["files"]] == ["."]
    assert [r.rows for r in verify_row_groups(shard, [4, 0], record)] == [1000, 1000]
    with pytest.raises(InputError, match="row group 5"):
        verify_row_groups(shard, [5], record)
    with pytest.raises(InputError, match="not among"):
        verify_row_groups(shard, [0], record, name="other.parquet")
    with open(shard, "ab") as handle:
        handle.write(b"appended")
    with pytest.raises(VerificationError, match="the file changed"):
        verify_row_groups(shard, [0], record)


def test_not_a_shard(tmp_path: Path) -> None:
    fake = tmp_path / "fake.parquet"
    fake.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(FormatError, match="not a readable Parquet file"):
        layout_shard(fake)
    truncated = tmp_path / "cut.arrow"
    _write_arrow(truncated, _table(), stream=True, batch=1000)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(FormatError, match="runs past the end"):
        layout_shard(truncated)
    with pytest.raises(InputError, match="no Parquet, Arrow or JSONL"):
        (tmp_path / "only").mkdir()
        (tmp_path / "only" / "notes.txt").write_text("x")
        row_groups_predicate(tmp_path / "only")


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(st.binary(max_size=9).map(lambda b: b.replace(b"\n", b"")), max_size=40),
    trailing=st.booleans(),
    per_group=st.integers(min_value=1, max_value=12),
    chunk=st.integers(min_value=1, max_value=16),
)
def test_jsonl_groups_match_a_plain_line_split(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lines: list[bytes],
    trailing: bool,
    per_group: int,
    chunk: int,
) -> None:
    """Whatever the chunk size (lines cut across reads), groups are whole lines, in order."""
    import weightvault.attest._layouts as layouts

    monkeypatch.setattr(layouts, "_CHUNK", chunk)
    data = b"\n".join(lines) + (b"\n" if trailing and lines else b"")
    path = tmp_path / "lines.jsonl"
    path.write_bytes(data)
    groups = layout_shard(path, lines_per_group=per_group).groups
    split = [line + b"\n" for line in data.split(b"\n")]  # lines as \n alone ends them
    split[-1] = split[-1][:-1]
    if not split[-1]:
        split.pop()
    expected = [split[i : i + per_group] for i in range(0, len(split), per_group)]
    assert [data[g.start : g.end] for g in groups] == [b"".join(e) for e in expected]
    assert [g.rows for g in groups] == [len(e) for e in expected]


def test_a_reader_parses_only_checked_bytes(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    """open_dataset_shard: pyarrow reads through it; a group is checked by the read that
    delivers it, so a rotten group fails inside the reader and intact ones read normally."""
    dataset = make_dataset(tmp_path / "corpus")
    name = "train/big.parquet"  # groups of about 160 KB: larger than pyarrow's first read
    big = pa.table({"id": pa.array(range(100_000), pa.int64()), "x": pa.array(range(100_000))})
    pq.write_table(big, dataset / name, row_group_size=20_000, compression="none")
    _signed_rows(dataset, keys)
    verifier = KeyVerifier.from_file(keys[1])
    reference = pq.ParquetFile(dataset / name).read_row_groups([1, 3])
    with open_dataset_shard(dataset, name, verifier=verifier) as shard:
        assert pq.ParquetFile(shard).read_row_groups([1, 3]).equals(reference)
    layout = layout_shard(dataset / name)
    assert min(g.end - g.start for g in layout.groups[:-1]) > 65536
    _flip(dataset / name, (layout.groups[2].start + layout.groups[2].end) // 2)
    with open_dataset_shard(dataset, name, verifier=verifier) as shard:
        parquet = pq.ParquetFile(shard)
        assert parquet.read_row_groups([1, 3]).equals(reference)
        with pytest.raises(VerificationError, match=r"row group 2 \(bytes"):
            parquet.read_row_groups([2])
    # Arrow IPC (file format) and JSONL read the same way.
    with open_dataset_shard(dataset, "train/part-2.arrow", verifier=verifier) as shard:
        batch = pa.ipc.open_file(shard).get_batch(2)
        assert batch.num_rows == 1500 and batch.column(0)[0].as_py() == 3000
    with open_dataset_shard(dataset, "eval.jsonl", verifier=verifier) as shard:
        lines = io.BufferedReader(shard).read().splitlines()
        assert len(lines) == 95 and json.loads(lines[94]) == {"q": "question 94", "a": 94}
    # A footer changed after the attestation: refused before the reader sees any of it.
    _flip(dataset / name, (dataset / name).stat().st_size - 20)
    with (
        open_dataset_shard(dataset, name, verifier=verifier) as shard,
        pytest.raises(VerificationError, match="metadata bytes"),
    ):
        pq.ParquetFile(shard)


def test_parquet_file_reads_only_the_groups_asked_for(
    tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    """Small groups, all within pyarrow's first 64 KiB read: given the checked footer, the
    reader touches only the groups it reads, so a rotten group elsewhere does not matter."""
    dataset = make_dataset(tmp_path / "corpus")
    _signed_rows(dataset, keys)
    name = "train/part-0.parquet"
    reference = pq.ParquetFile(dataset / name).read_row_groups([1, 3])
    layout = layout_shard(dataset / name)
    _flip(dataset / name, (layout.groups[2].start + layout.groups[2].end) // 2)
    verifier = KeyVerifier.from_file(keys[1])
    with open_dataset_shard(dataset, name, verifier=verifier) as shard:
        with pytest.raises(VerificationError, match=r"row group 2 \("):
            pq.ParquetFile(shard)  # its 64 KiB tail read reaches group 2
    with open_dataset_shard(dataset, name, verifier=verifier) as shard:
        parquet = shard.parquet_file()
        assert parquet.read_row_groups([1, 3]).equals(reference)
        with pytest.raises(VerificationError, match=r"row group 2 \("):
            parquet.read_row_groups([2])
    with open_dataset_shard(dataset, "eval.jsonl", verifier=verifier) as shard:
        with pytest.raises(ValueError, match="not Parquet"):
            shard.parquet_file()


def test_worker_count_does_not_change_the_predicate(tmp_path: Path) -> None:
    dataset = make_dataset(tmp_path / "corpus")
    one = row_groups_predicate(dataset, lines_per_group=7, max_workers=1)
    many = row_groups_predicate(dataset, lines_per_group=7, max_workers=4)
    assert one == many
    assert [f["name"] for f in one["files"]] == [
        "cache.arrow",
        "eval.jsonl",
        "train/part-0.parquet",
        "train/part-1.parquet",
        "train/part-2.arrow",
    ]
