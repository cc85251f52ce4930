"""The console's routes: server-rendered pages, the JSON steps of WebAuthn ceremonies, and the
token-authenticated enrolment endpoint (``POST /v1/console/enrol``).

Every response carries a strict Content-Security-Policy (scripts and styles from this origin
only, no inline script, no framing). Cookies are ``Secure``, ``HttpOnly``, ``SameSite=Strict``
and scoped to ``/console``. Every state-changing request must come from the console's own
origin (``Origin`` header, and ``Sec-Fetch-Site`` when the browser sends it) and carry the CSRF
token of its session or page row (a form field or the ``X-CSRF-Token`` header).

The console's origin and WebAuthn RP id come from ``WEIGHTVAULT_CONSOLE_ORIGIN`` (for example
``https://vault.example.org`` behind a TLS proxy); by default ``http://localhost:PORT``, a
secure context for browsers, on the port the service listens on. Pages asked for under another
host name (``127.0.0.1``) are redirected there, since WebAuthn refuses IP addresses as RP ids.
"""

from __future__ import annotations

import functools
import hmac
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, Field

from weightvault import _b64 as b64
from weightvault.custody.console.decisions import Decisions, Queue
from weightvault.custody.console.jobviews import JOB_GROUPS, JobPages
from weightvault.custody.console.notify import PendingNotifier
from weightvault.custody.console.room import Console, RelyingParty, SessionView
from weightvault.custody.console.views import Pages
from weightvault.custody.context import RequestContext, Shared
from weightvault.custody.errors import AuthenticationError
from weightvault.custody.grants import REQUEST_STATUSES
from weightvault.custody.http.deps import Action
from weightvault.custody.http.errors import status_for
from weightvault.custody.service import Custody
from weightvault.errors import PolicyError, WeightvaultError

__all__ = ["ORIGIN_ENV", "console_router"]

ORIGIN_ENV = "WEIGHTVAULT_CONSOLE_ORIGIN"
SESSION_COOKIE = "wv_session"
PAGE_COOKIE = "wv_page"
_HERE = Path(__file__).parent
_STATIC = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make form posts say Origin: null
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}
P = ParamSpec("P")
R = TypeVar("R", bound=Response)


class _Redirect(Exception):
    """Answer with a redirect (a page that needs a session, without one)."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class OptionsIn(BaseModel):
    name: str = Field("", max_length=64)


class CodeIn(BaseModel):
    code: str = Field(..., max_length=100)


class CredentialIn(BaseModel):
    credential: str = Field(..., max_length=16384)
    code: str = Field("", max_length=100)


class EnrolIn(BaseModel):
    proof: str = Field("", max_length=4096)
    """Base64 of the enrolment request signed with the caller's approval key."""
    principal: str = Field("", max_length=64)
    """Whom the link is for, when an admin asks for someone else."""


class DecisionIn(BaseModel):
    decision: str = Field(..., max_length=16)
    reason: str = Field("", max_length=2000)
    digest: str = Field(..., max_length=64)


@dataclass(frozen=True)
class _Queue:
    """One queue approvers decide with a passkey (grant requests, jobs): its pages.

    ``name`` spells its URLs (``/console/{name}s/{id}``) and pages (``{name}s.html``,
    ``{name}.html``, which shows the item as ``item``)."""

    name: Queue
    groups: Collection[str]
    """The list page's ``status`` choices (anything else shows ``pending``)."""
    actions: tuple[str, str, str, str]
    """Audit actions of the list page, an item's page, the question and the answer."""
    listing: Callable[[RequestContext, str], list[dict[str, Any]]]
    item: Callable[[RequestContext, str], dict[str, Any]]


def relying_party(request: Request) -> RelyingParty:
    """The console's origin and RP id (see the module docstring)."""
    origin = os.environ.get(ORIGIN_ENV, "")
    if not origin:
        server = request.scope.get("server") or ("localhost", 80)
        origin = f"{request.url.scheme}://localhost:{server[1]}"
    host = urlsplit(origin).hostname or "localhost"
    return RelyingParty(origin=origin.rstrip("/"), rp_id=host)


def _headers(response: R) -> R:
    response.headers.update(SECURITY_HEADERS)
    return response


def _json_text(document: str) -> Response:
    """A JSON document already encoded (WebAuthn options), with the console's headers."""
    return _headers(Response(document, media_type="application/json"))


