"""The custody service's refusals that have an HTTP status of their own (see :mod:`.http.errors`).

Everything else it raises is a :class:`~weightvault.errors.WeightvaultError` of the shared tree.
"""

from __future__ import annotations

from typing import TypeVar

from weightvault.errors import InputError, PolicyError

__all__ = ["AuthenticationError", "ConflictError", "NotFoundError", "found"]

T = TypeVar("T")


class AuthenticationError(PolicyError):
    """No token, or a token that is unknown, malformed or revoked (HTTP 401)."""


class NotFoundError(InputError):
    """The named object does not exist (HTTP 404)."""


class ConflictError(PolicyError):
    """The object exists already or the request was already decided (HTTP 409)."""


def found(row: T | None, what: str) -> T:
    """``row`` as looked up, or :class:`NotFoundError` ``{what} not found`` if there is none."""
    if row is None:
        raise NotFoundError(f"{what} not found")
    return row
