"""The HTTP front of the serving core (the only module that imports FastAPI).

Cross-cutting concerns sit in one pure-ASGI middleware, :class:`GuardMiddleware`, around every
route: it bounds the request body (413), times the request, and writes exactly one audit record
per request, committed before the first byte of the response leaves (a failed audit write
turns the response into a 503, fail closed). Authentication, Casbin authorization and rate
limiting run per route through :meth:`Service.check`, because the decision depends on the
route's object, action and model. Error bodies are ``{"error": {"code", "message"}}`` and never
contain a token, an input or a database detail.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from torchshield.errors import AccessDenied, CheckFailed, InputError, PolicyError, ShieldError, WrongKeyError
from torchshield.serve.access.keys import ApiKey, valid_model_name
from torchshield.serve.db import redact_url
from torchshield.serve.http.schemas import MAX_SEQ, CreateKeyBody, first_problem, valid_since
from torchshield.serve.rbac import GLOBAL
from torchshield.serve.service import Decision, Service

__all__ = ["ApiError", "GuardMiddleware", "create_app"]

log = logging.getLogger("torchshield.serve")

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
          413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_input", 429: "rate_limited",
          500: "internal_error", 503: "unavailable"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        self.status, self.message, self.headers = status, message, headers or {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    hdrs = dict(headers or {})
    if status == 401:
        hdrs.setdefault("WWW-Authenticate", 'Bearer realm="torchshield"')
    return JSONResponse({"error": {"code": _CODES.get(status, "error"), "message": message}}, status, hdrs)


def status_for(exc: ShieldError) -> int:
    """The HTTP status of an error of the tree (see :mod:`torchshield.errors`): the same classes
    the CLI maps to exit codes. Policy refusals are 403, bad input 422; a failed check or anything
    else torchshield raised on purpose inside a request is the service's fault, 500."""
    if isinstance(exc, (AccessDenied, PolicyError)):
        return 403
    if isinstance(exc, (InputError, WrongKeyError)):
        return 422
    if isinstance(exc, CheckFailed):
        return 500
    return 500


def _bearer(request: Request) -> str | None:
    h = request.headers.get("authorization", "")
    scheme, _, token = h.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token else None


def _audit_ctx(request: Request) -> dict[str, Any]:
    return request.scope.setdefault("state", {}).setdefault("audit", {})


