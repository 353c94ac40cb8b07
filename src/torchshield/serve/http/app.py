"""The HTTP front of the serving core (FastAPI is imported only under ``serve/http``).

:func:`create_app` assembles three parts chosen once at start-up:

- :class:`GuardMiddleware`, one pure-ASGI middleware around every route: it bounds the request
  body (413), creates the request's typed :class:`~torchshield.serve.http.context.AuditContext`,
  counts the request in the metrics and writes exactly one audit record per request, committed
  before the first byte of the response leaves (a failed audit write turns the response into a
  503, fail closed); an unexpected exception becomes a JSON 500 that has its record too.
- the request path (:mod:`torchshield.serve.http.paths`): where checks, model and commit run
  for this backend;
- the routes (:mod:`torchshield.serve.http.routes`), module-level functions that get the
  service, the path and the audit context as dependencies.

Errors map through the error tree (:func:`status_for`): ``AccessDenied`` 403, ``InputError``
422, and so on. Bodies are ``{"error": {"code", "message"}}`` and never contain a token, an input
or a database detail.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message

from torchshield.errors import AccessDenied, CheckFailed, InputError, PolicyError, ShieldError, WrongKeyError
from torchshield.serve.db import redact_url
from torchshield.serve.db_errors import database_errors
from torchshield.serve.http.context import AuditContext
from torchshield.serve.http.paths import ApiError, RequestPath, choose_path
from torchshield.serve.http.routes import router
from torchshield.serve.http.schemas import first_problem
from torchshield.serve.service import Service

__all__ = ["ApiError", "GuardMiddleware", "audit_context", "create_app", "status_for"]

log = logging.getLogger("torchshield.serve")

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_input", 429: "rate_limited",
          500: "internal_error", 503: "unavailable"}


def status_for(exc: ShieldError) -> int:
    """The HTTP status of an error of the tree (see :mod:`torchshield.errors`), the same classes
    the CLI maps to exit codes: policy refusals 403, bad input 422; a failed check or anything
    else torchshield raised on purpose inside a request is the service's fault, 500. An error that
    names its own ``http_status`` (the privacy gateway's: 400, 413, 422, 451) gets that one."""
    own = getattr(type(exc), "http_status", None)
    if isinstance(own, int) and 400 <= own < 500:
        return own
    if isinstance(exc, (AccessDenied, PolicyError)):
        return 403
    if isinstance(exc, (InputError, WrongKeyError)):
        return 422
    if isinstance(exc, CheckFailed):
        return 500
    return 500


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    hdrs = dict(headers or {})
    if status == 401:
        hdrs.setdefault("WWW-Authenticate", 'Bearer realm="torchshield"')
    return JSONResponse({"error": {"code": _CODES.get(status, "error"), "message": message}}, status, hdrs)


def audit_context(request: Request) -> AuditContext:
    """The request's audit context (set by :class:`GuardMiddleware`)."""
    return request.scope["state"]["audit"]


async def _nothing() -> dict:
    return {"type": "http.disconnect"}


class GuardMiddleware:
    """Body limit, metrics and one committed audit record per request (pure ASGI)."""

    def __init__(self, app: Any, *, service: Service, path: RequestPath) -> None:
        self.app, self.path, self.metrics = app, path, service.metrics
        self.limit = service.config.body_limit

    async def _read_body(self, scope: dict, receive: Any) -> bytes | None:
        """The whole body, or None if it is over the limit (413); raises EOFError on disconnect."""
        try:
            declared = int(dict(scope["headers"]).get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        if declared > self.limit:
            return None
        chunks, total, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise EOFError
            chunk = msg.get("body", b"")
            total += len(chunk)
            if total > self.limit:
                return None
            chunks.append(chunk)
            more = msg.get("more_body", False)
        return b"".join(chunks)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ctx = AuditContext(method=scope.get("method", ""))
        scope.setdefault("state", {})["audit"] = ctx
        try:
            body = await self._read_body(scope, receive)
        except EOFError:
            return
        state = {"dropped": False, "started": False}

        async def guarded_send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                state["started"] = True
                instead = await self.path.commit(ctx, msg["status"])
                self.metrics.observe_request(ctx.route or "unmatched", instead.status if instead else msg["status"],
                                             ctx.elapsed())
                if instead is not None:  # the record failed (503), or a fresh key check refused (401/403)
                    state["dropped"] = True
                    await _error(instead.status, instead.message, instead.headers)(scope, _nothing, send)
                    return
            elif state["dropped"]:
                return
            await send(msg)

        if body is None:
            ctx.action, ctx.reason = "body_limit", f"body over {self.limit} bytes"
            await _error(413, f"request body is larger than the limit of {self.limit} bytes")(
                scope, _nothing, guarded_send)
            return
        ctx.body = body
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body, only the real disconnect can come

        try:
            await self.app(scope, replay, guarded_send)
        except Exception as exc:  # noqa: BLE001 - anything unexpected: a JSON 500 that has its record
            log.error("unhandled %s on %s %s", type(exc).__name__, ctx.method, ctx.route or "unmatched",
                      exc_info=True)
            if state["started"]:
                return  # the response (and its record) went out already
            ctx.reason = f"internal error ({type(exc).__name__})"
            await _error(500, "internal error; the request was recorded, retry or report it")(
                scope, _nothing, guarded_send)


# ---- exception handlers: the error tree and the framework's errors to JSON ----------------------
async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    audit_context(request).reason = exc.message
    return _error(exc.status, exc.message, exc.headers)


async def _shield_error(request: Request, exc: ShieldError) -> JSONResponse:
    status = status_for(exc)
    audit_context(request).reason = exc.message[:200]
    return _error(status, exc.message if status < 500 else "internal error; the request was recorded")


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return _error(exc.status_code, "no such endpoint" if exc.status_code == 404 else str(exc.detail)[:200])


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A query or path parameter refused before the route ran: its record still names the route."""
    message = first_problem(list(exc.errors()))
    ctx = audit_context(request)
    route = request.scope.get("route")
    if ctx.route is None and route is not None:
        ctx.route, ctx.action = route.path, f"{route.name}.invalid"
    ctx.reason = message
    return _error(422, message)


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    """The database went away mid-run (a restart, a network cut): a JSON 503 the caller can
    retry, not a bare 500. Its record fails too, so the middleware's fail-closed 503 may answer
    instead. The log gets the error's class and first line, never the URL's secrets."""
    log.warning("database unavailable: %s: %s", type(exc).__name__,
                redact_url(str(exc).splitlines()[0][:200]) if str(exc) else "")
    audit_context(request).reason = "database unavailable"
    return _error(503, "the service database is unavailable; retry shortly", {"Retry-After": "1"})


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Freeze the start-up heap (torch, SciPy, the models: ~250k objects) out of the garbage
    collector's reach: a full collection over it takes ~160 ms on this machine, a pause that
    would land on whichever request triggered it."""
    gc.collect()
    gc.freeze()
    yield
    hot = app.state.service.db.async_hot
    if hot is not None:
        await hot.close()


def create_app(service: Service, *, path: RequestPath | None = None) -> FastAPI:
    """The FastAPI application for ``service`` (OpenAPI docs at /docs and /openapi.json).

    ``path`` is the request path; by default the one :func:`choose_path` picks for the backend."""
    path = path or choose_path(service)
    app = FastAPI(title="torchshield inference service", version="1", lifespan=_lifespan,
                  description="Authenticated, rate-limited, audited model inference. "
                              "Send `Authorization: Bearer <key>`; keys come from `torchshield access`.")
    app.state.service, app.state.path = service, path
    app.add_middleware(GuardMiddleware, service=service, path=path)
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]  # Starlette types handlers as taking Exception, not a subclass
    app.add_exception_handler(ShieldError, _shield_error)  # type: ignore[arg-type]  # Starlette types handlers as taking Exception, not a subclass
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]  # Starlette types handlers as taking Exception, not a subclass
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]  # Starlette types handlers as taking Exception, not a subclass
    for db_error in database_errors():
        app.add_exception_handler(db_error, _database_down)
    app.include_router(router)
    service.monitor_idle(timeout=60)  # its SciPy import holds the interpreter: let it end before timing
    for model_name in service.registry.names():
        service.registry.get(model_name).calibrate_inline(service.config.loop_budget_ms / 1e3)
    return app
