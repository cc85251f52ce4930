"""``weightvault log ...``: the transparency log from the shell (``witness ...``: its witnesses).

Only parsing and rendering here; everything else is :mod:`weightvault.tlog`. Heavy imports stay
inside the commands so ``weightvault --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from weightvault.cli._groups import GROUP, OptionGroup, command_group, option
from weightvault.cli._options import ForceOutput, show

if TYPE_CHECKING:
    from weightvault.tlog.checkpoint import WitnessPolicy
    from weightvault.tlog.note import VerifierKey

ORDER = 50

log_app = command_group(
    "log",
    "Tamper-evident transparency log (RFC 9162 Merkle tree, C2SP signed checkpoints). "
    "LOG is a SQLite file or a postgresql:// URL.",
)

_JSON = typer.Option(False, "--json", help="Print a JSON document instead of text.")
LogLocation = Annotated[str, typer.Argument(help="The log.")]
"""The log a command works on: a SQLite file or a ``postgresql://`` URL."""
_LOG_VKEY = typer.Option(..., "--key", help="The log's verifier key (name+id+key, or a file).")


def _read_file(path: Path, what: str, limit: int = 1 << 30) -> bytes:
    from weightvault.errors import InputError

    if not path.is_file():
        raise InputError(f"{path}: no such {what} file")
    if path.stat().st_size > limit:
        raise InputError(f"{path}: larger than the {limit}-byte limit for a {what}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read {what}: {exc.strerror}") from exc


def _verifier_key(spec: str, what: str = "--key") -> VerifierKey:
    """A verifier key given literally (name+id+key) or as a file holding one."""
    from weightvault.errors import FormatError
    from weightvault.tlog.note import VerifierKey

    text = spec
    path = Path(spec)
    if "+" not in spec or path.is_file():
        text = _read_file(path, "verifier key", 4096).decode("ascii", "replace").strip()
    try:
        return VerifierKey.from_text(text)
    except FormatError as exc:
        raise FormatError(f"{what}: {exc.message}") from exc


def _witness_policy(witness_keys: list[str], min_witnesses: int) -> WitnessPolicy | None:
    from weightvault.errors import UsageError
    from weightvault.tlog.checkpoint import WitnessPolicy

    if not witness_keys:
        if min_witnesses:
            raise UsageError("--min-witnesses needs at least one --witness-key")
        return None
    keys = tuple(_verifier_key(k, "--witness-key") for k in witness_keys)
    threshold = min_witnesses or len(keys)
    try:
        return WitnessPolicy(witnesses=keys, threshold=threshold)
    except ValueError as exc:
        raise UsageError(f"witness policy: {exc}") from exc


@dataclass(frozen=True)
class WitnessOptions(OptionGroup):
    """The witnesses a checked log must be cosigned by: ``--witness-key`` (repeatable) and
    ``--min-witnesses`` (k of those n)."""

    witness_key: list[str] = field(
        metadata=option([], "--witness-key", help="Witness verifier key (repeatable).")
    )
    min_witnesses: int = field(
        metadata=option(0, "--min-witnesses", min=0, help="k of the n witness keys.")
    )

    def policy(self) -> WitnessPolicy | None:
        """The witness policy, or None without ``--witness-key``."""
        return _witness_policy(self.witness_key, self.min_witnesses)


def _write_or_print(
    data: bytes, out: Path | None, force: bool, as_json: bool = False, doc: Any = None
) -> None:
    """Write ``data`` to ``out``, or print it; with ``as_json`` print ``doc`` (plus where the
    data went, or the data itself as text) instead."""
    from weightvault._fs import write_bytes_atomic
    from weightvault.cli._ui import emit_json

    if out is not None:
        _check_regular(out)
        write_bytes_atomic(out, data, force=force)
    if as_json:
        emit_json({**doc, "file": None if out is None else str(out), "text": data.decode()})
    elif out is None:
        sys.stdout.write(data.decode())
        sys.stdout.flush()


