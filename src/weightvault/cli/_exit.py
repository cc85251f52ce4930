"""How a command's failure becomes one line on standard error and an exit code.

Shared by the Typer application and the lean ``scan`` entry point, so both say the same words.
Standard library only: the lean entry point must not import click.

This is the one translation layer between what the library raises and what a user reads:

* a :class:`~weightvault.errors.WeightvaultError` keeps its message and exit code; where it names
  a *remedy*, the hint is spelled with this command line's options (``pass --force``);
* an ``OSError`` anywhere (read-only folder, full disk, missing file, folder where a file belongs,
  port in use, too many open files), raised directly or as the cause of another exception,
  becomes exit 2 with the path, and, when that path came from an option, the option to change;
* anything else is a bug: exit 3, one line, and with ``WEIGHTVAULT_DEBUG=1`` the traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from weightvault.errors import FileSystemError, WeightvaultError

__all__ = [
    "REMEDY_HINTS",
    "debug_enabled",
    "fail",
    "message_for",
    "report_exception",
    "sqlite_environment_error",
]

#: The command line's words for each library remedy (see :data:`weightvault.errors.REMEDIES`).
REMEDY_HINTS: dict[str, str] = {
    "overwrite": "pass --force to overwrite it",
    "password": "give its --password (or set WEIGHTVAULT_KEY_PASSWORD)",
    "no-password": "drop --password",
    "signature-path": "sign the model first, or pass --signature",
    "chain": "put the other certificates in --chain",
    "key-and-certificate": "give --key and --certificate",
    "certificate": "add --certificate LEAF.pem",
    "verify-with-key": "verify it with --key PUBLIC.pem",
    "verify-with-trust-root": "verify it with --trust-root ROOTS.pem",
    "sigstore-identity": "give --identity EMAIL_OR_URI and --issuer URL",
    "trust-config": "give --trust-config FILE (a client trust config)",
    "allow-symlinks": "pass the real path, or --allow-symlinks for links inside the model",
    "allow-import": "inspect the file; allow a trusted import with --allow module.name",
    "identity": "check --identity",
    "recipient": "give at least one --to",
    "workers": "retry with --workers 1",
    "unsafe-any-path": "if you moved it on purpose, pass --unsafe-any-path",
    "approval-key": "give --key FILE or --pkcs11-uri URI",
    "server-url": "pass --url, set WEIGHTVAULT_URL, or run 'weightvault vault login'",
    "server-token": "pass --token, set WEIGHTVAULT_TOKEN, or run 'weightvault vault login'",
    "key-name": "pass --name (the log origin or witness name)",
    "log-signature": "sign with 'weightvault sign --log LOG --log-key KEY' to record it",
    "consistency-proof": "get one with 'weightvault log prove LOG --from-size {size} --out PROOF'",
    "database": "--database takes sqlite:///PATH or postgresql://USER@HOST/DB",
    "blobs": "--blobs takes a folder or s3://BUCKET/PREFIX",
    "webhook": "--webhook takes an http:// or https:// URL",
    "testbed": "pass the matching --testbed",
    "output-name": "give -o OUTPUT",
    "identity-policy": (
        "give --identity NAME (and --issuer for --sigstore), or --unsafe-no-identity to accept "
        "any signer the trust roots vouch for"
    ),
}

#: Error numbers whose fix is another output location, rather than checking an input.
_OUTPUT_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def debug_enabled() -> bool:
    """``WEIGHTVAULT_DEBUG`` set to anything but empty or ``0``: show tracebacks."""
    return os.environ.get("WEIGHTVAULT_DEBUG", "") not in ("", "0")


def fail(message: str, code: int) -> int:
    """Print ``error: MESSAGE`` on standard error and return ``code``.

    The message often names a file; control characters in it are shown as escapes, so it stays
    one line and cannot drive the terminal.
    """
    from weightvault._console import printable

    sys.stderr.write(f"error: {printable(message)}\n")
    sys.stderr.flush()
    return code


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or during, innermost last."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _environment_error(exc: BaseException) -> FileSystemError | MemoryError | None:
    """The system failure behind ``exc`` (itself, or the first along its causes): an
    ``OSError`` or a SQLite refusal as a :class:`FileSystemError`, or a ``MemoryError``."""
    from weightvault.errors import FileSystemError

    for current in _chain(exc):
        if isinstance(current, MemoryError):
            return current
        if isinstance(current, OSError):
            return FileSystemError.from_os_error(current)
        database = sqlite_environment_error(current, None)
        if database is not None:
            database.message = f"database: {database.message}"
            return database
    return None


#: SQLite's primary result codes for a refusal by the system, and the errno each one means
#: (``None``: "cannot open", whose cause is read off the file's folder).
_SQLITE_ERRNOS: dict[int, int | None] = {
    3: errno.EACCES,  # SQLITE_PERM
    8: errno.EROFS,  # SQLITE_READONLY
    10: errno.EIO,  # SQLITE_IOERR
    13: errno.ENOSPC,  # SQLITE_FULL
    14: None,  # SQLITE_CANTOPEN
}


def _cannot_open_errno(path: str | None) -> int:
    """Why SQLite could not open ``path``: its folder is missing, read-only, or not ours."""
    folder = os.path.dirname(os.path.abspath(path)) if path else None
    if folder is None:
        return errno.EIO
    if not os.path.isdir(folder):
        return errno.ENOENT
    if path is not None and os.path.isdir(path):
        return errno.EISDIR
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        return errno.EROFS
    if not os.access(folder, os.W_OK):
        return errno.EACCES
    return errno.EIO


def sqlite_environment_error(exc: BaseException, path: str | None) -> FileSystemError | None:
    """The system failure behind a SQLite error (read-only, full, cannot open), naming ``path``
    (the database file; SQLite's own messages name none), or ``None`` for any other error."""
    from weightvault.errors import FileSystemError

    for current in _chain(exc):
        if isinstance(current, FileSystemError):
            return None  # already translated, with its path
        code = getattr(current, "sqlite_errorcode", None)
        if type(current).__module__ != "sqlite3" or not isinstance(code, int):
            continue
        if code & 0xFF not in _SQLITE_ERRNOS:
            continue
        number = _SQLITE_ERRNOS[code & 0xFF] or _cannot_open_errno(path)
        error = OSError(number, os.strerror(number), path)
        return FileSystemError.from_os_error(error, writing=number != errno.EIO)
    return None


def _absolute(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))


