"""record_bundle / verify_bundle_log_entry with real model_signing key-signed bundles."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from tests.keyfiles import write_ec_key_pair
from tests.tlog.tlog_helpers import ORIGIN

from weightvault.errors import FormatError, UsageError, VerificationError
from weightvault.tlog import (
    Ed25519NoteSigner,
    TransparencyLog,
    WitnessPolicy,
    cosign_checkpoint,
    record_bundle,
    verify_bundle_log_entry,
)
from weightvault.tlog.note import SIG_COSIGNATURE_V1


def _model_signing_bundle(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """Sign a small model with the real model_signing package (EC P-256 key)."""
    import model_signing

    model = tmp_path / f"model-{name}"
    model.mkdir()
    (model / "weights.bin").write_bytes(name.encode() * 1000)
    (model / "config.json").write_text('{"layers": 2}')
    private_path, public_path = write_ec_key_pair(tmp_path, name)
    signature = tmp_path / f"{name}.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=private_path).sign(
        model, signature
    )
    return model, signature, public_path


def _model_signing_verify(model: Path, signature: Path, public_key: Path) -> None:
    import model_signing

    model_signing.verifying.Config().use_elliptic_key_verifier(
        public_key=public_key
    ).set_hashing_config(
        model_signing.hashing.Config().set_ignored_paths(paths=[], ignore_git_paths=True)
    ).verify(model, signature)


@pytest.fixture
def sqlite_log(tmp_path: Path) -> TransparencyLog:
    log = TransparencyLog.create(tmp_path / "bundles.db", ORIGIN)
    log.append_many([b"earlier entry %d" % i for i in range(11)])
    return log


def test_recorded_bundle_still_verifies_with_model_signing_and_offline(
    tmp_path: Path, sqlite_log: TransparencyLog, log_signer: Ed25519NoteSigner
) -> None:
    model, signature, public_key = _model_signing_bundle(tmp_path, "a")
    recorded = record_bundle(sqlite_log, signature.read_bytes(), log_signer, now=lambda: 1.7e9)
    signature.write_bytes(recorded)
    _model_signing_verify(model, signature, public_key)  # the peer still accepts it
    (model / "weights.bin").write_bytes(b"tampered")
    with pytest.raises(ValueError):  # and the peer's check is real
        _model_signing_verify(model, signature, public_key)
    entry = json.loads(recorded)["verificationMaterial"]["tlogEntries"][0]
    assert entry["logIndex"] == "11" and entry["integratedTime"] == "1700000000"
    assert entry["inclusionProof"]["treeSize"] == "12"
    assert entry["kindVersion"] == {"kind": "weightvault.dev/dsse", "version": "0.0.1"}
    proof = verify_bundle_log_entry(recorded, log_signer.verifier_key)
    assert (proof.index, proof.tree_size) == (11, 12)
    assert verify_bundle_log_entry(recorded, log_signer.verifier_key.to_text()).index == 11


def test_entry_is_bound_to_its_envelope_and_log(
    tmp_path: Path, sqlite_log: TransparencyLog, log_signer: Ed25519NoteSigner
) -> None:
    _, sig_a, _ = _model_signing_bundle(tmp_path, "a")
    _, sig_b, _ = _model_signing_bundle(tmp_path, "b")
    rec_a = json.loads(record_bundle(sqlite_log, sig_a.read_bytes(), log_signer))
    rec_b = json.loads(record_bundle(sqlite_log, sig_b.read_bytes(), log_signer))
    # The entry of bundle A moved onto bundle B: refused.
    rec_b["verificationMaterial"]["tlogEntries"] = rec_a["verificationMaterial"]["tlogEntries"]
    with pytest.raises(VerificationError, match="does not describe this bundle"):
        verify_bundle_log_entry(json.dumps(rec_b).encode(), log_signer.verifier_key)
    # The envelope's signature changed under the entry: refused.
    changed = json.loads(json.dumps(rec_a))
    sig = base64.b64decode(changed["dsseEnvelope"]["signatures"][0]["sig"])
    changed["dsseEnvelope"]["signatures"][0]["sig"] = base64.b64encode(
        sig[:-1] + bytes([sig[-1] ^ 1])
    ).decode()
    with pytest.raises(VerificationError, match="does not describe this bundle"):
        verify_bundle_log_entry(json.dumps(changed).encode(), log_signer.verifier_key)
    # A different log key: refused.
    other = Ed25519NoteSigner.generate(ORIGIN)
    with pytest.raises(VerificationError, match="different log"):
        verify_bundle_log_entry(json.dumps(rec_a).encode(), other.verifier_key)
    # No entry at all.
    bare = json.loads(sig_a.read_bytes())
    with pytest.raises(VerificationError, match="0 weightvault log entries"):
        verify_bundle_log_entry(json.dumps(bare).encode(), log_signer.verifier_key)
    with pytest.raises(UsageError, match="already has a transparency-log entry"):
        record_bundle(sqlite_log, json.dumps(rec_a).encode(), log_signer)


def test_every_field_of_the_entry_is_checked(
    tmp_path: Path, sqlite_log: TransparencyLog, log_signer: Ed25519NoteSigner
) -> None:
    _, signature, _ = _model_signing_bundle(tmp_path, "a")
    recorded = json.loads(record_bundle(sqlite_log, signature.read_bytes(), log_signer))
    entry = recorded["verificationMaterial"]["tlogEntries"][0]
    proof = entry["inclusionProof"]
    mutations = {
        "logIndex": lambda e: e.__setitem__("logIndex", "10"),
        "proof.logIndex": lambda e: e["inclusionProof"].__setitem__("logIndex", "10"),
        "treeSize": lambda e: e["inclusionProof"].__setitem__("treeSize", "13"),
        "rootHash": lambda e: e["inclusionProof"].__setitem__(
            "rootHash", base64.b64encode(b"\1" * 32).decode()
        ),
        "hash": lambda e: e["inclusionProof"]["hashes"].__setitem__(
            0, base64.b64encode(b"\2" * 32).decode()
        ),
        "extra hash": lambda e: e["inclusionProof"]["hashes"].append(proof["hashes"][0]),
        "missing hash": lambda e: e["inclusionProof"]["hashes"].pop(),
        "integratedTime": lambda e: e.__setitem__("integratedTime", "1"),
        "checkpoint": lambda e: e["inclusionProof"]["checkpoint"].__setitem__(
            "envelope", proof["checkpoint"]["envelope"].replace("12\n", "13\n")
        ),
        "body": lambda e: e.__setitem__(
            "canonicalizedBody",
            base64.b64encode(base64.b64decode(e["canonicalizedBody"]) + b" ").decode(),
        ),
        "version": lambda e: e["kindVersion"].__setitem__("version", "0.0.2"),
        "bool index": lambda e: e.__setitem__("logIndex", True),
    }
    for name, mutate in mutations.items():
        copy = json.loads(json.dumps(recorded))
        mutate(copy["verificationMaterial"]["tlogEntries"][0])
        with pytest.raises((VerificationError, FormatError)):
            verify_bundle_log_entry(json.dumps(copy).encode(), log_signer.verifier_key)
            pytest.fail(f"mutation {name!r} was accepted")
    for bad in (b"[]", b"{", b'{"a": 1, "a": 2}', b"x" * 10):
        with pytest.raises(FormatError):
            verify_bundle_log_entry(bad, log_signer.verifier_key)


def test_witness_policy_applies_to_bundle_entries(
    tmp_path: Path, sqlite_log: TransparencyLog, log_signer: Ed25519NoteSigner
) -> None:
    _, signature, _ = _model_signing_bundle(tmp_path, "a")
    recorded = json.loads(record_bundle(sqlite_log, signature.read_bytes(), log_signer))
    witness = Ed25519NoteSigner.generate("witness.example/w1", sig_type=SIG_COSIGNATURE_V1)
    policy = WitnessPolicy(witnesses=(witness.verifier_key,), threshold=1)
    with pytest.raises(VerificationError, match="0 of the required 1"):
        verify_bundle_log_entry(
            json.dumps(recorded).encode(), log_signer.verifier_key, witnesses=policy
        )
    proof = recorded["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
    cosigned = cosign_checkpoint(
        proof["checkpoint"]["envelope"].encode(),
        witness=witness,
        log_key=log_signer.verifier_key,
        state_path=tmp_path / "w1.state",
    )
    proof["checkpoint"]["envelope"] = cosigned.decode()
    result = verify_bundle_log_entry(
        json.dumps(recorded).encode(), log_signer.verifier_key, witnesses=policy
    )
    assert result.checkpoint.witnesses == ("witness.example/w1",)