def _show_ok(document: dict[str, Any], as_json: bool, line: str) -> None:
    """A check that passed (``log verify``, ``verify-proof``, ``witness verify``): the JSON
    document with ``"ok": true``, or ``OK: line``."""
    show({"ok": True, **document}, as_json, [f"OK: {line}"])


def _tree_json(origin: str, size: int, root: bytes) -> dict[str, Any]:
    """A tree's origin, size and root (base64), as every ``--json`` output names them."""
    import base64

    return {"origin": origin, "size": size, "root": base64.b64encode(root).decode()}


def _checkpoint_json(note: bytes) -> dict[str, Any]:
    """Origin, size and root of a signed checkpoint note, for ``--json`` output."""
    from weightvault.tlog.checkpoint import Checkpoint
    from weightvault.tlog.note import parse_note

    checkpoint = Checkpoint.from_text(parse_note(note).text)
    return _tree_json(checkpoint.origin, checkpoint.size, checkpoint.root)


@contextlib.contextmanager
def _log_errors(location: str) -> Iterator[None]:
    """SQLite says "attempt to write a readonly database" or "database or disk is full" and
    names no file: name the log (exit 2, the system refused), not an internal error."""
    from weightvault.cli._exit import sqlite_environment_error

    try:
        yield
    except Exception as exc:
        path = None if "://" in location else location
        translated = sqlite_environment_error(exc, path)
        if translated is None:
            raise
        if translated.errno == errno.EROFS and path is not None and os.path.isfile(path):
            folder = os.path.dirname(os.path.abspath(path))
            translated.message = (
                f"the log's folder is read-only: {folder} (SQLite writes a journal beside {path})"
            )
        raise translated from exc


def _check_regular(out: Path) -> None:
    """Refuse an existing non-regular output: a rename onto a device or pipe would replace it."""
    from weightvault.errors import InputError

    if out.exists() and not out.is_file():
        raise InputError(f"{out}: not a regular file; choose a file path for the output")


@contextlib.contextmanager
def _new_log(location: str) -> Iterator[None]:
    """Creating a log: if it fails, remove what SQLite left (the file and its journals)."""
    path = None if "://" in location else Path(location)
    existed = path is not None and (path.exists() or path.is_symlink())
    try:
        with _log_errors(location):
            yield
    except BaseException:
        if path is not None and not existed:
            for leftover in (
                path,
                Path(f"{path}-wal"),
                Path(f"{path}-shm"),
                Path(f"{path}-journal"),
            ):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        raise


@contextlib.contextmanager
def _open_log(location: str) -> Iterator[Any]:
    """The opened log; system failures while it is used name the log (see :func:`_log_errors`)."""
    from weightvault.tlog import TransparencyLog

    with _log_errors(location), TransparencyLog.open(location) as opened:
        yield opened


def _keygen(name: str, out: Path, force: bool, witness: bool, as_json: bool) -> None:
    from weightvault._fs import write_bytes_atomic
    from weightvault.errors import UsageError
    from weightvault.tlog.note import SIG_COSIGNATURE_V1, SIG_ED25519, Ed25519NoteSigner

    sig_type = SIG_COSIGNATURE_V1 if witness else SIG_ED25519
    try:
        signer = Ed25519NoteSigner.generate(name, sig_type=sig_type)
    except Exception as exc:
        raise UsageError(f"--name: {getattr(exc, 'message', exc)}") from exc
    public_path = out.with_name(out.name + ".pub")
    _check_regular(out)
    _check_regular(public_path)
    vkey = signer.verifier_key.to_text()
    write_bytes_atomic(out, (signer.to_text() + "\n").encode(), force=force, mode=0o600)
    write_bytes_atomic(public_path, (vkey + "\n").encode(), force=force)
    show(
        {"private_key_file": str(out), "public_key_file": str(public_path), "vkey": vkey},
        as_json,
        [f"wrote {out} (secret) and {public_path}", vkey],
    )


