"""HTTP statuses for the service's errors, and the one handler that answers every failure.

A failure gets its own audit entry (even after an earlier "allowed" one); a 401 or 403 is also
counted as a denial (several in a short time raise an alert).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from weightvault.custody.audit import AuditUnavailable
from weightvault.custody.context import RequestContext
from weightvault.custody.errors import AuthenticationError, ConflictError, NotFoundError
from weightvault.custody.http.ranges import RangeNotSatisfiable
from weightvault.custody.service import Custody
from weightvault.errors import (
    DecryptionError,
    PolicyError,
    UnsafeFileError,
    VerificationError,
    WeightvaultError,
)

__all__ = ["install_error_handler", "status_for"]

_log = logging.getLogger("weightvault.custody")


def status_for(exc: WeightvaultError) -> int:
    """The HTTP status of a refusal."""
    if isinstance(exc, AuthenticationError):
        return 401
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, RangeNotSatisfiable):
        return 416
    if isinstance(exc, AuditUnavailable):
        return 503
    if isinstance(exc, PolicyError | VerificationError | UnsafeFileError | DecryptionError):
        return 403
    return 400


def install_error_handler(app: FastAPI, custody: Custody) -> None:
    """Answer every failure as ``{"error": message}`` with its status, audited."""

    async def on_error(request: Request, exc: Exception) -> Response:
        ctx: RequestContext = request.state.wv_ctx
        if isinstance(exc, WeightvaultError):
            status = status_for(exc)
            message = exc.one_line()
        elif isinstance(exc, RequestValidationError):
            status = 422
            first = exc.errors()[0] if exc.errors() else {}
            where = ".".join(str(p) for p in first.get("loc", ()))
            message = f"{where}: {first.get('msg', 'invalid')}"
        elif isinstance(exc, StarletteHTTPException):
            status = exc.status_code
            message = str(exc.detail)
        else:
            status = 500
            message = "internal error"
            _log.error("unexpected error in %s %s", ctx.method, ctx.path, exc_info=exc)
        ctx.audited = False  # an entry for the failure, even after an earlier "allowed"
        ctx.detail["error"] = message[:500]
        if status in (401, 403):
            try:
                await run_in_threadpool(custody.auditing.record_denial, ctx, message)
            except WeightvaultError:
                status, message = 503, "the audit log cannot be written; request refused"
        headers = {}
        if isinstance(exc, RangeNotSatisfiable):
            headers["Content-Range"] = f"bytes */{exc.total}"
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    for kind in (WeightvaultError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(kind, on_error)
