"""Every parser: random input is refused cleanly or round-trips byte for byte (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weightvault.errors import FormatError, VerificationError
from weightvault.tlog import (
    Checkpoint,
    ConsistencyProof,
    Ed25519NoteSigner,
    LogExport,
    TlogProof,
    VerifierKey,
    WitnessState,
    parse_note,
    sign_note,
)

SIGNER = Ed25519NoteSigner.generate("example.com/fuzz")
CHECKPOINT = sign_note(
    Checkpoint("example.com/fuzz", 5, bytes(range(32))).to_text(), [SIGNER]
).to_bytes()
PROOF = TlogProof(index=3, hashes=(b"\x01" * 32, b"\x02" * 32), checkpoint=CHECKPOINT).to_bytes()
CONSISTENCY = ConsistencyProof(2, 5, (b"\x03" * 32, b"\x04" * 32)).to_bytes()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PARSERS = {
    "note": lambda b: parse_note(b).to_bytes(),
    "checkpoint": lambda b: Checkpoint.from_text(b.decode("utf-8")).to_text().encode(),
    "tlog-proof": lambda b: TlogProof.from_bytes(b).to_bytes(),
    "consistency": lambda b: ConsistencyProof.from_bytes(b).to_bytes(),
    "vkey": lambda b: VerifierKey.from_text(b.decode("ascii")).to_text().encode(),
    "export": lambda b: LogExport.from_json(b).to_json(),
    "witness-state": lambda b: WitnessState.from_json(b).to_json(),
}
SEEDS = {
    "note": CHECKPOINT,
    "checkpoint": Checkpoint("example.com/fuzz", 5, bytes(range(32))).to_text().encode(),
    "tlog-proof": PROOF,
    "consistency": CONSISTENCY,
    "vkey": SIGNER.verifier_key.to_text().encode(),
    "export": LogExport("example.com/fuzz", (CHECKPOINT,), (b"e",), (b"\x05" * 32,)).to_json(),
    "witness-state": WitnessState(SIGNER.verifier_key.to_text(), CHECKPOINT.decode()).to_json(),
}


def _parse_or_refuse(name: str, data: bytes) -> None:
    try:
        out = PARSERS[name](data)
    except (FormatError, VerificationError, UnicodeDecodeError):
        return
    # Anything accepted is canonical: it re-encodes to exactly the input (except JSON layout).
    if name not in {"export", "witness-state"}:
        assert out == data


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_seeds_round_trip_byte_for_byte(name: str) -> None:
    assert PARSERS[name](SEEDS[name]) == SEEDS[name]


@pytest.mark.parametrize("name", sorted(PARSERS))
@FUZZ
@given(data=st.data())
def test_mutated_inputs_are_refused_or_canonical(name: str, data: st.DataObject) -> None:
    seed = bytearray(SEEDS[name])
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if not seed:
            break
        position = data.draw(st.integers(0, len(seed) - 1))
        if action == "flip":
            seed[position] ^= data.draw(st.integers(1, 255))
        elif action == "delete":
            del seed[position]
        elif action == "insert":
            seed.insert(position, data.draw(st.integers(0, 255)))
        else:
            del seed[position:]
    _parse_or_refuse(name, bytes(seed))


@pytest.mark.parametrize("name", sorted(PARSERS))
@FUZZ
@given(blob=st.binary(max_size=300))
def test_random_bytes_are_refused_or_canonical(name: str, blob: bytes) -> None:
    _parse_or_refuse(name, blob)


def test_consistency_proof_file_is_strict() -> None:
    for bad in (
        CONSISTENCY.replace(b"old 2", b"old 02"),
        CONSISTENCY.replace(b"new 5", b"new -5"),
        CONSISTENCY + b"\n",
        CONSISTENCY[:-1],
        CONSISTENCY.replace(b"@v1", b"@v2"),
        b"x" * (200 * 1024),
    ):
        with pytest.raises(FormatError):
            ConsistencyProof.from_bytes(bad)
