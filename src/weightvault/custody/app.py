"""HTTP interface of the custody service (FastAPI), and the uvicorn runner.

Every request, whatever its outcome (allowed, denied, malformed, unknown route), leaves an entry
in the audit log before its response starts: handlers that change state write their entry before
committing; for everything else :class:`AuditMiddleware` writes it when the response begins, and
if that write fails the client gets 503 instead of the response (fail closed).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import anyio.from_thread
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from weightvault.custody.audit import AuditUnavailable
from weightvault.custody.service import (
    AuthenticationError,
    ConflictError,
    Custody,
    NotFoundError,
    RangeNotSatisfiable,
    RequestContext,
)
from weightvault.errors import (
    DecryptionError,
    FormatError,
    PolicyError,
    UnsafeFileError,
    VerificationError,
    WeightvaultError,
)

__all__ = ["AuditMiddleware", "create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_JSON_BODY = 1 << 20
_log = logging.getLogger("weightvault.custody")


def _status_for(exc: WeightvaultError) -> int:
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
                    await run_in_threadpool(self.custody.audit, ctx, outcome, {"status": status})
                except Exception:
                    replaced = True
                    body = b'{"error":"the audit log cannot be written; request refused"}'
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 503,
                            "headers": [
                                (b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": body})
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


# -- request bodies ---------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PrincipalIn(_Body):
    name: str = Field(max_length=64)
    roles: list[str] = Field(max_length=5)
    recipient: str | None = Field(default=None, max_length=200)
    approval_key_pem: str | None = Field(default=None, max_length=4096)


class PrincipalPatch(_Body):
    roles: list[str] | None = Field(default=None, max_length=5)
    recipient: str | None = Field(default=None, max_length=200)
    approval_key_pem: str | None = Field(default=None, max_length=4096)
    disabled: StrictBool | None = None


class TokenIn(_Body):
    label: str = Field(default="", max_length=128)


class ModelIn(_Body):
    name: str = Field(max_length=128)
    policy: dict[str, Any]


class PolicyIn(_Body):
    policy: dict[str, Any]


class RequestIn(_Body):
    model: str = Field(max_length=128)
    version: str = Field(max_length=64)
    justification: str = Field(max_length=2000)
    duration_s: StrictInt = Field(ge=1, le=30 * 24 * 3600)
    byte_budget: StrictInt = Field(ge=1, le=1 << 50)


class ApprovalIn(_Body):
    envelope: str = Field(max_length=24_000)


# -- the app ----------------------------------------------------------------------------------


def create_app(custody: Custody) -> AuditMiddleware:
    """The ASGI application for one :class:`Custody` replica (FastAPI inside the audit guard)."""
    app = FastAPI(
        title="weightvault custody service",
        version="1",
        description="Registry, just-in-time grants with M-of-N signed approvals, egress budgets, "
        "and an audit log that every request goes through.",
    )

    def ctx_of(request: Request) -> RequestContext:
        ctx: RequestContext = request.state.wv_ctx
        return ctx

    def action(name: str, *, auth: bool = True) -> Callable[..., RequestContext]:
        def dependency(
            request: Request, authorization: str | None = Header(default=None, max_length=200)
        ) -> RequestContext:
            ctx = ctx_of(request)
            ctx.action = name
            if auth:
                custody.authenticate(ctx, authorization)
            return ctx

        return dependency

    async def on_error(request: Request, exc: Exception) -> Response:
        ctx = ctx_of(request)
        if isinstance(exc, WeightvaultError):
            status = _status_for(exc)
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
                await run_in_threadpool(custody.record_denial, ctx, message)
            except WeightvaultError:
                status, message = 503, "the audit log cannot be written; request refused"
        headers = {}
        if isinstance(exc, RangeNotSatisfiable):
            headers["Content-Range"] = f"bytes */{exc.total}"
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    app.add_exception_handler(WeightvaultError, on_error)
    app.add_exception_handler(RequestValidationError, on_error)
    app.add_exception_handler(StarletteHTTPException, on_error)
    app.add_exception_handler(Exception, on_error)

    @app.get("/v1/healthz")
    def healthz(ctx: RequestContext = Depends(action("healthz", auth=False))) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/whoami")
    def whoami(ctx: RequestContext = Depends(action("whoami"))) -> dict[str, Any]:
        return custody.whoami(ctx)

    @app.post("/v1/principals", status_code=201)
    def create_principal(
        body: PrincipalIn, ctx: RequestContext = Depends(action("principal.create"))
    ) -> dict[str, Any]:
        return custody.create_principal(
            ctx, body.name, body.roles, body.recipient, body.approval_key_pem
        )

    @app.patch("/v1/principals/{name}")
    def update_principal(
        name: str,
        body: PrincipalPatch,
        ctx: RequestContext = Depends(action("principal.update")),
    ) -> dict[str, str]:
        custody.update_principal(ctx, name, body.model_dump())
        return {"status": "updated"}

    @app.post("/v1/principals/{name}/tokens", status_code=201)
    def issue_token(
        name: str, body: TokenIn, ctx: RequestContext = Depends(action("token.issue"))
    ) -> dict[str, Any]:
        return custody.issue_token(ctx, name, body.label)

    @app.delete("/v1/tokens/{token_id}")
    def revoke_token(
        token_id: str, ctx: RequestContext = Depends(action("token.revoke"))
    ) -> dict[str, str]:
        custody.revoke_token(ctx, token_id[:32])
        return {"status": "revoked"}

    @app.post("/v1/models", status_code=201)
    def create_model(
        body: ModelIn, ctx: RequestContext = Depends(action("model.create"))
    ) -> dict[str, Any]:
        return custody.create_model(ctx, body.name, body.policy)

    @app.put("/v1/models/{name}/policy")
    def set_policy(
        name: str, body: PolicyIn, ctx: RequestContext = Depends(action("model.policy"))
    ) -> dict[str, Any]:
        return custody.set_policy(ctx, name, body.policy)

    @app.get("/v1/inventory")
    def inventory(ctx: RequestContext = Depends(action("inventory"))) -> list[dict[str, Any]]:
        return custody.inventory(ctx)

    @app.post("/v1/models/{name}/versions/{version}/upload", status_code=201)
    async def upload(
        name: str,
        version: str,
        request: Request,
        ctx: RequestContext = Depends(action("version.upload")),
    ) -> dict[str, Any]:
        stream = request.stream().__aiter__()
        reader = _StreamReader(stream)
        result: dict[str, Any] = await anyio.to_thread.run_sync(
            custody.upload, ctx, name, version, reader
        )
        return result

    @app.post("/v1/requests", status_code=201)
    def create_request(
        body: RequestIn, ctx: RequestContext = Depends(action("request.create"))
    ) -> dict[str, Any]:
        return custody.create_request(
            ctx, body.model, body.version, body.justification, body.duration_s, body.byte_budget
        )

    @app.get("/v1/requests")
    def list_requests(
        status: str | None = Query(default=None, max_length=16),
        ctx: RequestContext = Depends(action("request.list")),
    ) -> list[dict[str, Any]]:
        return custody.list_requests(ctx, status)

    @app.get("/v1/requests/{request_id}")
    def get_request(
        request_id: str, ctx: RequestContext = Depends(action("request.get"))
    ) -> dict[str, Any]:
        return custody.get_request(ctx, request_id)

    @app.post("/v1/requests/{request_id}/approvals", status_code=201)
    def approve(
        request_id: str,
        body: ApprovalIn,
        ctx: RequestContext = Depends(action("request.decide")),
    ) -> dict[str, Any]:
        return custody.submit_approval(ctx, request_id, body.envelope)

    @app.post("/v1/requests/{request_id}/revoke")
    def revoke(
        request_id: str, ctx: RequestContext = Depends(action("grant.revoke"))
    ) -> dict[str, Any]:
        return custody.revoke(ctx, request_id)

    @app.get("/v1/grants/{grant_id}/files")
    def grant_files(
        grant_id: str, ctx: RequestContext = Depends(action("grant.files"))
    ) -> dict[str, Any]:
        return custody.grant_files(ctx, grant_id)

    @app.get(
        "/v1/grants/{grant_id}/files/{index}",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/octet-stream": {}}}},
    )
    def pull(
        grant_id: str,
        index: int,
        range_header: str | None = Header(default=None, alias="Range", max_length=100),
        ctx: RequestContext = Depends(action("pull")),
    ) -> StreamingResponse:
        status, headers, body = custody.open_pull(ctx, grant_id, index, range_header)
        return StreamingResponse(body, status_code=status, headers=headers)

    @app.get("/v1/audit/export")
    def audit_export(ctx: RequestContext = Depends(action("audit.export"))) -> Response:
        return Response(custody.audit_export(ctx), media_type="application/json")

    @app.get("/v1/audit/key")
    def audit_key(ctx: RequestContext = Depends(action("audit.key"))) -> dict[str, Any]:
        return custody.audit_key(ctx)

    @app.get("/v1/alerts")
    def alerts(ctx: RequestContext = Depends(action("alerts.list"))) -> list[dict[str, Any]]:
        return custody.list_alerts(ctx)

    guarded = AuditMiddleware(app, custody)
    guarded.fastapi = app
    return guarded


class _StreamReader:
    """A blocking file-like view of an ASGI request body, for a worker thread."""

    def __init__(self, stream: AsyncIterator[bytes]) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._done = False

    async def _next(self) -> bytes:
        try:
            return await self._stream.__anext__()
        except ClientDisconnect as exc:
            raise FormatError("upload: the client disconnected before the body ended") from exc

    def _fill(self, want: int) -> None:
        while len(self._buffer) < want and not self._done:
            try:
                piece: bytes = anyio.from_thread.run(self._next)
            except StopAsyncIteration:
                self._done = True
                break
            self._buffer += piece

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            size = 1 << 62
        self._fill(size)
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out

    def readline(self, limit: int = -1, /) -> bytes:
        limit = limit if limit >= 0 else 1 << 62
        while True:
            newline = self._buffer.find(b"\n", 0, limit)
            if newline >= 0:
                return self.read(newline + 1)
            if len(self._buffer) >= limit or self._done:
                return self.read(limit)
            self._fill(len(self._buffer) + 65536)
