"""Witness cosigning (c2sp.org/tlog-cosignature, Ed25519 ``cosignature/v1``).

A witness remembers the last checkpoint it cosigned for a log (a small JSON state file) and cosigns
a new checkpoint only when (1) the log's signature verifies, (2) the tree did not shrink, and (3) a
consistency proof shows the remembered tree is a prefix of the new one. A log that shows different
histories to different people (a split view) cannot get both views cosigned by the same witness,
so clients that require k-of-n cosignatures are protected unless k witnesses collude.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from weightvault._fs import write_bytes_atomic
from weightvault._json import load_object
from weightvault.errors import FormatError, InputError, KeyMaterialError, VerificationError
from weightvault.tlog.checkpoint import verify_checkpoint
from weightvault.tlog.note import SIG_COSIGNATURE_V1, NoteSigner, VerifierKey
from weightvault.tlog.proof import ConsistencyProof

__all__ = ["WITNESS_STATE_FORMAT", "WitnessState", "cosign_checkpoint"]

WITNESS_STATE_FORMAT = "weightvault.dev/witness-state@v1"
MAX_STATE_BYTES = 256 * 1024


@dataclass(frozen=True)
class WitnessState:
    """The last checkpoint a witness cosigned for one log (the note, verbatim)."""

    log_key: str
    checkpoint: str

    @classmethod
    def from_json(cls, data: bytes) -> WitnessState:
        doc = load_object(data, "witness state", max_bytes=MAX_STATE_BYTES)
        if set(doc) != {"format", "log_key", "checkpoint"}:
            raise FormatError("witness state: expected exactly format, log_key, checkpoint")
        if doc["format"] != WITNESS_STATE_FORMAT:
            raise FormatError(f"witness state: format must be {WITNESS_STATE_FORMAT!r}")
        if not isinstance(doc["log_key"], str) or not isinstance(doc["checkpoint"], str):
            raise FormatError("witness state: log_key and checkpoint must be strings")
        return cls(log_key=doc["log_key"], checkpoint=doc["checkpoint"])

    def to_json(self) -> bytes:
        doc = {
            "format": WITNESS_STATE_FORMAT,
            "log_key": self.log_key,
            "checkpoint": self.checkpoint,
        }
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def cosign_checkpoint(
    checkpoint: bytes,
    *,
    witness: NoteSigner,
    log_key: VerifierKey,
    state_path: Path,
    consistency: ConsistencyProof | None = None,
    now: Callable[[], float] = time.time,
) -> bytes:
    """Verify ``checkpoint`` against the remembered one and return it with a cosignature added.

    Steps: (1) the witness key is a cosignature key; (2) the log's signature verifies;
    (3) with a state file: same log, no shrinking, equal roots at equal size, and otherwise a
    valid consistency proof old -> new; without one, the first checkpoint is trusted on first
    use; (4) the state file is updated (atomically) *before* the cosignature is released.
    """
    # Step 1.
    if witness.sig_type != SIG_COSIGNATURE_V1:
        raise KeyMaterialError("the witness key is not a cosignature key (type 0x04)")
    # Step 2.
    new = verify_checkpoint(checkpoint, log_key)
    # Step 3.
    state_path = Path(state_path)
    if state_path.exists():
        state = WitnessState.from_json(state_path.read_bytes())
        if state.log_key != log_key.to_text():
            raise InputError(
                f"{state_path}: remembers a different log key",
                hint="use one state file per log",
            )
        old = verify_checkpoint(state.checkpoint.encode(), log_key).checkpoint
        cp = new.checkpoint
        if cp.size < old.size:
            raise VerificationError(
                f"refusing to cosign: the log shrank from {old.size} to {cp.size} entries"
            )
        if cp.size == old.size:
            if not hmac.compare_digest(cp.root, old.root):
                raise VerificationError(
                    f"refusing to cosign: two different roots for tree size {cp.size} (split view)"
                )
        else:
            if consistency is None:
                raise InputError(
                    f"a consistency proof from size {old.size} to {cp.size} is needed",
                    hint=f"ask the log for a consistency proof from size {old.size}",
                    remedy="consistency-proof",
                    remedy_args={"size": str(old.size)},
                )
            try:
                consistency.verify(old, cp)
            except VerificationError as exc:
                raise VerificationError(
                    f"refusing to cosign: checkpoint {cp.size} is not consistent with the "
                    f"checkpoint {old.size} this witness saw before (split view or rewrite)"
                ) from exc
    # Step 4.
    timestamp = int(now())
    signature = witness.signature_for(new.note.text, timestamp=timestamp)
    cosigned = new.note.with_signature(signature).to_bytes()
    state = WitnessState(log_key=log_key.to_text(), checkpoint=new.raw.decode())
    write_bytes_atomic(state_path, state.to_json(), force=True, mode=0o600)
    return cosigned
