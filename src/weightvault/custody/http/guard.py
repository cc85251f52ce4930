"""The audit guard around the app: one audit entry per request before its response starts (fail
closed), and the 1 MiB limit on request bodies other than uploads."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from weightvault.custody.context import RequestContext
from weightvault.custody.service import Custody

__all__ = ["MAX_JSON_BODY", "AuditMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_JSON_BODY = 1 << 20
_REFUSED = b'{"error":"the audit log cannot be written; request refused"}'


class AuditMiddleware:
    """Guarantees one audit entry per request before its response starts (fail closed)."""

    def __init__(self, app: Any, custody: Custody) -> None:
        self.app = app
        self.custody = custody
        self.fastapi: FastAPI | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        path = str(scope.get("path", ""))[:300]
        ctx = RequestContext(
            request_id=secrets.token_hex(16),
            method=str(scope.get("method", ""))[:10],
            path=path,
            client=f"{client[0]}" if client else "",
        )
        scope.setdefault("state", {})["wv_ctx"] = ctx
        replaced = False

        async def guarded_send(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return
            if message["type"] == "http.response.start" and not ctx.audited:
                status = int(message["status"])
                outcome = "allowed" if status < 400 else "denied"
                try:
                    await run_in_threadpool(
                        self.custody.auditing.record, ctx, outcome, {"status": status}
                    )
                except Exception:
                    replaced = True
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 503,
                            "headers": [
                                (b"content-type", b"application/json"),
                                (b"content-length", str(len(_REFUSED)).encode()),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": _REFUSED})
                    return
            await send(message)

        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        is_upload = path.endswith("/upload")
        if length is not None and not is_upload:
            try:
                too_big = int(length) > MAX_JSON_BODY
            except ValueError:
                too_big = True
            if too_big:
                ctx.action = "http"
                ctx.detail["error"] = "request body too large"
                response = JSONResponse({"error": "request body larger than 1 MiB"}, 413)
                await response(scope, receive, guarded_send)
                return
        if not is_upload:
            receive = _limited_receive(receive, MAX_JSON_BODY)  # chunked bodies have no length
        await self.app(scope, receive, guarded_send)


def _limited_receive(receive: Receive, limit: int) -> Receive:
    """``receive`` that refuses (413) a body that grows past ``limit`` bytes."""
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise StarletteHTTPException(413, "request body larger than 1 MiB")
        return message

    return limited
