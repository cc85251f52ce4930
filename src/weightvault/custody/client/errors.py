"""The client's errors: a refusal by the service, and a transfer that broke off."""

from __future__ import annotations

from weightvault.errors import InputError, PolicyError

__all__ = ["TransferError", "VaultHTTPError"]


class VaultHTTPError(PolicyError):
    """The service refused a request; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"server refused ({status}): {message}")
        self.status = status
        if status >= 500 or status in (400, 404, 409, 413, 416, 422):
            self.exit_code = 2 if status < 500 else 1


class TransferError(InputError):
    """The connection to the service broke off during a download."""