class GuardMiddleware:
    """Body limit, timing, metrics and one committed audit record per request (pure ASGI)."""

    def __init__(self, app: Any, *, service: Service) -> None:
        self.app, self.service, self.metrics = app, service, service.metrics
        self.limit = service.config.body_limit
        self.audit_on = service.config.security
        self.commit_on_loop = service.db.is_sqlite  # see AuditWriter.write_async

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        ctx: dict[str, Any] = {"action": "unknown", "decision": "deny", "reason": ""}
        scope.setdefault("state", {})["audit"] = ctx
        too_big = False
        try:
            declared = int(dict(scope["headers"]).get(b"content-length", b"0") or 0)
        except ValueError:
            declared = 0
        body = b""
        if declared > self.limit:
            too_big = True
        else:
            chunks, total, more = [], 0, True
            while more:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                chunk = msg.get("body", b"")
                total += len(chunk)
                if total > self.limit:
                    too_big = True
                    break
                chunks.append(chunk)
                more = msg.get("more_body", False)
            body = b"".join(chunks)
        scope["state"]["body"] = body
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body, only the real disconnect can come

        state: dict[str, Any] = {"held": None, "started": False}
        ctx["commit"] = lambda status: self._commit_early(scope, ctx, status, t0)

        async def guarded_send(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                state["started"] = True
                status = msg["status"]
                ok = await self._commit(scope, ctx, status, t0)
                if not ok:
                    state["held"] = "dropped"
                    resp = _error(503, "the audit log could not be written; request not answered")
                    await resp(scope, _nothing, send)
                    return
            elif state["held"] == "dropped":
                return
            await send(msg)

        if too_big:
            ctx.update(action="body_limit", reason=f"body over {self.limit} bytes")
            await _error(413, f"request body is larger than the limit of {self.limit} bytes")(
                scope, _nothing, guarded_send)
            return
        try:
            await self.app(scope, replay, guarded_send)
        except Exception as exc:  # noqa: BLE001 - anything unexpected: a JSON 500 that has its record
            log.error("unhandled %s on %s %s", type(exc).__name__, scope.get("method"), ctx.get("route") or
                      "unmatched", exc_info=True)
            if state["started"]:
                return  # the response (and its record) went out already; nothing more to say
            ctx["reason"] = f"internal error ({type(exc).__name__})"
            await _error(500, "internal error; the request was recorded, retry or report it")(
                scope, _nothing, guarded_send)

    def _record(self, scope: dict, ctx: dict, status: int, elapsed: float) -> dict[str, Any]:
        body = scope["state"].get("body", b"")
        record = {"action": ctx["action"], "key_id": ctx.get("key_id"), "model": ctx.get("model"),
                  "decision": "allow" if status < 400 else "deny", "reason": ctx.get("reason", "")[:200],
                  "status": status, "method": scope.get("method", ""), "route": ctx.get("route") or "unmatched",
                  "latency_us": int(elapsed * 1e6),
                  "body_digest": self.service.audit.digest(body) if body else None}
        if ctx.get("detail"):
            record["detail"] = ctx["detail"]
        return record

    def _commit_early(self, scope: dict, ctx: dict, status: int, t0: float) -> None:
        """Commit the request's record from the route's worker thread, with the status the route
        is about to answer (blocking). Saves the hand-off to another thread at response start;
        the response still leaves only after the commit. Raises ApiError(503) if it fails."""
        if not self.audit_on:
            return
        try:
            self.service.audit_writer.write(self._record(scope, ctx, status, time.perf_counter() - t0))
        except Exception:  # noqa: BLE001 - fail closed, without leaking database details
            raise ApiError(503, "the audit log could not be written; request not answered") from None
        ctx["committed"] = status

    async def _commit(self, scope: dict, ctx: dict, status: int, t0: float) -> bool:
        elapsed = time.perf_counter() - t0
        self.metrics.observe_request(ctx.get("route") or "unmatched", status, elapsed)
        if not self.audit_on or ctx.get("skip_audit") or ctx.get("committed") == status:
            return True
        if "committed" in ctx:  # committed early with another status: a bug, but the log tells the truth
            ctx["detail"] = {**ctx.get("detail", {}), "amends_status": ctx["committed"]}
            ctx["action"] += ".amend"
        try:
            await self.service.audit_writer.write_async(self._record(scope, ctx, status, elapsed),
                                                        on_loop=self.commit_on_loop)
        except Exception:  # noqa: BLE001 - fail closed, without leaking database details
            return False
        return True


def _database_errors() -> tuple[type[Exception], ...]:
    """The drivers' error classes (and SQLAlchemy's) that mean the database failed a request."""
    import sqlite3

    import sqlalchemy.exc

    errors: list[type[Exception]] = [sqlite3.Error, sqlalchemy.exc.SQLAlchemyError]
    try:
        import psycopg

        errors.append(psycopg.Error)  # psycopg_pool's PoolTimeout is one too
    except ImportError:  # pragma: no cover - the serve extra installs it
        pass
    return tuple(errors)


async def _nothing() -> dict:
    return {"type": "http.disconnect"}


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


def create_app(service: Service) -> FastAPI:
    """The FastAPI application for ``service`` (OpenAPI docs at /docs and /openapi.json)."""
    secure = service.config.security
    app = FastAPI(title="torchshield inference service", version="1", lifespan=_lifespan,
                  description="Authenticated, rate-limited, audited model inference. "
                              "Send `Authorization: Bearer <key>`; keys come from `torchshield access`.")
    app.state.service = service
    app.add_middleware(GuardMiddleware, service=service)
    # The checks read in-memory state (and a SQLite row when a key's cached one is stale): they
    # run on the event loop. On PostgreSQL they run on the loop too, the key read as a coroutine
    # (checks_async). Rate limits kept in the database go through a worker thread.
    checks_on_loop = not secure or (service.db.is_sqlite and service.config.rate_store == "memory")
    checks_async = (secure and not checks_on_loop and service.db.async_hot is not None
                    and service.config.rate_store == "memory")
    anonymous = (ApiKey(key_id="anonymous", name="", role="", models=(), created_at=0.0)
                 if not secure and service.config.monitor_when_off else None)
    service.monitor_idle(timeout=60)  # its SciPy import holds the interpreter: let it end before timing
    for model_name in service.registry.names():
        service.registry.get(model_name).calibrate_inline(service.config.loop_budget_ms / 1e3)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        _audit_ctx(request)["reason"] = exc.message
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = "no such endpoint" if exc.status_code == 404 else str(exc.detail)[:200]
        return _error(exc.status_code, msg)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = first_problem(list(exc.errors()))
        _audit_ctx(request)["reason"] = message
        return _error(422, message)

    @app.exception_handler(ShieldError)
    async def _shield_error(request: Request, exc: ShieldError) -> JSONResponse:
        # The error tree decides the status; the message is the error's own (never a secret).
        status = status_for(exc)
        message = exc.message if status < 500 else "internal error; the request was recorded"
        _audit_ctx(request)["reason"] = exc.message[:200]
        return _error(status, message)

    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        # The database went away mid-run (a restart, a network cut): a JSON 503 the caller can
        # retry, not a bare 500. Its record fails too, so the middleware's fail-closed 503 may
        # answer instead. The log gets the error's class and first line, never the URL's secrets.
        log.warning("database unavailable: %s: %s", type(exc).__name__,
                    redact_url(str(exc).splitlines()[0][:200]) if str(exc) else "")
        _audit_ctx(request)["reason"] = "database unavailable"
        return _error(503, "the service database is unavailable; retry shortly", {"Retry-After": "1"})

    for db_error in _database_errors():
        app.add_exception_handler(db_error, _database_down)

    def note(request: Request, action: str, route: str, model: str | None) -> None:
        ctx = _audit_ctx(request)
        ctx.update(action=action, route=route)
        if model is not None:
            ctx["model"] = model if valid_model_name(model) else "<invalid name>"

    def conclude(request: Request, d: Decision) -> Decision:
        _audit_ctx(request).update(key_id=d.key.key_id if d.key else None, reason=d.reason)
        if d.status == 403:
            raise AccessDenied(d.reason)
        if not d.allowed:
            headers = {"Retry-After": str(d.retry_after)} if d.status == 429 else None
            raise ApiError(d.status, d.reason, headers=headers)
        return d

    def decide(request: Request, action: str, route: str, obj: str, act: str,
               model: str | None = None, exists: bool = True) -> Decision:
        """Authenticate, authorize and rate-limit (blocking unless checks_on_loop)."""
        note(request, action, route, model)
        if not secure:
            return Decision(200, "security off")
        return conclude(request, service.check(_bearer(request), model or GLOBAL, obj, act, model_exists=exists))

    async def decide_async(request: Request, action: str, route: str, obj: str, act: str,
                           model: str | None = None, exists: bool = True) -> Decision:
        """:func:`decide` with the key read as a coroutine (PostgreSQL)."""
        note(request, action, route, model)
        return conclude(request, await service.check_async(_bearer(request), model or GLOBAL, obj, act,
                                                           model_exists=exists))

    async def guard(request: Request, action: str, route: str, obj: str, act: str,
                    model: str | None = None, exists: bool = True) -> Decision:
        if checks_on_loop:
            return decide(request, action, route, obj, act, model, exists)
        if checks_async:
            return await decide_async(request, action, route, obj, act, model, exists)
        return await run_in_threadpool(decide, request, action, route, obj, act, model, exists)

    def json_body(request: Request) -> Any:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(415, "send the body as application/json")
        try:
            return json.loads(request.scope["state"]["body"])
        except (ValueError, RecursionError):
            raise ApiError(422, "body is not valid JSON (or nested too deeply)") from None

    def parse_body(request: Request, schema: type[BaseModel]) -> Any:
        """The JSON body validated against ``schema``; 422 naming the first bad field."""
        raw = json_body(request)
        try:
            return schema.model_validate(raw)
        except ValidationError as exc:
            raise ApiError(422, first_problem(exc)) from None

    async def guard_keys(request: Request, action: str, route: str) -> Decision:
        """Key management needs keys:manage in at least one domain; per-model checks follow."""
        return await authenticated(request, action, route, need_manage=True)

    async def authenticated(request: Request, action: str, route: str, *, need_manage: bool = False) -> Decision:
        """Any valid key (the route filters what it shows), optionally one that manages some keys."""
        ctx = _audit_ctx(request)
        ctx.update(action=action, route=route)
        if not secure:
            return Decision(200, "security off")
        key = await run_in_threadpool(service.authenticate, _bearer(request))
        if key is None:
            raise ApiError(401, "missing, unknown, expired or revoked API key")
        ctx["key_id"] = key.key_id
        if need_manage:
            service.require_manager(key)
        rate = await run_in_threadpool(service.rate_limit, key)
        if not rate.allowed:
            raise ApiError(429, "rate limit exceeded", headers={"Retry-After": str(rate.retry_after)})
        ctx["reason"] = "allowed"
        return Decision(200, "allowed", key)

    @app.get("/healthz", tags=["service"])
    async def healthz(request: Request) -> dict:
        """Liveness; no authentication, no audit record."""
        _audit_ctx(request).update(skip_audit=True, route="/healthz")
        return {"status": "ok", "models": len(service.registry.names())}

    @app.get("/metrics", tags=["service"], response_class=Response)
    async def metrics_route(request: Request) -> Response:
        """Prometheus text exposition (role monitor or admin)."""
        await guard(request, "metrics.read", "/metrics", "metrics", "read")
        head = (await run_in_threadpool(service.audit.head))[0] if secure else None
        data, ctype = await run_in_threadpool(service.metrics.render, head)
        return Response(data, media_type=ctype)

    @app.get("/v1/models", tags=["models"])
    async def list_models(request: Request) -> dict:
        """Models the caller may use (others are not listed)."""
        d = await authenticated(request, "models.list", "/v1/models")
        names = service.registry.names()
        if secure and d.key is not None:
            names = [n for n in names if service.authz.allowed(d.key.key_id, n, "model", "read")]
        return {"models": [service.registry.get(n).describe() for n in names]}

    @app.get("/v1/models/{name}", tags=["models"])
    async def describe_model(name: str, request: Request) -> dict:
        """Input spec (shape, dtype, bounds) and output policy of one model."""
        m = service.registry.get(name)
        await guard(request, "model.read", "/v1/models/{name}", "model", "read", name, m is not None)
        if m is None:
            raise ApiError(404, "no such model")
        return m.describe()

    @app.post("/v1/models/{name}/predict", tags=["models"])
    async def predict(name: str, request: Request) -> JSONResponse:
        """`{"inputs": [[...], ...]}` -> `{"outputs": ..., "predictions": [...]}`."""
        m = service.registry.get(name)
        route = "/v1/models/{name}/predict"

        def found(d: Decision) -> Decision:
            # In the order of the status codes: 401/403/404/429 first, then 415/422 in inputs().
            if m is None:
                raise ApiError(404, "no such model")
            return d

        def checked() -> Decision:
            return found(decide(request, "predict", route, "model", "predict", name, m is not None))

        def inputs() -> Any:
            return m.validate(json_body(request))  # InvalidInput, an InputError: 422 via the error tree

        def answer(d: Decision, x: Any, result: dict[str, Any]) -> JSONResponse:
            if secure and d.key is not None:
                service.observe_later(d.key, x.numpy(), result["labels"])
            elif anonymous is not None:
                service.observe_later(anonymous, x.numpy(), result["labels"])
            _audit_ctx(request)["detail"] = {"inputs": len(x)}
            return JSONResponse({"model": m.name, "outputs": result["outputs"], "predictions": result["predictions"]})

        if checks_on_loop or checks_async:
            # The checks on the event loop; the middleware commits the audit record there too
            # (SQLite: with the loop turn's others; PostgreSQL: in the loop's next commit).
            d = checked() if checks_on_loop else found(
                await decide_async(request, "predict", route, "model", "predict", name, m is not None))
            if len(request.scope["state"]["body"]) <= m.loop_bytes:
                # A small model and a small body: all on the loop (see calibrate_inline).
                x = inputs()
                result = m.predict(x, wait=False)
                if result is None:  # a worker thread is running a large batch of this model
                    result = await run_in_threadpool(m.predict, x)
            else:  # parsing, validation and the model on a worker thread
                def work() -> tuple[Any, dict[str, Any]]:
                    x = inputs()
                    return x, m.predict(x)

                x, result = await run_in_threadpool(work)
            response = answer(d, x, result)
        else:
            def on_worker() -> JSONResponse:
                # Rate limits in the database: one worker-thread hop for the whole request, its
                # audit commit included.
                d = checked()
                x = inputs()
                response = answer(d, x, m.predict(x))
                _audit_ctx(request)["commit"](200)
                return response

            response = await run_in_threadpool(on_worker)
        service.metrics.predicted(name, _audit_ctx(request)["detail"]["inputs"])
        return response

    # ---- keys (admin; owners for their models) ----
    @app.post("/v1/keys", tags=["keys"], status_code=201)
    async def create_key(request: Request) -> JSONResponse:
        """Create a key: `{"role", "models": [...], "name", "expires": "30d", "rate_per_s", "burst"}`.
        The token is in this response only."""
        d = await guard_keys(request, "keys.create", "/v1/keys")
        body = parse_body(request, CreateKeyBody)
        if secure and d.key is not None:
            service.authorize_new_key(d.key, body.role, body.models)
        new = await run_in_threadpool(lambda: service.keys.create(
            role=body.role, models=body.models, name=body.name, expires_in=body.expires_in,
            created_by=d.key.key_id if d.key else "", rate_per_s=body.rate_per_s, burst=body.burst))
        role = body.role
        _audit_ctx(request)["detail"] = {"created": new.key.key_id, "role": role}
        return JSONResponse({"key": new.key.to_dict(), "token": new.token}, 201)

    @app.get("/v1/keys", tags=["keys"])
    async def list_keys(request: Request) -> dict:
        """Keys the caller may manage (never their tokens)."""
        d = await guard_keys(request, "keys.list", "/v1/keys")
        keys = await run_in_threadpool(service.keys.list)
        if secure and d.key is not None:
            keys = service.manageable(d.key, keys)
        return {"keys": [k.to_dict() for k in keys]}

    @app.delete("/v1/keys/{key_id}", tags=["keys"])
    async def revoke_key(key_id: str, request: Request) -> dict:
        """Revoke a key; effective for the next request in every worker."""
        d = await guard_keys(request, "keys.revoke", "/v1/keys/{key_id}")
        target = await run_in_threadpool(service.keys.get, key_id)
        if secure and d.key is not None:
            # An unknown id answers 404 only to a manager of every key, so that others learn nothing.
            everything = service.may_manage(d.key, "admin", [GLOBAL])
            if (target is None and not everything) or (target is not None and not service.may_manage(
                    d.key, target.role, target.models)):
                raise AccessDenied("you may not revoke this key")
        if target is None:
            raise ApiError(404, "no such key")
        await run_in_threadpool(service.keys.revoke, key_id)
        _audit_ctx(request)["detail"] = {"revoked": key_id}
        return {"revoked": key_id}

    # ---- audit (auditor, admin) ----
    @app.get("/v1/audit", tags=["audit"])
    async def audit_records(request: Request, after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
                            limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                            since: Annotated[str | None, Query(max_length=40)] = None) -> dict:
        """Audit records after `after_seq` (or from ISO time `since`), oldest first, at most `limit` (<= 1000)."""
        await guard(request, "audit.read", "/v1/audit", "audit", "read")
        try:
            valid_since(since)
        except ValueError:
            raise ApiError(422, "since: not an ISO date or time, e.g. 2026-11-01T12:00:00+00:00") from None
        recs = await run_in_threadpool(service.audit.records, since=since, after_seq=after_seq, limit=limit)
        return {"records": recs}

    @app.get("/v1/audit/verify", tags=["audit"])
    async def audit_verify(request: Request) -> dict:
        """Walk the hash chain; names the first bad record."""
        await guard(request, "audit.verify", "/v1/audit/verify", "audit", "read")
        return (await run_in_threadpool(service.audit.verify)).to_dict()

    return app