def _option_values(
    argv: Sequence[str], value_options: Iterable[str] | None
) -> list[tuple[str, str]]:
    """``(option, value)`` pairs from the command line, for the options that take a value.

    Without ``value_options`` (the lean scan entry, which has no path options) nothing is found:
    a flag must never be mistaken for the option of the path after it.
    """
    takes_value = set(value_options or ())
    pairs: list[tuple[str, str]] = []
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
            if name in takes_value:
                pairs.append((name, value))
        elif arg in takes_value and i + 1 < len(args):
            pairs.append((arg, args[i + 1]))
    return pairs


def _option_for(path: str, pairs: list[tuple[str, str]]) -> str | None:
    """The option whose value is ``path``, a folder holding it, or a file in the folder ``path``
    (an output folder that is read-only), in that order of preference."""
    target = _absolute(path)
    exact = inside = parent = None
    for option, value in pairs:
        if not value or "://" in value:
            continue
        given = _absolute(value)
        if given == target:
            exact = exact or option
        elif target.startswith(given.rstrip(os.sep) + os.sep):
            inside = inside or option
        elif os.path.dirname(given) == target:
            parent = parent or option
    return exact or inside or parent


def _filesystem_hint(exc: FileSystemError, pairs: list[tuple[str, str]]) -> str | None:
    option = _option_for(exc.path, pairs) if exc.path else None
    if option is None:
        return exc.hint
    if exc.writing or exc.errno in _OUTPUT_ERRNOS:
        return f"choose another with {option}"
    return f"check {option}"


class _Placeholders(dict[str, str]):
    """A remedy's values; one the error did not give shows as its name (``{size}`` -> SIZE)."""

    def __missing__(self, key: str) -> str:
        return key.upper()


def message_for(
    exc: WeightvaultError,
    argv: Sequence[str] = (),
    value_options: Callable[[], Iterable[str]] | None = None,
) -> str:
    """The one line the command line prints for a library error, hints in its own words.

    ``value_options`` (called only for an error about a path) lists the invoked command's
    options that take a value, so the hint can name the option that gave the path.
    """
    from weightvault.errors import FileSystemError

    text = " ".join(exc.message.split())
    if isinstance(exc, FileSystemError):
        options = value_options() if value_options is not None and exc.path else None
        hint = _filesystem_hint(exc, _option_values(argv, options))
    elif exc.remedy is not None and exc.remedy in REMEDY_HINTS:
        hint = REMEDY_HINTS[exc.remedy].format_map(_Placeholders(exc.remedy_args))
    else:
        hint = exc.hint
    if hint:
        text += f"; {' '.join(hint.split())}"
    return text


def _standard_output_failed(code: int | None) -> bool:
    """Whether standard output is what failed: its buffer will not flush, or it is a file on a
    file system with no space left. If so, it is pointed at ``/dev/null``, so that the
    interpreter's own flush at exit does not add a second error and exit code 120."""
    import stat

    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # closed, or not a real file (captured in tests)
        return False
    try:
        sys.stdout.flush()
        failed = (
            code in (errno.ENOSPC, errno.EDQUOT)
            and stat.S_ISREG(os.fstat(fd).st_mode)
            and os.fstatvfs(fd).f_bavail == 0
        )
    except OSError:
        failed = True
    if failed:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    return failed


def report_exception(
    exc: BaseException,
    argv: Sequence[str] = (),
    value_options: Callable[[], Iterable[str]] | None = None,
) -> int:
    """The exit code for what a command raised, after printing its one-line message.

    ``argv`` and ``value_options`` (the options of the invoked command that take a value,
    computed only when needed) let an error about a path name the option that gave it.
    With ``WEIGHTVAULT_DEBUG`` set, the traceback is printed first (same line, same code).
    """
    from weightvault import _interrupt
    from weightvault.errors import FileSystemError, WeightvaultError

    _interrupt.reraise_if_delivered(exc)  # the aftermath of SIGINT/SIGTERM: main() reports it
    if isinstance(exc, KeyboardInterrupt):
        return fail("interrupted", 130)
    if isinstance(exc, BrokenPipeError):
        return 0
    if not isinstance(exc, Exception):
        raise exc
    if debug_enabled():
        import traceback

        traceback.print_exception(exc)
    if isinstance(exc, WeightvaultError):
        return fail(message_for(exc, argv, value_options), exc.exit_code)
    cause = _environment_error(exc)
    if isinstance(cause, MemoryError):
        return fail("out of memory; use fewer workers or a machine with more memory", 2)
    if cause is not None:
        if cause.path is None and _standard_output_failed(cause.errno):
            cause = FileSystemError.from_os_error(
                OSError(cause.errno, cause.message, "<standard output>"), writing=True
            )
        return fail(message_for(cause, argv, value_options), 2)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return fail(
        f"internal error ({type(exc).__name__}): {text}; "
        "please report it (WEIGHTVAULT_DEBUG=1 shows the traceback)",
        3,
    )
