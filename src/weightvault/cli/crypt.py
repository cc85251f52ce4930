"""``weightvault encrypt | decrypt | rewrap | inspect | x25519-keygen``: encryption at rest.

Parsing and rendering only; the work is done by :mod:`weightvault.crypt`. Heavy imports happen
inside the commands so ``weightvault --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from weightvault.cli._options import ForceFile, JsonResult, show

if TYPE_CHECKING:
    from weightvault.crypt import CryptResult, Identity, Recipient

ORDER = 30

_TO_HELP = (
    "Recipient (repeatable): keyring (default), keyring:PATH, wvx25519:KEY, a file of "
    "wvx25519: lines or an identity file, passphrase, pkcs11:URI (AES key on an HSM)."
)
_IDENTITY_HELP = (
    "Identity that opens the files (repeatable): keyring (default), keyring:PATH, an X25519 "
    "identity or keyring file, passphrase, pkcs11:URI."
)
EncryptedPath = Annotated[Path, typer.Argument(help="A .wvenc file or folder of them.")]
"""The argument of ``decrypt``, ``rewrap`` and ``inspect``."""
Identities = Annotated[list[str] | None, typer.Option("--identity", "-i", help=_IDENTITY_HELP)]
"""``--identity`` of ``decrypt`` and ``rewrap``: what opens the files (default: the keyring)."""
Recipients = Annotated[list[str] | None, typer.Option("--to", "-r", help=_TO_HELP)]
"""``--to`` of ``encrypt`` and ``rewrap``: who can open the files (default: the keyring)."""
PassphraseEnv = Annotated[
    str | None,
    typer.Option(
        "--passphrase-env",
        help=(
            "Read the passphrase from this environment variable instead of prompting "
            "(never put a passphrase itself on the command line)."
        ),
    ),
]
"""``--passphrase-env`` of ``encrypt`` and ``decrypt`` (``rewrap`` has two, worded for it)."""
ScryptLogN = Annotated[
    int, typer.Option("--scrypt-log-n", help="scrypt work factor for passphrase recipients (2^N).")
]
"""``--scrypt-log-n`` of ``encrypt`` and ``rewrap``: the cost of a passphrase recipient."""
ForceOutputs = Annotated[bool, typer.Option("--force", help="Overwrite existing outputs.")]
"""``--force`` of ``encrypt`` and ``decrypt``."""


def _passphrase_source(
    env_var: str | None, *, confirm: bool, prompt: str = "Passphrase"
) -> Callable[[], bytes]:
    """A callable reading the passphrase once: from ``$env_var`` or a terminal prompt."""
    from weightvault.errors import UsageError

    cache: list[bytes] = []

    def read() -> bytes:
        if cache:
            return cache[0]
        if env_var:
            value = os.environ.get(env_var)
            if not value:
                raise UsageError(f"--passphrase-env {env_var}: variable is not set or empty")
            cache.append(value.encode("utf-8"))
            return cache[0]
        if not sys.stdin.isatty():
            raise UsageError(
                "a passphrase is needed and there is no terminal to ask for it",
                hint="set it in an environment variable and pass --passphrase-env NAME",
            )
        import getpass

        first = getpass.getpass(f"{prompt}: ")
        if not first:
            raise UsageError("empty passphrase")
        if confirm and getpass.getpass(f"{prompt} (again): ") != first:
            raise UsageError("the passphrases do not match")
        cache.append(first.encode("utf-8"))
        return cache[0]

    return read


def _recipients(
    specs: list[str] | None,
    passphrase_env: str | None,
    scrypt_log_n: int,
    *,
    prompt: str = "Passphrase",
) -> list[Recipient]:
    from weightvault.crypt import parse_recipient

    source = _passphrase_source(passphrase_env, confirm=True, prompt=prompt)
    result: list[Recipient] = []
    for spec in specs or ["keyring"]:
        result.extend(parse_recipient(spec, passphrase=source, scrypt_log_n=scrypt_log_n))
    return result


def _identities(specs: list[str] | None, passphrase_env: str | None) -> list[Identity]:
    from weightvault.crypt import parse_identity

    source = _passphrase_source(passphrase_env, confirm=False)
    return [parse_identity(spec, passphrase=source) for spec in specs or ["keyring"]]


def _report(verb: str, result: CryptResult, as_json: bool) -> None:
    count = len(result.files)
    lines = [
        f"{verb} {count} file{'s' if count != 1 else ''} of model {result.model!r} "
        f"({result.plaintext_size:,} bytes of weights) -> {result.output}"
    ]
    if result.recipients:
        lines.append("recipients: " + ", ".join(result.recipients))
    show(result.to_json(), as_json, lines, console=True)


def _check_output_name(model_path: Path, output: Path | None) -> str | None:
    """``encrypt -o``: an encrypted file is recognized (and decrypted without -o) by its .wvenc
    suffix; a file output without it is refused, a folder output without it gets a warning
    (returned, printed once the model is encrypted, so an error stays one line)."""
    from weightvault.crypt import SUFFIX

    if output is None or output.name.endswith(SUFFIX):
        return None
    if model_path.is_dir():
        from weightvault._console import printable

        return (
            f"warning: {printable(str(output))}: folder name does not end in {SUFFIX}; "
            "decrypt will need -o to name its output"
        )
    if output.is_dir():
        return None
    from weightvault.errors import UsageError

    raise UsageError(
        f"{output}: an encrypted file's name must end in {SUFFIX}",
        hint=f"use -o {output.with_name(model_path.name + SUFFIX)}",
    )


#: Below this much data, starting worker threads costs more than it saves.
_PARALLEL_THRESHOLD = 64 * 1024 * 1024


def _default_workers(total_bytes: int) -> int:
    if total_bytes < _PARALLEL_THRESHOLD:
        return 1
    return os.cpu_count() or 1


def register(app: typer.Typer) -> None:
    """Add the encryption commands."""

    @app.command("encrypt")
    def encrypt_command(
        model_path: Path = typer.Argument(..., help="Model file or folder to encrypt."),
        output: Path | None = typer.Option(
            None,
            "-o",
            "--output",
            help=(
                "Output file or folder (default: MODEL_PATH.wvenc). An output file's name must "
                "end in .wvenc (anything else is refused); a folder not ending in .wvenc is "
                "accepted with a warning (decrypt then needs -o)."
            ),
        ),
        to: Recipients = None,
        model_name: str | None = typer.Option(
            None, "--model-name", help="Model name bound into every file (default: its name)."
        ),
        manifest_digest: str | None = typer.Option(
            None,
            "--manifest-digest",
            help=(
                "Bind a signature into every file's context: sha256:HEX, or the signature "
                "file (e.g. MODEL/model.sig) whose SHA-256 is taken."
            ),
        ),
        ignore_paths: list[str] | None = typer.Option(
            None, "--ignore-paths", help="Paths inside the model to leave out (repeatable)."
        ),
        workers: int = typer.Option(
            None,
            "--workers",
            "-j",
            help="Files encrypted in parallel (default: all cores for models over 64 MiB).",
        ),
        force: ForceOutputs = False,
        passphrase_env: PassphraseEnv = None,
        scrypt_log_n: ScryptLogN = 18,
        as_json: JsonResult = False,
    ) -> None:
        """Encrypt a model file or folder (one data key per file, wrapped for each recipient).

        Ctrl-C or SIGTERM stops it within a second and removes every output it wrote (exit 130
        or 143).
        """
        from weightvault import _interrupt
        from weightvault.cli._ui import progress_bytes
        from weightvault.crypt import encrypt_path
        from weightvault.tree import walk_model

        _interrupt.note_untouched(model_path)
        warning = _check_output_name(model_path, output)
        if manifest_digest is not None and not manifest_digest.startswith("sha256:"):
            from weightvault.crypt import manifest_digest_of

            manifest_digest = manifest_digest_of(Path(manifest_digest))
        recipients = _recipients(to, passphrase_env, scrypt_log_n)
        total = walk_model(model_path, ignore_paths=ignore_paths or ()).total_size
        with progress_bytes("encrypting", total) as advance:
            result = encrypt_path(
                model_path,
                output,
                recipients=recipients,
                model_name=model_name,
                manifest_digest=manifest_digest,
                ignore_paths=ignore_paths or (),
                workers=workers or _default_workers(total),
                force=force,
                progress=advance,
            )
        _report("encrypted", result, as_json)
        if warning is not None:
            sys.stderr.write(warning + "\n")

    @app.command("decrypt")
    def decrypt_command(
        encrypted_path: EncryptedPath,
        output: Path | None = typer.Option(
            None, "-o", "--output", help="Output file or folder (default: name without .wvenc)."
        ),
        identity: Identities = None,
        workers: int = typer.Option(
            None,
            "--workers",
            "-j",
            help="Files decrypted in parallel (default: all cores for models over 64 MiB).",
        ),
        force: ForceOutputs = False,
        expect_model: str | None = typer.Option(
            None, "--expect-model", help="Refuse files encrypted for another model name."
        ),
        unsafe_any_path: bool = typer.Option(
            False,
            "--unsafe-any-path",
            help="Skip the check that each file sits at the path it was encrypted for.",
        ),
        passphrase_env: PassphraseEnv = None,
        as_json: JsonResult = False,
    ) -> None:
        """Decrypt a .wvenc file or folder; nothing is written unless every chunk authenticates.

        Ctrl-C or SIGTERM stops it within a second; no plaintext is left behind (exit 130 or
        143).
        """
        from weightvault import _interrupt
        from weightvault.cli._ui import progress_bytes
        from weightvault.crypt import decrypt_path
        from weightvault.errors import InputError

        if not encrypted_path.exists():  # say this before asking for keys or a passphrase
            raise InputError(f"{encrypted_path}: no such file or directory; check the input path")
        _interrupt.note_untouched(encrypted_path)
        identities = _identities(identity, passphrase_env)
        total = (
            sum(f.stat().st_size for f in encrypted_path.rglob("*") if f.is_file())
            if encrypted_path.is_dir()
            else (encrypted_path.stat().st_size if encrypted_path.is_file() else 0)
        )
        with progress_bytes("decrypting", total) as advance:
            result = decrypt_path(
                encrypted_path,
                output,
                identities=identities,
                workers=workers or _default_workers(total),
                force=force,
                expect_model=expect_model,
                unsafe_any_path=unsafe_any_path,
                progress=advance,
            )
        _report("decrypted", result, as_json)

    @app.command("rewrap")
    def rewrap_command(
        encrypted_path: EncryptedPath,
        identity: Identities = None,
        to: Recipients = None,
        add: bool = typer.Option(
            False, "--add", help="Keep the current recipients and add the --to ones."
        ),
        output: Path | None = typer.Option(
            None, "-o", "--output", help="Write here instead of replacing the files in place."
        ),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing output."),
        passphrase_env: str | None = typer.Option(
            None, "--passphrase-env", help="Like encrypt's, for a passphrase --identity."
        ),
        new_passphrase_env: str | None = typer.Option(
            None,
            "--new-passphrase-env",
            help="Environment variable holding the passphrase for a passphrase --to.",
        ),
        scrypt_log_n: ScryptLogN = 18,
        as_json: JsonResult = False,
    ) -> None:
        """Re-wrap the data keys for new recipients (rotate, add, remove); bodies stay untouched.

        In place, the files are replaced together at the end: an interrupt or a failure leaves
        every one of them as it was.
        """
        from weightvault import _interrupt
        from weightvault.crypt import rewrap_path
        from weightvault.errors import UsageError

        _interrupt.note_untouched(encrypted_path)
        if not to:
            raise UsageError("rewrap needs at least one --to (the new recipients)")
        identities = _identities(identity, passphrase_env)
        recipients = _recipients(to, new_passphrase_env, scrypt_log_n, prompt="New passphrase")
        result = rewrap_path(
            encrypted_path,
            identities=identities,
            recipients=recipients,
            keep_existing=add,
            output=output,
            force=force,
        )
        _report("re-wrapped", result, as_json)

    @app.command("inspect")
    def inspect_command(
        encrypted_path: EncryptedPath,
        as_json: bool = typer.Option(False, "--json", help="Print the headers as JSON."),
    ) -> None:
        """Show the headers of encrypted files: context, recipients, sizes (no key, no secrets)."""
        from weightvault.cli._ui import emit_json, out_console
        from weightvault.crypt import inspect_path

        infos = inspect_path(encrypted_path)
        if as_json:
            emit_json([info.to_json() for info in infos])
            return
        console = out_console()
        for info in infos:
            doc = info.to_json()
            context = doc["context"]
            console.print(f"{doc['file']}", markup=False)
            console.print(
                f"  model {context['model']!r}, path {context['path']!r}, file "
                f"{context['file_index'] + 1} of {context['file_count']}, run {context['set_id']}",
                markup=False,
            )
            if context["manifest_digest"]:
                console.print(f"  manifest digest {context['manifest_digest']}", markup=False)
            console.print(
                f"  {doc['plaintext_size']:,} bytes in {doc['chunks']:,} "
                f"chunk{'s' if doc['chunks'] != 1 else ''}; file "
                f"{doc['file_size']:,} bytes (header {doc['header_size']}); {doc['suite']} "
                f"v{doc['format_version']}",
                markup=False,
            )
            console.print("  recipients: " + "; ".join(_describe(r) for r in doc["recipients"]))

    @app.command("x25519-keygen")
    def keygen_command(
        output: Path = typer.Option(..., "-o", "--output", help="Identity file to create (0600)."),
        force: ForceFile = False,
        as_json: JsonResult = False,
    ) -> None:
        """Create an X25519 identity for encryption and print its recipient (public key)."""
        from weightvault.crypt.recipients.x25519 import generate_identity_file

        identity = generate_identity_file(output, force=force)
        recipient = identity.recipient().to_string()
        show(
            {"identity_file": str(output), "recipient": recipient},
            as_json,
            [recipient],
            console=True,
        )


def _describe(entry: dict[str, Any]) -> str:
    kind = str(entry["type"])
    if kind == "keyring":
        return f"keyring {entry['kid']}"
    if kind == "pkcs11":
        return f"pkcs11 {entry['key']}"
    if kind == "scrypt":
        return f"passphrase (scrypt 2^{entry['log_n']})"
    return kind
