"""One exception tree for everything weightvault raises on purpose.

Every error carries a one-line, user-facing message (what is wrong and, where it helps, what to do)
and the exit code the CLI uses for it. Exit codes follow one rule across commands:

* ``0``: success.
* ``1``: the check ran and the answer is "no" (a signature or digest does not match, a scan found
  something at or above the threshold, a policy denied the request, decryption failed
  authentication).
* ``2``: the check could not run (bad usage, a missing or unreadable file, malformed input, or
  the operating system refused: a read-only folder, a full disk, a port in use).

``TypeError`` / ``ValueError`` are kept for caller mistakes in the Python API.

Messages and hints here never name command-line flags: the library does not know how it was
called. Where the fix is "pass some option", an error names a *remedy* (see :data:`REMEDIES`)
and the command line spells it out in its own words (``weightvault.cli._exit``).

Code that must tell failures apart reads ``exc.reason`` (a :class:`Reason`), never the words of
the message: those are for people and may change.
"""

from __future__ import annotations

import errno as _errno
import os
import re
from enum import StrEnum
from typing import Any

__all__ = [
    "REMEDIES",
    "DecryptionError",
    "FileSystemError",
    "FormatError",
    "InputError",
    "KeyMaterialError",
    "PolicyError",
    "Reason",
    "UnsafeFileError",
    "UsageError",
    "VerificationError",
    "WeightvaultError",
]


#: What a caller can do about an error, by name. The command line maps each to its own option
#: (``overwrite`` -> ``pass --force``); API users read the plain-words hint instead.
REMEDIES = frozenset(
    {
        "overwrite",  # the output exists: allow replacing it
        "password",  # the private key is encrypted: give its password
        "no-password",  # the private key is not encrypted: give no password
        "signature-path",  # the signature is elsewhere: give its path
        "chain",  # extra certificates belong in the chain, not the signing certificate
        "key-and-certificate",  # the certificate method needs a private key and its certificate
        "certificate",  # a PKCS#11 key needs its certificate for the certificate method
        "verify-with-key",  # a key signed it: verify with the key method
        "verify-with-trust-root",  # a certificate signed it: verify with trust roots
        "sigstore-identity",  # Sigstore verification needs the expected identity and issuer
        "trust-config",  # Sigstore offline needs a trust configuration
        "allow-symlinks",  # symlinks inside the model are refused by default
        "allow-import",  # a suspicious import can be trusted by name
        "identity",  # decryption needs another identity
        "recipient",  # encryption needs at least one recipient
        "workers",  # fewer worker processes
        "unsafe-any-path",  # the file sits at another path than it was encrypted for
        "approval-key",  # an approval needs a signing key
        "server-url",  # the vault client needs the server's URL
        "server-token",  # the vault client needs an API token
        "key-name",  # a PKCS#11 note key needs its name
        "log-signature",  # record the signature in a transparency log when signing
        "consistency-proof",  # a witness needs a consistency proof from the size it saw
        "database",  # the service's database location is malformed
        "blobs",  # the service's blob location is malformed
        "webhook",  # the alert webhook is not an http(s) URL
        "testbed",  # the model was trained on another testbed
        "output-name",  # the output's name cannot be derived from the input's: give one
        "identity-policy",  # certificate verification needs an expected signer (or an opt-out)
    }
)


class Reason(StrEnum):
    """Why an error was raised, in a word a program can test (``exc.reason is Reason.NO_FILES``).

    Each error class has a general reason (its kind); a raise site names a specific one where a
    caller may need to act on it.
    """

    # the kinds, one per error class
    USAGE = "usage"
    INPUT = "input"
    FORMAT = "format"
    KEY_MATERIAL = "key-material"
    VERIFICATION = "verification"
    POLICY = "policy"
    UNSAFE_FILE = "unsafe-file"
    DECRYPTION = "decryption"
    FILE_SYSTEM = "file-system"
    # specific reasons
    NOT_FOUND = "not-found"
    """A named input (a model, a signature, a log) does not exist."""
    EXISTS = "exists"
    """An output already exists and may not be replaced."""
    NO_FILES = "no-files"
    """A model has no files left to process (empty, or everything ignored)."""
    SYMLINK = "symlink"
    """A symlink the model's symlink policy refuses."""
    DIGEST_MISMATCH = "digest-mismatch"
    """A file's bytes do not match the digest its signature records."""
    MISSING_FILE = "missing-file"
    """A file the signature covers is not there."""
    EXTRA_FILE = "extra-file"
    """A file is there that the signature does not cover."""
    BAD_SIGNATURE = "bad-signature"
    """The signature itself does not verify (wrong key, altered bundle)."""
    SYMLINK_ESCAPE = "symlink-escape"
    """A symlink points outside the folder it may point into."""