def _keygen_command(app: typer.Typer, *, witness: bool, name_help: str, help_text: str) -> None:
    """``log keygen`` and ``witness keygen``: the same options, one kind of key each."""

    def command(
        name: str = typer.Option(..., "--name", help=name_help),
        out: Path = typer.Option(..., "--out", help="Private key file to write (mode 0600)."),
        force: ForceOutput = False,
        as_json: bool = _JSON,
    ) -> None:
        _keygen(name, out, force, witness, as_json)

    command.__name__ = "witness_keygen" if witness else "log_keygen"
    app.command("keygen", help=help_text)(command)


_keygen_command(
    log_app,
    witness=False,
    name_help="Key name = the log's origin, e.g. example.com/log.",
    help_text=(
        "Create an Ed25519 checkpoint-signing key (C2SP signed-note format) and its .pub file."
    ),
)


@log_app.command("vkey")
def log_vkey(
    key: str = typer.Option(..., "--key", help="Signing key file, or a pkcs11: URI."),
    name: str = typer.Option(None, "--name", help="Key name (the origin); needed with pkcs11:."),
    witness: bool = typer.Option(False, "--witness", help="A witness (cosignature) key."),
    as_json: bool = _JSON,
) -> None:
    """Print the verifier key (name+id+key) that checks signatures of a key file or token key."""
    from weightvault.tlog.note import SIG_COSIGNATURE_V1, SIG_ED25519, load_note_signer

    signer = load_note_signer(
        key, name=name, sig_type=SIG_COSIGNATURE_V1 if witness else SIG_ED25519
    )
    show({"vkey": signer.verifier_key.to_text()}, as_json, [signer.verifier_key.to_text()])


@log_app.command("init")
def log_init(
    log: str = typer.Argument(
        ..., help="New SQLite file, or postgresql:// URL of an empty database."
    ),
    origin: str = typer.Option(
        ..., "--origin", help="The log's unique name, e.g. example.com/log."
    ),
    as_json: bool = _JSON,
) -> None:
    """Create a new, empty log."""
    from weightvault.errors import UsageError
    from weightvault.tlog import TransparencyLog

    try:
        with _new_log(log):
            TransparencyLog.create(log, origin).close()
    except ValueError as exc:
        raise UsageError(f"--origin: {exc}") from exc
    show({"log": log, "origin": origin, "size": 0}, as_json, [f"created log {origin!r} at {log}"])


@log_app.command("append")
def log_append(
    log: LogLocation,
    files: list[Path] = typer.Argument(None, help="Files: each file's bytes become one entry."),
    text: list[str] = typer.Option([], "--text", help="An entry given as text (repeatable)."),
    as_json: bool = _JSON,
) -> None:
    """Append entries durably (one transaction) and print their indices."""
    from weightvault.errors import UsageError

    entries = [_read_file(f, "entry", 1 << 20) for f in files or []]
    entries += [t.encode() for t in text]
    if not entries:
        raise UsageError("nothing to append: give FILES or --text")
    with _open_log(log) as opened:
        first = opened.append_many(entries)
    indices = list(range(first, first + len(entries)))
    show(
        {"indices": indices, "size": first + len(entries)},
        as_json,
        (f"appended entry {index}" for index in indices),
    )


@log_app.command("checkpoint")
def log_checkpoint(
    log: LogLocation,
    key: str = typer.Option(..., "--key", help="Signing key file, or a pkcs11: URI (Ed25519)."),
    out: Path = typer.Option(
        None, "--out", help="Write the signed checkpoint here (default: stdout)."
    ),
    force: ForceOutput = False,
    as_json: bool = _JSON,
) -> None:
    """Sign a checkpoint of the current tree (refused if inconsistent with an earlier one)."""
    from weightvault.tlog.note import SIG_ED25519, load_note_signer

    if out is not None:
        _check_regular(out)
    with _open_log(log) as opened:
        signer = load_note_signer(key, name=opened.origin, sig_type=SIG_ED25519)
        note = opened.sign_checkpoint(signer)
    _write_or_print(note, out, force, as_json, _checkpoint_json(note) if as_json else None)


