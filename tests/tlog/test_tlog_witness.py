"""Witnesses: consistency from the remembered checkpoint, split views, k-of-n policies."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.tlog.tlog_helpers import ORIGIN

from weightvault.errors import FormatError, InputError, KeyMaterialError, VerificationError
from weightvault.tlog import (
    Checkpoint,
    ConsistencyProof,
    Ed25519NoteSigner,
    TransparencyLog,
    WitnessPolicy,
    WitnessState,
    cosign_checkpoint,
    verify_checkpoint,
)
from weightvault.tlog.note import SIG_COSIGNATURE_V1, parse_note


def _witness(name: str) -> Ed25519NoteSigner:
    return Ed25519NoteSigner.generate(name, sig_type=SIG_COSIGNATURE_V1)


@pytest.fixture
def sqlite_log(tmp_path: Path) -> TransparencyLog:
    return TransparencyLog.create(tmp_path / "w.db", ORIGIN)


def test_witness_follows_a_growing_log_and_keeps_state(
    tmp_path: Path, sqlite_log: TransparencyLog, log_signer: Ed25519NoteSigner
) -> None:
    witness = _witness("witness.example/w1")
    state = tmp_path / "w1.state"
    sqlite_log.append_many([b"a", b"b", b"c"])
    first = sqlite_log.sign_checkpoint(log_signer)
    cosigned = cosign_checkpoint(
        first, witness=witness, log_key=log_signer.verifier_key, state_path=state, now=lambda: 100
    )
    assert WitnessState.from_json(state.read_bytes()).checkpoint == first.decode()
    assert state.stat().st_mode & 0o777 == 0o600
    sqlite_log.append_many([b"d", b"e"])
    second = sqlite_log.sign_checkpoint(log_signer)
    with pytest.raises(InputError, match="consistency proof from size 3 to 5 is needed"):
        cosign_checkpoint(
            second, witness=witness, log_key=log_signer.verifier_key, state_path=state
        )
    proof = ConsistencyProof.from_bytes(sqlite_log.consistency(3).to_bytes())
    again = cosign_checkpoint(
        second,
        witness=witness,
        log_key=log_signer.verifier_key,
        state_path=state,
        consistency=proof,
        now=lambda: 200,
    )
    policy = WitnessPolicy(witnesses=(witness.verifier_key,), threshold=1)
    verified = verify_checkpoint(again, log_signer.verifier_key, witnesses=policy)
    assert verified.cosignature_times == {"witness.example/w1": 200}
    assert (
        verify_checkpoint(cosigned, log_signer.verifier_key, witnesses=policy).checkpoint.size == 3
    )
    # Re-cosigning the same checkpoint is fine; an older one is a shrink.
    cosign_checkpoint(second, witness=witness, log_key=log_signer.verifier_key, state_path=state)
    with pytest.raises(VerificationError, match="shrank from 5 to 3"):
        cosign_checkpoint(first, witness=witness, log_key=log_signer.verifier_key, state_path=state)


def test_witness_refuses_a_split_view(tmp_path: Path, log_signer: Ed25519NoteSigner) -> None:
    """A log that signs two different histories cannot get both cosigned by one witness."""
    witness = _witness("witness.example/w1")
    state = tmp_path / "w1.state"
    honest = TransparencyLog.create(tmp_path / "honest.db", ORIGIN)
    forked = TransparencyLog.create(tmp_path / "forked.db", ORIGIN)
    honest.append_many([b"a", b"b", b"c"])
    forked.append_many([b"a", b"X", b"c"])
    base = honest.sign_checkpoint(log_signer)
    cosign_checkpoint(base, witness=witness, log_key=log_signer.verifier_key, state_path=state)
    # Same size, different root.
    fork_same_size = forked.sign_checkpoint(log_signer)
    with pytest.raises(VerificationError, match="split view"):
        cosign_checkpoint(
            fork_same_size, witness=witness, log_key=log_signer.verifier_key, state_path=state
        )
    # Larger fork with a consistency proof from the forked history.
    forked.append(b"d")
    fork_bigger = forked.sign_checkpoint(log_signer)
    with pytest.raises(VerificationError, match="not consistent"):
        cosign_checkpoint(
            fork_bigger,
            witness=witness,
            log_key=log_signer.verifier_key,
            state_path=state,
            consistency=forked.consistency(3),
        )
    # A proof for the wrong sizes is refused too.
    honest.append(b"d")
    good = honest.sign_checkpoint(log_signer)
    with pytest.raises(VerificationError):
        cosign_checkpoint(
            good,
            witness=witness,
            log_key=log_signer.verifier_key,
            state_path=state,
            consistency=honest.consistency(2, 4),
        )
    cosign_checkpoint(
        good,
        witness=witness,
        log_key=log_signer.verifier_key,
        state_path=state,
        consistency=honest.consistency(3),
    )


def test_k_of_n_policy(
    tmp_path: Path, sqlite_log: TransparencyLog, log_signer: Ed25519NoteSigner
) -> None:
    witnesses = [_witness(f"witness.example/w{i}") for i in range(3)]
    sqlite_log.append(b"x")
    note = sqlite_log.sign_checkpoint(log_signer)
    for witness in witnesses[:2]:
        note = cosign_checkpoint(
            note,
            witness=witness,
            log_key=log_signer.verifier_key,
            state_path=tmp_path / f"{witness.name.replace('/', '_')}.state",
        )
    keys = tuple(w.verifier_key for w in witnesses)
    assert verify_checkpoint(note, log_signer.verifier_key, witnesses=WitnessPolicy(keys, 2))
    with pytest.raises(VerificationError, match="2 of the required 3"):
        verify_checkpoint(note, log_signer.verifier_key, witnesses=WitnessPolicy(keys, 3))
    # A cosignature repeated under a name the policy does not know counts for nothing.
    stranger = _witness("witness.example/w9")
    with pytest.raises(VerificationError, match="0 of the required 1"):
        verify_checkpoint(
            note, log_signer.verifier_key, witnesses=WitnessPolicy((stranger.verifier_key,), 1)
        )
    # A forged cosignature line from a known witness rejects the note.
    parsed = parse_note(note)
    bad_line = parsed.signatures[1]
    forged = type(bad_line)(
        bad_line.name,
        bad_line.key_id,
        bad_line.signature[:-1] + bytes([bad_line.signature[-1] ^ 1]),
    )
    broken = type(parsed)(parsed.text, (parsed.signatures[0], forged, parsed.signatures[2]))
    with pytest.raises(VerificationError):
        verify_checkpoint(
            broken.to_bytes(), log_signer.verifier_key, witnesses=WitnessPolicy(keys, 1)
        )
    for bad in ((),):
        with pytest.raises(ValueError):
            WitnessPolicy(bad, 1)
    with pytest.raises(ValueError):
        WitnessPolicy(keys, 4)
    with pytest.raises(ValueError):
        WitnessPolicy(keys, 0)
    with pytest.raises(ValueError):
        WitnessPolicy((log_signer.verifier_key,), 1)  # a log key is not a cosigner key


def test_witness_key_and_state_misuse(
    tmp_path: Path, sqlite_log: TransparencyLog, log_signer: Ed25519NoteSigner
) -> None:
    sqlite_log.append(b"x")
    note = sqlite_log.sign_checkpoint(log_signer)
    with pytest.raises(KeyMaterialError, match="not a cosignature key"):
        cosign_checkpoint(
            note, witness=log_signer, log_key=log_signer.verifier_key, state_path=tmp_path / "s"
        )
    state = tmp_path / "state"
    state.write_text("{}")
    with pytest.raises(FormatError, match="witness state"):
        cosign_checkpoint(
            note, witness=_witness("w"), log_key=log_signer.verifier_key, state_path=state
        )
    other_log = Ed25519NoteSigner.generate("example.com/other")
    other = TransparencyLog.create(tmp_path / "other.db", "example.com/other")
    other.append(b"y")
    state.unlink()
    cosign_checkpoint(
        note, witness=_witness("w"), log_key=log_signer.verifier_key, state_path=state
    )
    with pytest.raises(InputError, match="different log key"):
        cosign_checkpoint(
            other.sign_checkpoint(other_log),
            witness=_witness("w"),
            log_key=other_log.verifier_key,
            state_path=state,
        )


def test_checkpoint_parsing_is_strict_and_round_trips() -> None:
    text = "example.com/log\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    checkpoint = Checkpoint.from_text(text)
    assert (checkpoint.origin, checkpoint.size) == ("example.com/log", 20852163)
    assert checkpoint.to_text() == text
    with_ext = text + "extension line\n"
    assert Checkpoint.from_text(with_ext).extensions == ("extension line",)
    for bad in [
        text[:-1],
        text.replace("20852163", "020852163"),
        text.replace("20852163", "-1"),
        text.replace("20852163", "9223372036854775808"),
        text.replace("20852163", "２"),
        text.replace("=\n", "\n"),
        text.replace("CsUY", "CsU"),
        "\n" + text,
        " example.com/log" + text[15:],
        text + "\n",
        "example.com/log\n1\n",
    ]:
        with pytest.raises(FormatError):
            Checkpoint.from_text(bad)


def test_cosignatures_stored_in_the_log_travel_with_proofs_and_exports(
    tmp_path: Path, sqlite_log: TransparencyLog, log_signer: Ed25519NoteSigner
) -> None:
    from weightvault.tlog import verify_export, verify_tlog_proof

    witnesses = [_witness(f"witness.example/w{i}") for i in range(2)]
    sqlite_log.append_many([b"a", b"b"])
    note = sqlite_log.sign_checkpoint(log_signer)
    for witness in witnesses:
        cosigned = cosign_checkpoint(
            note,
            witness=witness,
            log_key=log_signer.verifier_key,
            state_path=tmp_path / f"{witness.name.replace('/', '_')}",
        )
        sqlite_log.add_cosignatures(cosigned, log_signer.verifier_key)
    policy = WitnessPolicy(tuple(w.verifier_key for w in witnesses), 2)
    proof = sqlite_log.prove(1).to_bytes()
    assert verify_tlog_proof(proof, b"b", log_signer.verifier_key, witnesses=policy).index == 1
    verify_export(sqlite_log.export(), log_signer.verifier_key, witnesses=policy)
    # A "cosigned" note over a different body is refused, even with a valid log signature.
    other = TransparencyLog.create(tmp_path / "other.db", ORIGIN)
    other.append_many([b"a", b"X"])
    with pytest.raises(VerificationError, match="differs from the one this log signed"):
        sqlite_log.add_cosignatures(other.sign_checkpoint(log_signer), log_signer.verifier_key)
    with pytest.raises(InputError, match="no checkpoint of size 1"):
        third = TransparencyLog.create(tmp_path / "third.db", ORIGIN)
        third.append(b"a")
        sqlite_log.add_cosignatures(third.sign_checkpoint(log_signer), log_signer.verifier_key)