class WeightvaultError(Exception):
    """Base class: a failure with a user-facing message and an exit code.

    ``hint`` says what to do in plain words; ``remedy`` (one of :data:`REMEDIES`) lets the
    command line say it with its own option names instead; ``reason`` says why, for programs
    (the class's general :class:`Reason` unless the raise site names a specific one).
    """

    exit_code: int = 2
    reason: Reason = Reason.INPUT

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        remedy: str | None = None,
        remedy_args: dict[str, str] | None = None,
        reason: Reason | None = None,
    ) -> None:
        super().__init__(message)
        if remedy is not None and remedy not in REMEDIES:
            raise ValueError(f"unknown remedy {remedy!r}")
        self.message = message
        self.reason = type(self).reason if reason is None else Reason(reason)
        self.hint = hint
        self.remedy = remedy
        self.remedy_args = dict(remedy_args or {})
        """Values the command line's wording of the remedy may use (``{"size": "2"}``)."""

    def __init_subclass__(
        cls, *, exit_code: int | None = None, reason: Reason | None = None, **kwargs: Any
    ) -> None:
        """``class NotFound(WeightvaultError, exit_code=2, reason=Reason.NOT_FOUND)``."""
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code
        if reason is not None:
            cls.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle with every attribute (worker processes send errors back to the parent)."""
        return (_rebuild, (type(self), self.message), self.__dict__)

    def one_line(self) -> str:
        """The message the CLI prints: never multi-line, hint appended after a semicolon."""
        text = " ".join(self.message.split())
        if self.hint:
            text += f"; {' '.join(self.hint.split())}"
        return text


class UsageError(WeightvaultError, exit_code=2, reason=Reason.USAGE):
    """The caller combined options that make no sense (for example two signing methods)."""


class InputError(WeightvaultError, exit_code=2, reason=Reason.INPUT):
    """A path is missing, unreadable, of the wrong kind, or would be overwritten."""


class FormatError(WeightvaultError, exit_code=2, reason=Reason.FORMAT):
    """Input bytes are not in the expected format; the message names the field."""


class KeyMaterialError(WeightvaultError, exit_code=2, reason=Reason.KEY_MATERIAL):
    """A key, certificate or token could not be loaded or used."""


class VerificationError(WeightvaultError, exit_code=1, reason=Reason.VERIFICATION):
    """A signature, digest, proof or checkpoint did not verify."""


class PolicyError(WeightvaultError, exit_code=1, reason=Reason.POLICY):
    """A well-formed request or artifact was refused by policy (identity, role, budget)."""


class UnsafeFileError(WeightvaultError, exit_code=1, reason=Reason.UNSAFE_FILE):
    """A file would execute code or is otherwise unsafe to load."""


class DecryptionError(WeightvaultError, exit_code=1, reason=Reason.DECRYPTION):
    """Decryption failed. Secret-dependent causes (wrong key, bad tag) share one message."""


def _rebuild(cls: type[WeightvaultError], message: str) -> WeightvaultError:
    """Unpickle an error without calling a subclass's ``__init__`` (its state comes after)."""
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error


#: errno values that mean "the operation wrote" whatever the call was.
_WRITE_ERRNOS = frozenset(
    {_errno.EROFS, _errno.ENOSPC, _errno.EDQUOT, _errno.EFBIG, _errno.EXDEV, _errno.ETXTBSY}
)
#: The hidden temporary names :mod:`weightvault._fs` writes before renaming into place.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.wvtmp-[0-9a-f]+$")


def _shown_path(path: str) -> str:
    """A temporary file's final name (``.x.wvtmp-ab12`` -> ``x``): the name the user gave."""
    head, tail = os.path.split(path)
    match = _TEMP_NAME.match(tail)
    return os.path.join(head, match.group("name")) if match else path


