"""``weightvault witness ...``: keep a log honest from outside (C2SP tlog-witness).

A witness remembers the last checkpoint it cosigned and cosigns a new one only when a
consistency proof shows the log grew without rewriting history. Parsing and rendering only;
keys, proofs and checkpoints are :mod:`weightvault.tlog`, the shared option parsing is in
:mod:`weightvault.cli.log`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from weightvault.cli._groups import command_group
from weightvault.cli._options import ForceOutput
from weightvault.cli.log import (
    _JSON,
    _checkpoint_json,
    _keygen_command,
    _read_file,
    _show_ok,
    _tree_json,
    _verifier_key,
    _witness_policy,
    _write_or_print,
)

ORDER = 51

witness_app = command_group(
    "witness", "Witness a log: verify consistency with the last checkpoint seen, then cosign."
)

_LOG_KEY = typer.Option(..., "--log-key", help="The log's verifier key.")
"""``--log-key`` of ``cosign`` and ``verify``: the log whose checkpoints are witnessed."""


_keygen_command(
    witness_app,
    witness=True,
    name_help="Witness name, e.g. witness.example.com/w1.",
    help_text=(
        "Create an Ed25519 cosigning key (C2SP tlog-cosignature, type 0x04) and its .pub file."
    ),
)


@witness_app.command("cosign")
def witness_cosign(
    checkpoint: Path = typer.Argument(..., help="The log's signed checkpoint."),
    key: str = typer.Option(..., "--key", help="Witness key file, or a pkcs11: URI (with --name)."),
    name: str = typer.Option(None, "--name", help="Witness name (needed with a pkcs11: key)."),
    log_key: str = _LOG_KEY,
    state: Path = typer.Option(..., "--state", help="State file: the last checkpoint cosigned."),
    proof: Path = typer.Option(
        None,
        "--proof",
        help="Consistency proof from the remembered size ('log prove --from-size').",
    ),
    out: Path = typer.Option(
        None, "--out", help="Write the cosigned checkpoint here (default: stdout)."
    ),
    force: ForceOutput = False,
    as_json: bool = _JSON,
) -> None:
    """Verify a checkpoint is consistent with the last one seen, remember it, and cosign it."""
    from weightvault.tlog import ConsistencyProof, cosign_checkpoint
    from weightvault.tlog.note import SIG_COSIGNATURE_V1, load_note_signer

    witness = load_note_signer(key, name=name, sig_type=SIG_COSIGNATURE_V1)
    consistency = (
        ConsistencyProof.from_bytes(_read_file(proof, "consistency proof", 1 << 17))
        if proof
        else None
    )
    cosigned = cosign_checkpoint(
        _read_file(checkpoint, "checkpoint", 1 << 16),
        witness=witness,
        log_key=_verifier_key(log_key, "--log-key"),
        state_path=state,
        consistency=consistency,
    )
    _write_or_print(cosigned, out, force, as_json, _checkpoint_json(cosigned) if as_json else None)


@witness_app.command("verify")
def witness_verify(
    checkpoint: Path = typer.Argument(..., help="A signed (and cosigned) checkpoint."),
    log_key: str = _LOG_KEY,
    witness_key: list[str] = typer.Option(
        ..., "--witness-key", help="Witness verifier key (repeatable)."
    ),
    min_witnesses: int = typer.Option(
        0, "--min-witnesses", min=0, help="k of the n (default: all)."
    ),
    as_json: bool = _JSON,
) -> None:
    """Check a checkpoint's log signature and at least k of n witness cosignatures."""
    from weightvault.tlog import verify_checkpoint

    result = verify_checkpoint(
        _read_file(checkpoint, "checkpoint", 1 << 16),
        _verifier_key(log_key, "--log-key"),
        witnesses=_witness_policy(witness_key, min_witnesses),
    )
    checked = result.checkpoint
    _show_ok(
        {
            **_tree_json(checked.origin, checked.size, checked.root),
            "witnesses": list(result.witnesses),
        },
        as_json,
        f"{checked.origin} size {checked.size}, cosigned by {', '.join(result.witnesses)}",
    )


def register(app: typer.Typer) -> None:
    app.add_typer(witness_app, name="witness")