@log_app.command("add-cosignatures")
def log_add_cosignatures(
    log: LogLocation,
    checkpoint: Path = typer.Argument(..., help="A checkpoint of this log, cosigned by witnesses."),
    key: str = _LOG_VKEY,
    as_json: bool = _JSON,
) -> None:
    """Store witness cosignatures with the log's checkpoint (proofs and exports carry them)."""
    from weightvault.tlog.note import parse_note

    note_in = _read_file(checkpoint, "checkpoint", 1 << 16)
    verifier = _verifier_key(key)
    with _open_log(log) as opened:
        note = opened.add_cosignatures(note_in, verifier)
    lines = len(parse_note(note).signatures)
    show(
        {**_checkpoint_json(note), "signatures": lines},
        as_json,
        [f"stored checkpoint with {lines} signature line(s)"],
    )


@log_app.command("prove")
def log_prove(
    log: LogLocation,
    index: int = typer.Option(
        None, "--index", min=0, help="Entry to prove (inclusion, tlog-proof)."
    ),
    from_size: int = typer.Option(
        None, "--from-size", min=0, help="Old tree size (consistency proof, for witnesses)."
    ),
    to_size: int = typer.Option(
        None, "--to-size", min=0, help="New tree size (default: latest checkpoint)."
    ),
    checkpoint: Path = typer.Option(
        None,
        "--checkpoint",
        help="Prove under this (e.g. cosigned) checkpoint; default the latest.",
    ),
    out: Path = typer.Option(None, "--out", help="Output file (default: stdout)."),
    force: ForceOutput = False,
    as_json: bool = _JSON,
) -> None:
    """Write a tlog-proof for one entry (--index) or a consistency proof (--from-size)."""
    from weightvault.errors import InputError, UsageError
    from weightvault.tlog.checkpoint import Checkpoint
    from weightvault.tlog.note import parse_note

    if (index is None) == (from_size is None):
        raise UsageError("give exactly one of --index (inclusion) or --from-size (consistency)")
    note = _read_file(checkpoint, "checkpoint", 1 << 16) if checkpoint else None
    if out is not None:
        _check_regular(out)
    doc: dict[str, Any]
    with _open_log(log) as opened:
        if index is not None:
            proof = opened.prove(index, checkpoint=note)
            data = proof.to_bytes()
            doc = {"kind": "inclusion", "index": index, **_checkpoint_json(proof.checkpoint)}
        else:
            if to_size is None:
                latest = note or opened.latest_checkpoint()
                if latest is None:
                    raise InputError("the log has no signed checkpoint; give --to-size")
                to_size = Checkpoint.from_text(parse_note(latest).text).size
            if from_size > to_size:
                raise UsageError(f"--from-size {from_size} is larger than the new size {to_size}")
            data = opened.consistency(from_size, to_size).to_bytes()
            doc = {"kind": "consistency", "from_size": from_size, "to_size": to_size}
    _write_or_print(data, out, force, as_json, doc)