class FileSystemError(InputError, exit_code=2, reason=Reason.FILE_SYSTEM):
    """The operating system refused a file or network operation: a read-only folder, a full disk,
    a missing file, a folder where a file belongs, a port in use.

    ``path`` is the file or folder concerned (``None`` if the system did not say), ``errno`` the
    system's error number, ``writing`` whether the operation was writing. Exit code 2: the
    environment, not the input's content, stopped the command.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        errno: int | None = None,
        writing: bool = False,
        hint: str | None = None,
        remedy: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, remedy=remedy)
        self.path = path
        self.errno = errno
        self.writing = writing

    @classmethod
    def from_os_error(
        cls,
        exc: OSError,
        path: str | os.PathLike[str] | None = None,
        *,
        writing: bool | None = None,
    ) -> FileSystemError:
        """Describe ``exc`` in one line naming the path (``exc.filename``, else ``path``).

        ``writing`` says which way the failed operation went, where the error number alone does
        not tell (permission denied, no such file).
        """
        raw = exc.filename if exc.filename is not None else path
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "surrogateescape")
        given = os.fspath(raw) if raw is not None else None
        where = _shown_path(given) if given is not None else None
        code = exc.errno
        if writing is None:
            writing = (
                code in _WRITE_ERRNOS
                or (given is not None and given != where)  # a temporary file being written
                or (code in (_errno.EACCES, _errno.EPERM) and not os.path.lexists(where or ""))
            )
        message, hint = _describe(code, exc.strerror or type(exc).__name__, where, writing)
        return cls(message, path=where, errno=code, writing=writing, hint=hint)


def _describe(
    code: int | None, strerror: str, where: str | None, writing: bool
) -> tuple[str, str | None]:
    """The message and plain-words hint for one error number."""
    at = f": {where}" if where else ""
    folder = None
    if where:  # the folder written into: the path itself when it is one (an O_TMPFILE open)
        folder = where if os.path.isdir(where) else (os.path.dirname(where) or ".")
    if code == _errno.EROFS:
        return f"output folder is read-only: {folder}" if folder else "read-only file system", None
    if code in (_errno.EACCES, _errno.EPERM):
        verb = "writing" if writing else "reading"
        return f"permission denied {verb} {where}" if where else "permission denied", None
    if code == _errno.ENOSPC:
        return (
            f"no space left on device while writing {where}"
            if where
            else "no space left on device",
            "free some space or write elsewhere",
        )
    if code == _errno.EDQUOT:
        return (
            f"disk quota exceeded while writing {where}" if where else "disk quota exceeded",
            None,
        )
    if code == _errno.EFBIG:
        return f"file too large for its file system: {where}" if where else "file too large", None
    if code == _errno.ENOENT:
        if writing and folder:
            return f"folder does not exist: {folder}", "create it first"
        return f"no such file or folder{at}", None
    if code == _errno.EISDIR:
        return f"is a folder, expected a file{at}", None
    if code == _errno.ENOTDIR:
        return f"not a folder (a part of the path is a file){at}", None
    if code == _errno.EEXIST:
        return f"already exists{at}", None
    if code == _errno.ENOTEMPTY:
        return f"folder is not empty{at}", None
    if code in (_errno.EMFILE, _errno.ENFILE):
        return (
            f"too many open files{' (opening ' + where + ')' if where else ''}",
            "raise the limit (ulimit -n) or use fewer workers",
        )
    if code == _errno.ENAMETOOLONG:
        return f"file name too long{at}", None
    if code == _errno.ELOOP:
        return f"too many levels of symbolic links{at}", None
    if code == _errno.EIO:
        return f"input/output error{at}", "the disk or network file system failed; check it"
    if code == _errno.EADDRINUSE:
        return f"address already in use{at}", None
    if code == _errno.EADDRNOTAVAIL:
        return f"address not available on this machine{at}", None
    if code == _errno.ENOMEM:
        return "out of memory", None
    if code in (_errno.ECONNREFUSED, _errno.ECONNRESET, _errno.EHOSTUNREACH, _errno.ENETUNREACH):
        return f"{strerror.lower()}{at}", None
    return f"{strerror}{at}", None
