"""The log on SQLite and on a real PostgreSQL server: proofs, refusals, exports, crashes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from tests.tlog.tlog_helpers import ORIGIN, reference_root

from weightvault.errors import FormatError, InputError, KeyMaterialError, VerificationError
from weightvault.tlog import (
    Ed25519NoteSigner,
    GroupCommitter,
    LogExport,
    TlogProof,
    TransparencyLog,
    merkle,
    verify_checkpoint,
    verify_export,
    verify_tlog_proof,
)

WRITER = Path(__file__).with_name("tlog_writer_process.py")
REPO = Path(__file__).resolve().parents[2]


def _execute(log: TransparencyLog, *statements: str) -> None:
    """Run raw SQL against the log's database: the insider with database access."""
    store = log.store
    conn = store._conn()  # type: ignore[attr-defined]
    for statement in statements:
        conn.execute(statement)
    if hasattr(conn, "commit") and not getattr(conn, "autocommit", True):
        conn.commit()
    log.clear_cache()


def test_roots_and_proofs_match_the_reference_for_every_size(log: TransparencyLog) -> None:
    entries = [f"e{i}".encode() for i in range(130)]
    rng = random.Random(3)
    position = 0
    while position < len(entries):  # mixed single appends and batches
        step = rng.choice([1, 1, 2, 3, 7])
        assert log.append_many(entries[position : position + step]) == position
        position = min(len(entries), position + step)
    assert log.size() == 130
    leaves = [merkle.leaf_hash(e) for e in entries]
    for n in range(0, 131):
        root = reference_root(entries[:n])
        assert log.root(n) == root
        if n == 0:
            continue
        for index in {0, n // 3, n - 1}:
            merkle.verify_inclusion(leaves[index], index, n, log.inclusion_proof(index, n), root)
        for m in {1, n // 2 or 1, n}:
            proof = log.consistency_proof(m, n)
            merkle.verify_consistency(m, n, proof, reference_root(entries[:m]), root)
    assert log.entry(77) == b"e77"
    indices = [0, 5, 64, 129, 5]
    assert log.inclusion_proofs(indices, 130) == [log.inclusion_proof(i, 130) for i in indices]


def test_proofs_read_o_log_n_hashes(log: TransparencyLog, monkeypatch: pytest.MonkeyPatch) -> None:
    log.append_many([b"%d" % i for i in range(5000)])
    reads: list[int] = []
    original = log.store.read_hashes

    def counting(ids):  # type: ignore[no-untyped-def]
        reads.append(len(ids))
        return original(ids)

    monkeypatch.setattr(log.store, "read_hashes", counting)
    for index in (0, 1234, 4999):
        log._cache.clear()
        log._ragged.clear()
        reads.clear()
        assert len(log.inclusion_proof(index)) <= 13
        # One query for the complete siblings, one for the ragged right edge (cached after).
        assert sum(reads) <= 2 * 13 and len(reads) <= 2
    log._cache.clear()
    log._known_size = 0
    log._ragged.clear()
    reads.clear()
    log.consistency_proof(1000, 5000)
    assert sum(reads) <= 3 * 13 and len(reads) == 1


def test_refuses_to_sign_a_checkpoint_inconsistent_with_an_earlier_one(
    log: TransparencyLog, log_signer: Ed25519NoteSigner
) -> None:
    log.append_many([b"a", b"b", b"c", b"d", b"e"])
    first = log.sign_checkpoint(log_signer)
    # An insider rewrites history consistently (entries and every stored hash) and appends.
    _execute(
        log,
        "DELETE FROM tlog_entries",
        "DELETE FROM tlog_hashes",
        "UPDATE tlog_state SET size = 0",
    )
    log.append_many([b"a", b"B", b"c", b"d", b"e", b"f"])
    with pytest.raises(VerificationError, match="refusing to sign"):
        log.sign_checkpoint(log_signer)
    assert log.latest_checkpoint() == first


def test_refuses_to_sign_after_a_rollback_or_a_forged_checkpoint_row(
    log: TransparencyLog, log_signer: Ed25519NoteSigner
) -> None:
    log.append_many([b"%d" % i for i in range(9)])
    log.sign_checkpoint(log_signer)
    _execute(
        log,
        "DELETE FROM tlog_entries WHERE idx >= 4",
        "DELETE FROM tlog_hashes WHERE id >= 7",  # stored_hash_count(4) == 7
        "UPDATE tlog_state SET size = 4",
    )
    with pytest.raises(VerificationError, match="refusing to sign"):
        log.sign_checkpoint(log_signer)
    other = Ed25519NoteSigner.generate(ORIGIN)
    with pytest.raises(VerificationError, match="refusing to sign"):
        log.sign_checkpoint(other)  # the previous checkpoint does not verify under this key
    with pytest.raises(KeyMaterialError, match="not this log's origin"):
        log.sign_checkpoint(Ed25519NoteSigner.generate("example.com/other"))


def test_prove_refuses_when_storage_no_longer_matches_the_checkpoint(
    log: TransparencyLog, log_signer: Ed25519NoteSigner
) -> None:
    log.append_many([b"x", b"y", b"z"])
    log.sign_checkpoint(log_signer)
    _execute(
        log,
        "UPDATE tlog_entries SET data = "
        + (
            "X'5a5a'"
            if isinstance(log.store.location, str) and log.store.location.endswith(".db")
            else "'\\x5a5a'::bytea"
        )
        + " WHERE idx = 1",
    )
    with pytest.raises(VerificationError, match="entry 1 is not in the tree"):
        log.prove(1)
    with pytest.raises(InputError, match="not covered by the checkpoint"):
        log.prove(3)


def _signed_log(log: TransparencyLog, signer: Ed25519NoteSigner, n: int, trusted_at: int) -> bytes:
    log.append_many([b"entry-%d" % i for i in range(trusted_at)])
    trusted = log.sign_checkpoint(signer)
    log.append_many([b"entry-%d" % i for i in range(trusted_at, n)])
    log.sign_checkpoint(signer)
    return trusted


def test_export_verifies_end_to_end_and_imports(
    log: TransparencyLog, log_signer: Ed25519NoteSigner, tmp_path: Path
) -> None:
    trusted = _signed_log(log, log_signer, 40, 17)
    log.append(b"not yet checkpointed")
    exported = log.export()
    assert len(exported.entries) == 40
    data = exported.to_json()
    assert LogExport.from_json(data) == exported
    result = verify_export(data, log_signer.verifier_key, trusted_checkpoint=trusted)
    assert (result.size, result.trusted_size) == (40, 17)
    imported = TransparencyLog.import_export(
        tmp_path / "copy.db", exported, log_signer.verifier_key, trusted_checkpoint=trusted
    )
    assert imported.root() == log.root(40)
    assert imported.sign_checkpoint(log_signer)  # consistent with the imported checkpoints
    imported.close()


def test_import_into_each_backend_refuses_a_tampered_export(
    tmp_path: Path, log_location: str, log_signer: Ed25519NoteSigner
) -> None:
    source = TransparencyLog.create(tmp_path / "source.db", ORIGIN)
    trusted = _signed_log(source, log_signer, 12, 5)
    exported = source.export()
    bad = LogExport(
        exported.origin, exported.checkpoints, exported.entries[::-1], exported.leaf_hashes
    )
    with pytest.raises(VerificationError, match="entry 0: "):
        TransparencyLog.import_export(log_location, bad, log_signer.verifier_key)
    imported = TransparencyLog.import_export(
        log_location, exported, log_signer.verifier_key, trusted_checkpoint=trusted
    )
    assert imported.root() == source.root()
    assert imported.checkpoints() == source.checkpoints()
    imported.close()


def _mutations(entries: list[bytes], index: int) -> dict[str, list[bytes]]:
    out = {
        "change": [*entries[:index], entries[index] + b"!", *entries[index + 1 :]],
        "delete": entries[:index] + entries[index + 1 :],
        "insert": [*entries[:index], b"inserted", *entries[index:]],
    }
    if index + 1 < len(entries):
        out["reorder"] = [
            *entries[:index],
            entries[index + 1],
            entries[index],
            *entries[index + 2 :],
        ]
    return out


@pytest.mark.parametrize("log_location", ["sqlite"], indirect=True)
def test_mutation_suite_names_the_first_bad_index(
    log: TransparencyLog, log_signer: Ed25519NoteSigner
) -> None:
    trusted = _signed_log(log, log_signer, 40, 17)
    exported = log.export()
    entries = list(exported.entries)
    for index in range(len(entries)):
        for kind, mutated in _mutations(entries, index).items():
            bad = LogExport(
                origin=exported.origin,
                checkpoints=exported.checkpoints,
                entries=tuple(mutated),
                leaf_hashes=exported.leaf_hashes,
            )
            with pytest.raises(VerificationError, match=rf"entry {index}: ") as caught:
                verify_export(bad.to_json(), log_signer.verifier_key, trusted_checkpoint=trusted)
            assert "does not match its signed checkpoints" in caught.value.message, kind
    appended = LogExport(
        exported.origin, exported.checkpoints, (*entries, b"extra"), exported.leaf_hashes
    )
    with pytest.raises(VerificationError, match="entry 40: not covered"):
        verify_export(appended, log_signer.verifier_key, trusted_checkpoint=trusted)


@pytest.mark.parametrize("log_location", ["sqlite"], indirect=True)
def test_export_older_than_the_trusted_checkpoint_is_a_rollback(
    log: TransparencyLog, log_signer: Ed25519NoteSigner
) -> None:
    log.append_many([b"1", b"2"])
    log.sign_checkpoint(log_signer)
    old_export = log.export()
    log.append(b"3")
    newer = log.sign_checkpoint(log_signer)
    with pytest.raises(VerificationError, match="rolled back"):
        verify_export(old_export, log_signer.verifier_key, trusted_checkpoint=newer)
    # A checkpoint from a forked history (same key, different entries) is not a prefix.
    with pytest.raises(VerificationError):
        forked = LogExport(old_export.origin, (newer,), (b"1", b"2", b"x"), old_export.leaf_hashes)
        verify_export(forked, log_signer.verifier_key)


@pytest.mark.parametrize("log_location", ["sqlite"], indirect=True)
def test_every_byte_flip_of_a_proof_or_checkpoint_fails(
    log: TransparencyLog, log_signer: Ed25519NoteSigner
) -> None:
    log.append_many([b"%d" % i for i in range(21)])
    log.sign_checkpoint(log_signer)
    proof = log.prove(13).to_bytes()
    verify_tlog_proof(proof, b"13", log_signer.verifier_key)
    for position in range(len(proof)):
        mutated = bytearray(proof)
        mutated[position] ^= 0x01
        with pytest.raises((FormatError, VerificationError)):
            verify_tlog_proof(bytes(mutated), b"13", log_signer.verifier_key)
    checkpoint = log.latest_checkpoint()
    assert checkpoint is not None
    for position in range(len(checkpoint)):
        mutated = bytearray(checkpoint)
        mutated[position] ^= 0x20
        with pytest.raises((FormatError, VerificationError)):
            verify_checkpoint(bytes(mutated), log_signer.verifier_key)
    with pytest.raises(VerificationError, match=r"^inclusion proof failed$"):
        verify_tlog_proof(proof, b"14", log_signer.verifier_key)


@pytest.mark.parametrize("log_location", ["sqlite"], indirect=True)
def test_proofs_with_extra_missing_or_oversized_hashes_are_rejected(
    log: TransparencyLog, log_signer: Ed25519NoteSigner
) -> None:
    log.append_many([b"%d" % i for i in range(10)])
    log.sign_checkpoint(log_signer)
    proof = log.prove(3)
    for hashes in ((*proof.hashes, proof.hashes[0]), proof.hashes[:-1], ()):
        bad = TlogProof(proof.index, hashes, proof.checkpoint)
        with pytest.raises(VerificationError, match=r"^inclusion proof failed$"):
            verify_tlog_proof(bad.to_bytes(), b"3", log_signer.verifier_key)
    with pytest.raises(FormatError, match="more than 126 hashes"):
        TlogProof.from_bytes(TlogProof(3, proof.hashes * 50, proof.checkpoint).to_bytes())
    with pytest.raises(FormatError, match="larger than"):
        TlogProof.from_bytes(b"x" * (200 * 1024))


def test_concurrent_threads_leave_no_gaps_or_duplicates(
    log: TransparencyLog, log_signer: Ed25519NoteSigner
) -> None:
    acks: dict[int, bytes] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(25):
                batch = [f"{name}-{i}-{j}".encode() for j in range(1 + i % 3)]
                first = log.append_many(batch)
                with lock:
                    for offset, entry in enumerate(batch):
                        assert first + offset not in acks
                        acks[first + offset] = entry
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"t{k}",)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    size = log.size()
    assert sorted(acks) == list(range(size))
    stored = log.store.read_entries(0, size)
    assert stored == [acks[i] for i in range(size)]
    assert log.root() == reference_root(stored)
    log.sign_checkpoint(log_signer)


def _spawn_writer(location: str, prefix: str, count: int, batch: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen(
        [sys.executable, str(WRITER), location, prefix, str(count), str(batch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _parse_acks(text: str) -> dict[int, bytes]:
    acks: dict[int, bytes] = {}
    for line in text.splitlines():
        _, index, entry = line.split(" ")
        assert int(index) not in acks
        acks[int(index)] = entry.encode()
    return acks


def test_concurrent_processes_leave_no_gaps_or_duplicates(
    log: TransparencyLog, log_location: str
) -> None:
    writers = [_spawn_writer(log_location, f"p{k}", 30, 1 + k) for k in range(3)]
    acks: dict[int, bytes] = {}
    for process in writers:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        for index, entry in _parse_acks(out).items():
            assert index not in acks
            acks[index] = entry
    size = log.size()
    assert size == 90  # 30 per writer, in batches of 1, 2 and 3
    assert sorted(acks) == list(range(size))
    stored = log.store.read_entries(0, size)
    assert stored == [acks[i] for i in range(size)]
    assert log.root() == reference_root(stored)


def test_kill_9_in_a_tight_append_loop_loses_no_acknowledged_entry(
    log: TransparencyLog, log_location: str, log_signer: Ed25519NoteSigner
) -> None:
    log.append(b"before")
    log.sign_checkpoint(log_signer)
    rng = random.Random(9)
    acks: dict[int, bytes] = {}
    for round_number in range(3):  # three crashes, each at a random point of the loop
        process = _spawn_writer(log_location, f"k{round_number}", 0, 3)
        assert process.stdout is not None
        lines: list[str] = []
        wanted = rng.randrange(60, 150)
        deadline = time.monotonic() + 60
        while len(lines) < wanted and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
        time.sleep(rng.uniform(0, 0.02))
        os.kill(process.pid, signal.SIGKILL)
        rest, _ = process.communicate(timeout=30)
        assert process.returncode == -signal.SIGKILL
        round_acks = _parse_acks("".join(lines) + rest)
        assert len(round_acks) >= wanted
        assert not set(round_acks) & set(acks)
        acks.update(round_acks)
    reopened = TransparencyLog.open(log_location)
    size = reopened.size()
    assert size >= max(acks) + 1
    stored = reopened.store.read_entries(0, size)
    assert len(stored) == size
    for index, entry in acks.items():
        assert stored[index] == entry
    assert reopened.root() == reference_root(stored)
    reopened.sign_checkpoint(log_signer)
    verify_export(reopened.export(), log_signer.verifier_key)
    reopened.close()


def test_caller_misuse_is_descriptive(log: TransparencyLog, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one entry"):
        log.append_many([])
    with pytest.raises(TypeError):
        log.append("text")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="larger than the 1048576-byte limit"):
        log.append(b"x" * (1 << 20 + 1))
    with pytest.raises(InputError, match="not below the tree size 0"):
        log.inclusion_proof(0)
    with pytest.raises(InputError, match="no signed checkpoint"):
        log.prove(0)
    with pytest.raises(InputError, match="already"):
        TransparencyLog.create(log.store.location, ORIGIN)
    with pytest.raises(InputError, match="no such log"):
        TransparencyLog.open(tmp_path / "missing.db")
    with pytest.raises(ValueError, match="origin"):
        TransparencyLog.create(tmp_path / "new.db", "has space")


def test_group_commit_batches_concurrent_single_appends(log: TransparencyLog) -> None:
    committer = GroupCommitter(log, max_batch=64)
    acks: dict[int, bytes] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(40):
                entry = f"{name}-{i}".encode()
                index = committer.append(entry)
                with lock:
                    assert index not in acks
                    acks[index] = entry
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"g{k}",)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(acks) == list(range(320))
    assert log.store.read_entries(0, 320) == [acks[i] for i in range(320)]
    assert committer.commits < 320  # appends shared commits
    with pytest.raises(InputError):  # a failing batch reports to its callers
        committer.append(b"x" * (1 << 20 + 1))
    assert committer.append(b"after") == 320


def test_export_of_a_fork_signed_by_the_log_key_is_reported_as_a_rewrite(
    tmp_path: Path, log_signer: Ed25519NoteSigner
) -> None:
    honest = TransparencyLog.create(tmp_path / "honest.db", ORIGIN)
    honest.append_many([b"a", b"b", b"c"])
    trusted = honest.sign_checkpoint(log_signer)
    forked = TransparencyLog.create(tmp_path / "forked.db", ORIGIN)
    forked.append_many([b"a", b"X", b"c", b"d"])
    forked.sign_checkpoint(log_signer)  # the key holder signs a second history
    with pytest.raises(VerificationError, match="rewrote its history") as caught:
        verify_export(forked.export(), log_signer.verifier_key, trusted_checkpoint=trusted)
    assert "size 3" in caught.value.message
    # An export mixing checkpoints of both histories is refused the same way.
    mixed = forked.export()
    mixed = LogExport(mixed.origin, (trusted, *mixed.checkpoints), mixed.entries, mixed.leaf_hashes)
    with pytest.raises(VerificationError, match="rewrote its history"):
        verify_export(mixed, log_signer.verifier_key)


def test_concurrent_creation_yields_one_log_and_clean_refusals(log_location: str) -> None:
    results: list[str] = []
    lock = threading.Lock()

    def create() -> None:
        try:
            TransparencyLog.create(log_location, ORIGIN).close()
            outcome = "created"
        except InputError:
            outcome = "refused"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["created", "refused", "refused", "refused"]
    reopened = TransparencyLog.open(log_location)
    assert reopened.append(b"first") == 0
    reopened.close()
