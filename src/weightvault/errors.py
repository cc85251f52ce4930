"""One exception tree for everything weightvault raises on purpose.

Every error carries a one-line, user-facing message (what is wrong and, where it helps, what to do)
and the exit code the CLI uses for it. Exit codes follow one rule across commands:

* ``0``: success.
* ``1``: the check ran and the answer is "no" (a signature or digest does not match, a scan found
  something at or above the threshold, a policy denied the request, decryption failed
  authentication).
* ``2``: the check could not run (bad usage, a missing or unreadable file, malformed input).

``TypeError`` / ``ValueError`` are kept for caller mistakes in the Python API.
"""

from __future__ import annotations

__all__ = [
    "DecryptionError",
    "FormatError",
    "InputError",
    "KeyMaterialError",
    "PolicyError",
    "UnsafeFileError",
    "UsageError",
    "VerificationError",
    "WeightvaultError",
]


class WeightvaultError(Exception):
    """Base class: a failure with a user-facing message and an exit code."""

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message the CLI prints: never multi-line, hint appended after a semicolon."""
        text = " ".join(self.message.split())
        if self.hint:
            text += f"; {' '.join(self.hint.split())}"
        return text


class UsageError(WeightvaultError):
    """The caller combined options that make no sense (for example two signing methods)."""

    exit_code = 2


class InputError(WeightvaultError):
    """A path is missing, unreadable, of the wrong kind, or would be overwritten."""

    exit_code = 2


class FormatError(WeightvaultError):
    """Input bytes are not in the expected format; the message names the field."""

    exit_code = 2


class KeyMaterialError(WeightvaultError):
    """A key, certificate or token could not be loaded or used."""

    exit_code = 2


class VerificationError(WeightvaultError):
    """A signature, digest, proof or checkpoint did not verify."""

    exit_code = 1


class PolicyError(WeightvaultError):
    """A well-formed request or artifact was refused by policy (identity, role, budget)."""

    exit_code = 1


class UnsafeFileError(WeightvaultError):
    """A file would execute code or is otherwise unsafe to load."""

    exit_code = 1


class DecryptionError(WeightvaultError):
    """Decryption failed. Secret-dependent causes (wrong key, bad tag) share one message."""

    exit_code = 1