def _set_cookie(response: Response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/console",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def _cookie(request: Request, name: str) -> str | None:
    """The first cookie called ``name``: browsers send the one with the longest path first, so
    a cookie planted for ``/`` (cookie tossing) cannot shadow the console's own."""
    for part in request.headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _check_origin(request: Request, rp: RelyingParty) -> None:
    """A state change must come from the console's own pages."""
    if request.headers.get("origin") != rp.origin:
        raise PolicyError("cross-origin request refused")
    site = request.headers.get("sec-fetch-site")
    if site is not None and site != "same-origin":
        raise PolicyError("cross-site request refused")


def _check_csrf(view: SessionView, token: str | None) -> None:
    if not token or not hmac.compare_digest(token.encode(), view.csrf.encode()):
        raise PolicyError("missing or wrong CSRF token; reload the page")


def _json_step(request: Request, view: SessionView) -> RelyingParty:
    """What every JSON step of a ceremony checks first: the request comes from the console's own
    origin and carries the page's CSRF token in its header; the relying party for the step."""
    rp = relying_party(request)
    _check_origin(request, rp)
    _check_csrf(view, request.headers.get("x-csrf-token"))
    return rp


def console_router(custody: Custody, action: Action) -> APIRouter:
    """The console's routes over ``custody`` (its own rooms, sharing the service's parts)."""
    shared = Shared(custody.config, custody.store, custody.clock, custody.auditing.record)
    console = Console(shared)
    decisions = Decisions(shared, console, custody.grants, custody.jobs)
    pages = Pages(shared, custody.trail)
    job_pages = JobPages(shared, custody.jobs)
    templates = Environment(
        loader=FileSystemLoader(_HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    static = {name: (_HERE / "static" / name).read_bytes() for name in _STATIC}
    if custody.config.webhook_url:
        custody.grants.on_pending = PendingNotifier(
            custody.config.webhook_url, os.environ.get(ORIGIN_ENV, "").rstrip("/")
        )
    router = APIRouter()

    def refusal(ctx: RequestContext, exc: WeightvaultError) -> tuple[int, str]:
        """Audit a refusal like the service's error handler does; (status, message)."""
        status = status_for(exc)
        message = exc.one_line()
        ctx.audited = False
        ctx.detail["error"] = message[:500]
        if status in (401, 403):
            custody.auditing.record_denial(ctx, message)
        return status, message

    def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        ctx: RequestContext = request.state.wv_ctx
        html = templates.get_template(template).render(
            principal=ctx.principal, path=request.url.path, **context
        )
        return _headers(HTMLResponse(html, status_code=status))

    def answering(
        refused: Callable[[Request, int, str], Response],
    ) -> Callable[[Callable[P, Response]], Callable[P, Response]]:
        """A route decorator: a refusal is audited and answered by ``refused(request, status,
        message)``; a page that needs a session, without one, redirects to sign-in."""

        def decorate(handler: Callable[P, Response]) -> Callable[P, Response]:
            @functools.wraps(handler)
            def wrapped(*args: P.args, **kwargs: P.kwargs) -> Response:
                request = kwargs["request"]
                assert isinstance(request, Request)
                try:
                    return handler(*args, **kwargs)
                except _Redirect as redirect:
                    return _headers(RedirectResponse(redirect.location, status_code=303))
                except WeightvaultError as exc:
                    status, message = refusal(request.state.wv_ctx, exc)
                    return refused(request, status, message)

            return wrapped

        return decorate

    page = answering(
        lambda request, status, message: render(
            request, "error.html", status, message=message, csrf=""
        )
    )
    """An HTML route: refusals become an error page."""
    step = answering(
        lambda _request, status, message: _headers(
            JSONResponse({"error": message}, status_code=status)
        )
    )
    """A JSON step of a ceremony: refusals become ``{"error": ...}`` with their status."""

    def signed_in(request: Request, ctx: RequestContext, name: str) -> SessionView:
        """The request's console session (else a redirect to sign-in, for pages)."""
        ctx.action = name
        rp = relying_party(request)
        if request.method == "GET" and request.headers.get("host") != urlsplit(rp.origin).netloc:
            raise _Redirect(rp.origin + str(request.url.path))
        view = console.find(_cookie(request, SESSION_COOKIE), "session")
        if view is None:
            if request.method == "GET":
                raise _Redirect("/console/login")
            raise AuthenticationError("not signed in, or the session ended; sign in again")
        console.authenticate(ctx, view)
        return view

    def page_row(request: Request, ctx: RequestContext, name: str) -> SessionView:
        """The sign-in or registration page's row, for its JSON steps."""
        ctx.action = name
        view = console.find(_cookie(request, PAGE_COOKIE), "ceremony")
        if view is None:
            raise AuthenticationError("this page expired; reload it")
        return view

    def context(request: Request) -> RequestContext:
        ctx: RequestContext = request.state.wv_ctx
        return ctx

    def json_step(
        request: Request, name: str, row: Callable[[Request, RequestContext, str], SessionView]
    ) -> tuple[RequestContext, SessionView, RelyingParty]:
        """A JSON step of a ceremony named ``name``, on its row (``signed_in``: the session;
        ``page_row``: the sign-in or registration page), from this origin with its CSRF token."""
        ctx = context(request)
        view = row(request, ctx, name)
        return ctx, view, _json_step(request, view)

    def form_step(request: Request, name: str, csrf: str) -> tuple[RequestContext, SessionView]:
        """A signed-in form post named ``name``, from this origin with the session's CSRF token."""
        ctx = context(request)
        view = signed_in(request, ctx, name)
        _check_origin(request, relying_party(request))
        _check_csrf(view, csrf)
        return ctx, view

    # -- static files and the front door ------------------------------------------------------

    @router.get("/console/static/{name}", include_in_schema=False)
    def static_file(name: str, request: Request) -> Response:
        context(request).action = "console.static"
        if name not in static:
            return _headers(Response(b"not found", 404, media_type="text/plain"))
        response = Response(static[name], media_type=_STATIC[name])
        _headers(response)
        response.headers["Cache-Control"] = "no-cache"
        return response

    @router.get("/console", include_in_schema=False)
    @page
    def front(request: Request) -> Response:
        signed_in(request, context(request), "console.home")
        raise _Redirect("/console/requests")

    # -- sign-in and registration -------------------------------------------------------------

    def fresh_page(request: Request, template: str, **extra: Any) -> Response:
        rp = relying_party(request)
        if request.headers.get("host") != urlsplit(rp.origin).netloc:
            query = f"?{request.url.query}" if request.url.query else ""
            raise _Redirect(rp.origin + str(request.url.path) + query)
        cookie, view = console.open_page()
        response = render(request, template, csrf=view.csrf, **extra)
        _set_cookie(response, PAGE_COOKIE, cookie, max_age=600)
        return response

    @router.get("/console/login", include_in_schema=False)
    @page
    def login_page(request: Request) -> Response:
        context(request).action = "console.login.page"
        return fresh_page(request, "login.html")

    @router.post("/console/login/options", include_in_schema=False)
    @step
    def login_options(request: Request, body: OptionsIn) -> Response:
        _ctx, view, rp = json_step(request, "console.login.options", page_row)
        options = console.login_options(view, body.name.strip(), rp)
        return _json_text(options)

    @router.post("/console/login", include_in_schema=False)
    @step
    def login(request: Request, body: CredentialIn) -> Response:
        ctx, view, rp = json_step(request, "console.login", page_row)
        cookie, _session = console.login(ctx, view, body.credential, rp)
        response = _headers(JSONResponse({"next": "/console/requests"}))
        _set_cookie(response, SESSION_COOKIE, cookie)
        response.delete_cookie(PAGE_COOKIE, path="/console", secure=True, httponly=True)
        return response

    @router.post("/console/logout", include_in_schema=False)
    @page
    def logout(request: Request, csrf: str = Form("", max_length=100)) -> Response:
        ctx, view = form_step(request, "console.logout", csrf)
        console.logout(ctx, view)
        response = _headers(RedirectResponse("/console/login", status_code=303))
        response.delete_cookie(SESSION_COOKIE, path="/console", secure=True, httponly=True)
        return response

    @router.get("/console/register", include_in_schema=False)
    @page
    def register_page(request: Request, code: str = "") -> Response:
        context(request).action = "console.register.page"
        name = console.enrolment_name(code)
        return fresh_page(request, "register.html", code=code, name=name)

    @router.post("/console/register/options", include_in_schema=False)
    @step
    def register_options(request: Request, body: CodeIn) -> Response:
        _ctx, view, rp = json_step(request, "console.register.options", page_row)
        options = console.registration_options(view, body.code, rp)
        return _json_text(options)

    @router.post("/console/register", include_in_schema=False)
    @step
    def register(request: Request, body: CredentialIn) -> Response:
        ctx, view, rp = json_step(request, "console.register", page_row)
        result = console.register(ctx, view, body.code, body.credential, rp)
        return _headers(JSONResponse({"next": "/console/login", **result}))

    @router.post("/v1/console/enrol", status_code=201)
    def enrol(
        request: Request,
        body: EnrolIn | None = None,
        ctx: RequestContext = Depends(action("console.enrol")),
    ) -> Any:
        """A one-time link (15 minutes) to register a passkey."""
        body = body or EnrolIn(proof="", principal="")
        proof = b64.decode(body.proof, "proof", max_size=3072) if body.proof else None
        result = console.enrol(ctx, proof=proof, principal=body.principal or None)
        result["url"] = relying_party(request).origin + result["path"]
        return result

    @router.get("/v1/console/passkeys")
    def passkeys(ctx: RequestContext = Depends(action("console.passkeys"))) -> Any:
        return console.passkeys(ctx)

    @router.post("/v1/console/passkeys/{key_id}/revoke")
    def revoke_passkey(
        key_id: str, ctx: RequestContext = Depends(action("console.passkey.revoke"))
    ) -> Any:
        return console.revoke_passkey(ctx, key_id)

    # -- pages --------------------------------------------------------------------------------

    def decision_queue(queue: _Queue) -> None:
        """The routes of one queue approvers decide with a passkey: its list, one item, the
        question (assertion options) and the answer."""
        base = f"/console/{queue.name}s"

        @router.get(base, include_in_schema=False)
        @page
        def listing(request: Request, status: str = "pending") -> Response:
            ctx = context(request)
            view = signed_in(request, ctx, queue.actions[0])
            if status not in queue.groups:
                status = "pending"
            items = queue.listing(ctx, status)
            return render(request, f"{queue.name}s.html", csrf=view.csrf, items=items, shown=status)

        @router.get(base + "/{item_id}", include_in_schema=False)
        @page
        def item_page(request: Request, item_id: str) -> Response:
            ctx = context(request)
            view = signed_in(request, ctx, queue.actions[1])
            item = queue.item(ctx, item_id[:64])
            return render(request, f"{queue.name}.html", csrf=view.csrf, item=item)

        @router.post(base + "/{item_id}/options", include_in_schema=False)
        @step
        def question(request: Request, item_id: str, body: DecisionIn) -> Response:
            ctx, view, rp = json_step(request, queue.actions[2], signed_in)
            options = decisions.options(
                queue.name, ctx, view, item_id[:64], body.decision, body.reason, body.digest, rp
            )
            return _json_text(options)

        @router.post(base + "/{item_id}/decision", include_in_schema=False)
        @step
        def answer(request: Request, item_id: str, body: CredentialIn) -> Response:
            ctx, view, rp = json_step(request, queue.actions[3], signed_in)
            result = decisions.decide(queue.name, ctx, view, item_id[:64], body.credential, rp)
            return _headers(
                JSONResponse({"next": f"{base}/{result['id']}", "status": result["status"]})
            )

    decision_queue(
        _Queue(
            "request",
            REQUEST_STATUSES,
            ("console.requests", "console.request", "console.decision.options", "request.decide"),
            pages.requests,
            pages.request,
        )
    )
    decision_queue(
        _Queue(
            "job",
            JOB_GROUPS,
            ("console.jobs", "console.job", "console.job.options", "job.decide"),
            job_pages.jobs,
            job_pages.job,
        )
    )

    def read_page(name: str, key: str, read: Callable[[RequestContext], Any]) -> None:
        """``/console/{name}``: what ``read`` returns, shown as ``key`` by ``{name}.html``."""

        @router.get(f"/console/{name}", include_in_schema=False)
        @page
        def shown(request: Request) -> Response:
            ctx = context(request)
            view = signed_in(request, ctx, f"console.{name}")
            return render(request, f"{name}.html", csrf=view.csrf, **{key: read(ctx)})

    read_page("grants", "items", pages.grants)
    read_page("audit", "log", pages.timeline)
    read_page("alerts", "items", pages.alerts)

    @router.post("/console/grants/{request_id}/revoke", include_in_schema=False)
    @page
    def revoke(request: Request, request_id: str, csrf: str = Form("", max_length=100)) -> Response:
        ctx, _view = form_step(request, "grant.revoke", csrf)
        custody.grants.revoke(ctx, request_id[:64])
        return _headers(RedirectResponse("/console/grants", status_code=303))

    return router