@log_app.command("verify")
def log_verify(
    export: Path = typer.Argument(..., help="An exported log (from 'weightvault log export')."),
    key: str = _LOG_VKEY,
    trusted: Path = typer.Option(
        None, "--trusted-checkpoint", help="An earlier checkpoint you trust (detects rewrites)."
    ),
    witnesses: WitnessOptions = GROUP,
    as_json: bool = _JSON,
) -> None:
    """Check an exported log end to end: signatures, every root, the trusted checkpoint."""
    from weightvault.tlog import verify_export

    log_key = _verifier_key(key)
    policy = witnesses.policy()
    trusted_note = _read_file(trusted, "checkpoint", 1 << 16) if trusted else None
    result = verify_export(
        _read_file(export, "export"), log_key, trusted_checkpoint=trusted_note, witnesses=policy
    )
    against = (
        f", consistent with the trusted checkpoint at size {result.trusted_size}"
        if result.trusted_size is not None
        else ""
    )
    _show_ok(
        {
            **_tree_json(result.origin, result.size, result.root),
            "trusted_size": result.trusted_size,
            "witnesses": list(result.checkpoint.witnesses),
        },
        as_json,
        f"{result.size} entries of {result.origin} match "
        f"{result.checkpoints_checked} signed checkpoint(s){against}",
    )


@log_app.command("verify-proof")
def log_verify_proof(
    proof: Path = typer.Argument(..., help="A .tlog-proof file."),
    entry: Path = typer.Option(..., "--entry", help="The entry's bytes (a file)."),
    key: str = _LOG_VKEY,
    witnesses: WitnessOptions = GROUP,
    as_json: bool = _JSON,
) -> None:
    """Check a tlog-proof offline with only the log's (and witnesses') public keys."""
    from weightvault.tlog import verify_tlog_proof

    result = verify_tlog_proof(
        _read_file(proof, "proof", 1 << 17),
        _read_file(entry, "entry", 1 << 20),
        _verifier_key(key),
        witnesses=witnesses.policy(),
    )
    cosigners = list(result.checkpoint.witnesses)
    _show_ok(
        {"index": result.index, "tree_size": result.tree_size, "witnesses": cosigners},
        as_json,
        f"entry {result.index} is in {result.checkpoint.checkpoint.origin} "
        f"(tree size {result.tree_size}); witnesses: {', '.join(cosigners) or 'none'}",
    )


@log_app.command("export")
def log_export(
    log: LogLocation,
    out: Path = typer.Option(..., "--out", help="Export file to write (JSON)."),
    force: ForceOutput = False,
    as_json: bool = _JSON,
) -> None:
    """Export entries, leaf hashes and signed checkpoints, up to the latest checkpoint."""
    from weightvault import _interrupt
    from weightvault._fs import ensure_writable_destination, write_bytes_atomic

    if "://" not in log:  # a database URL may hold a password: never echo it
        _interrupt.note_untouched(log)
    _check_regular(out)
    ensure_writable_destination(out, force=force)  # before reading a large log
    with _open_log(log) as opened:
        exported = opened.export()
    write_bytes_atomic(out, exported.to_json(), force=force)
    show(
        {"file": str(out), "origin": exported.origin, "entries": len(exported.entries)},
        as_json,
        [f"exported {len(exported.entries)} entries to {out}"],
    )


@log_app.command("import")
def log_import(
    export: Path = typer.Argument(..., help="An exported log."),
    log: str = typer.Argument(
        ..., help="New SQLite file, or postgresql:// URL of an empty database."
    ),
    key: str = _LOG_VKEY,
    trusted: Path = typer.Option(
        None, "--trusted-checkpoint", help="An earlier checkpoint you trust."
    ),
    as_json: bool = _JSON,
) -> None:
    """Verify an export end to end, then load it into a new log."""
    from weightvault.tlog import LogExport, TransparencyLog

    parsed = LogExport.from_json(_read_file(export, "export"))
    trusted_note = _read_file(trusted, "checkpoint", 1 << 16) if trusted else None
    verifier = _verifier_key(key)
    with _new_log(log):
        imported = TransparencyLog.import_export(
            log, parsed, verifier, trusted_checkpoint=trusted_note
        )
        size = imported.size()
        imported.close()
    show(
        {"log": log, "origin": parsed.origin, "entries": size},
        as_json,
        [f"imported {size} entries of {parsed.origin} into {log}"],
    )


def register(app: typer.Typer) -> None:
    app.add_typer(log_app, name="log")
