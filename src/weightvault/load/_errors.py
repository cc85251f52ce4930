"""Why a verified load was refused: one class per reason, all :class:`VerificationError`.

A program tells them apart by class or by ``exc.reason``; ``exc.names`` lists the files
concerned (model-relative names), so a caller can report them without parsing the message.
"""

from __future__ import annotations

from collections.abc import Iterable

from weightvault.errors import Reason, VerificationError

__all__ = [
    "BadSignatureError",
    "DigestMismatchError",
    "ExtraFileError",
    "LoadRefusedError",
    "MissingFileError",
    "SymlinkEscapeError",
]


class LoadRefusedError(VerificationError):
    """The model was not loaded: nothing read from it was returned."""

    def __init__(
        self,
        message: str,
        *,
        names: Iterable[str] = (),
        hint: str | None = None,
        reason: Reason | None = None,
    ) -> None:
        super().__init__(message, hint=hint, reason=reason)
        self.names = tuple(names)


class DigestMismatchError(LoadRefusedError, reason=Reason.DIGEST_MISMATCH):
    """A file's bytes (as read for loading) differ from its signed digest, or its size changed."""


class MissingFileError(LoadRefusedError, reason=Reason.MISSING_FILE):
    """A file the signature covers is absent."""


class ExtraFileError(LoadRefusedError, reason=Reason.EXTRA_FILE):
    """A file is present (or asked for) that the signature does not cover."""


class BadSignatureError(LoadRefusedError, reason=Reason.BAD_SIGNATURE):
    """The signature does not verify with the given verifier, or is not a model signature."""


class SymlinkEscapeError(LoadRefusedError, reason=Reason.SYMLINK_ESCAPE):
    """A symlink (or an opened file) resolves outside the folder it may point into."""


def listed(names: Iterable[str], limit: int = 5) -> str:
    """``a, b, c (+4 more)``: the first few names for a one-line message."""
    items = list(names)
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more
