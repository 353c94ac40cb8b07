"""The request path: where a request's checks, its model run and its audit commit happen.

One small contract (in the spirit of httpx's ``BaseTransport``), one implementation per backend,
chosen once at start-up by :func:`choose_path` instead of re-derived per request from flags:

- :class:`LoopPath` (SQLite, rate limits in memory): everything on the event loop. The checks
  read in-memory state (a SQLite row when a key's cached one is stale); a small model on a small
  body runs inline (see ``ServedModel.calibrate_inline``), larger work on a worker thread; the
  records of one loop turn are committed together on the loop.
- :class:`AsyncDbPath` (PostgreSQL with its asyncio pool, rate limits in memory): the key read
  and the audit append are coroutines coalesced across requests (``NextBatch``); the model as
  above.
- :class:`ThreadPath` (rate limits in the database, or PostgreSQL without the asyncio pool): one
  worker-thread hop per request, its checks, model and audit commit included.

Every path commits the request's record before the response starts (the middleware calls
:meth:`RequestPath.commit`), and a failed commit withholds the answer (503, fail closed).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from torchshield.errors import AccessDenied
from torchshield.serve.access.keys import valid_model_name
from torchshield.serve.audit import KeysChanged
from torchshield.serve.http.context import AuditContext
from torchshield.serve.rbac import GLOBAL
from torchshield.serve.service import Decision, Service

__all__ = ["ApiError", "AsyncDbPath", "LoopPath", "RequestPath", "ThreadPath", "bearer", "choose_path",
           "json_body"]

AUDIT_DOWN = "the audit log could not be written; request not answered"


class ApiError(Exception):
    """An HTTP answer other than 200 decided by the service (status, public message, headers)."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        self.status, self.message, self.headers = status, message, headers or {}


def bearer(request: Request) -> str | None:
    h = request.headers.get("authorization", "")
    scheme, _, token = h.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token else None


def json_body(request: Request, ctx: AuditContext) -> Any:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise ApiError(415, "send the body as application/json")
    try:
        return json.loads(ctx.body)
    except (ValueError, RecursionError):
        raise ApiError(422, "body is not valid JSON (or nested too deeply)") from None


class RequestPath:
    """The contract: :meth:`check` (authenticate, authorize, rate-limit), :meth:`run_model`
    (parse, validate, predict) and :meth:`commit` (the request's audit record). Subclasses place
    them on the loop, on coroutines or on a worker thread."""

    commit_on_loop = False  # SQLite: commit the records of one loop turn on the loop itself

    def __init__(self, service: Service) -> None:
        self.service = service

    # ---- checks ------------------------------------------------------------------------
    def _decide(self, request: Request, ctx: AuditContext, obj: str, act: str, model: str | None,
                exists: bool) -> Decision:
        return self.service.check(bearer(request), model or GLOBAL, obj, act, model_exists=exists)

    async def check(self, request: Request, ctx: AuditContext, action: str, route: str, obj: str, act: str,
                    model: str | None = None, exists: bool = True) -> Decision:
        """Allowed, or raise (401/403/404/429) with the reason in ``ctx``."""
        note(ctx, action, route, model)
        return conclude(ctx, await run_in_threadpool(self._decide, request, ctx, obj, act, model, exists))

    async def authenticated(self, request: Request, ctx: AuditContext, action: str, route: str, *,
                            need_manage: bool = False) -> Decision:
        """Any valid key (the route filters what it shows), optionally one that manages keys."""
        ctx.action, ctx.route = action, route
        key = await run_in_threadpool(self.service.authenticate, bearer(request))
        if key is None:
            raise ApiError(401, "missing, unknown, expired or revoked API key")
        ctx.key_id = key.key_id
        if need_manage:
            self.service.require_manager(key)
        rate = await run_in_threadpool(self.service.rate_limit, key)
        if not rate.allowed:
            raise ApiError(429, "rate limit exceeded", headers={"Retry-After": str(rate.retry_after)})
        ctx.reason = "allowed"
        return Decision(200, "allowed", key)

    # ---- the model ---------------------------------------------------------------------
    async def run_model(self, request: Request, ctx: AuditContext, m: Any, texts: Any = None
                        ) -> tuple[Any, dict[str, Any]]:
        """Parse and validate the inputs and run the model: on the loop when the body is small
        enough for the model's measured budget, else on a worker thread. ``texts``: the privacy
        gateway's de-identification of a text batch (``Service.text_hook``)."""
        if len(ctx.body) <= m.loop_bytes:
            x = m.validate(json_body(request, ctx), texts=texts)  # InvalidInput, an InputError: 422 via the error tree
            result = m.predict(x, wait=False)
            if result is None:  # a worker thread is running a large batch of this model
                result = await run_in_threadpool(m.predict, x)
            return x, result

        def work() -> tuple[Any, dict[str, Any]]:
            x = m.validate(json_body(request, ctx), texts=texts)
            return x, m.predict(x)

        return await run_in_threadpool(work)

    async def predict(self, request: Request, ctx: AuditContext, name: str, m: Any
                      ) -> tuple[Decision, Any, dict[str, Any]]:
        """Check, then run the model; 401/403/404/429 come before 415/422."""
        d = await self.check(request, ctx, "predict", "/v1/models/{name}/predict", "model", "predict", name,
                             m is not None)
        if m is None:
            raise ApiError(404, "no such model")
        x, result = await self.run_model(request, ctx, m, self.service.text_hook(ctx, d.key, name))
        ctx.detail = {**ctx.detail, "inputs": len(x)}
        return d, x, result

    # ---- the audit record ----------------------------------------------------------------
    async def commit(self, ctx: AuditContext, status: int) -> ApiError | None:
        """Commit the request's record as the response starts. None: answer as planned; else the
        answer to send instead (503 if the record could not be written: fail closed)."""
        if ctx.skip_audit or ctx.committed == status:
            return None
        if ctx.committed is not None:  # committed early with another status: the log tells the truth
            ctx.amend()
        return await self._write(ctx, status)

    async def _write(self, ctx: AuditContext, status: int) -> ApiError | None:
        """Write the record of ``ctx`` answered with ``status``; a 503 to send instead if that failed."""
        try:
            await self.service.audit_writer.write_async(ctx.record(status, self.service.audit.digest),
                                                        on_loop=self.commit_on_loop)
        except Exception:  # noqa: BLE001 - fail closed, without leaking database details
            return ApiError(503, AUDIT_DOWN)
        return None

    def commit_now(self, ctx: AuditContext, status: int) -> None:
        """Commit from a worker thread, with the status the route is about to answer (blocking):
        saves a hand-off at response start; the response still leaves only after it. Raises
        ApiError(503) if the commit fails."""
        try:
            self.service.audit_writer.write(ctx.record(status, self.service.audit.digest))
        except Exception:  # noqa: BLE001 - fail closed, without leaking database details
            raise ApiError(503, AUDIT_DOWN) from None
        ctx.committed = status


class LoopPath(RequestPath):
    """SQLite with rate limits in memory: checks, small models and commits on the event loop."""

    commit_on_loop = True

    async def check(self, request: Request, ctx: AuditContext, action: str, route: str, obj: str, act: str,
                    model: str | None = None, exists: bool = True) -> Decision:
        note(ctx, action, route, model)
        return conclude(ctx, self._decide(request, ctx, obj, act, model, exists))


class AsyncDbPath(RequestPath):
    """PostgreSQL with its asyncio pool, rate limits in memory: the key read and the audit append
    are coroutines on the loop, coalesced across concurrent requests.

    A key seen recently is not read again: the check decides on this worker's copy of its row
    (provisionally, ``Decision.provisional``) and the request's audit append, one statement,
    is guarded by the key revision that row was read under. If any key or policy changed since
    (a revocation in any worker), nothing is written; the request is decided again from a fresh
    row, and answered and recorded by that decision (a revoked key gets its 401, not the model's
    answer). So a request costs one round trip, not two, and revocation still holds for every
    request that arrives after it commits."""

    async def check(self, request: Request, ctx: AuditContext, action: str, route: str, obj: str, act: str,
                    model: str | None = None, exists: bool = True) -> Decision:
        note(ctx, action, route, model)
        token, domain = bearer(request), model or GLOBAL
        d = await self.service.check_async(token, domain, obj, act, model_exists=exists)
        if d.provisional is not None:
            ctx.key_revision = d.provisional
            ctx.recheck = lambda: self.service.check_async(token, domain, obj, act, model_exists=exists, fresh=True,
                                                           count=False)
        return conclude(ctx, d)

    async def _write(self, ctx: AuditContext, status: int) -> ApiError | None:
        if ctx.key_revision is None:
            return await super()._write(ctx, status)
        try:
            await self.service.audit_writer.write_async(ctx.record(status, self.service.audit.digest),
                                                        key_revision=ctx.key_revision)
            return None
        except KeysChanged as exc:  # decided on a row that may be stale: decide again, then commit that
            self.service.keys.saw_revision(exc.revision)
        except Exception:  # noqa: BLE001 - fail closed, without leaking database details
            return ApiError(503, AUDIT_DOWN)
        recheck, ctx.key_revision, ctx.recheck = ctx.recheck, None, None
        try:
            d = await recheck() if recheck is not None else Decision(401, "key could not be checked again")
        except Exception:  # noqa: BLE001 - the key read failed: fail closed
            return ApiError(503, AUDIT_DOWN)
        ctx.key_id = d.key.key_id if d.key else None
        if d.allowed:
            return await super()._write(ctx, status)
        ctx.reason = d.reason
        headers = {"Retry-After": str(d.retry_after)} if d.status == 429 else None
        return await super()._write(ctx, d.status) or ApiError(d.status, d.reason, headers=headers)


class ThreadPath(RequestPath):
    """Rate limits in the database (or PostgreSQL without the asyncio pool): a predict's checks,
    model and audit commit in one worker-thread hop."""

    def __init__(self, service: Service) -> None:
        super().__init__(service)
        self.commit_on_loop = service.db.is_sqlite  # what is left to commit at response start

    async def predict(self, request: Request, ctx: AuditContext, name: str, m: Any
                      ) -> tuple[Decision, Any, dict[str, Any]]:
        def on_worker() -> tuple[Decision, Any, dict[str, Any]]:
            note(ctx, "predict", "/v1/models/{name}/predict", name)
            d = conclude(ctx, self._decide(request, ctx, "model", "predict", name, m is not None))
            if m is None:
                raise ApiError(404, "no such model")
            x = m.validate(json_body(request, ctx), texts=self.service.text_hook(ctx, d.key, name))
            result = m.predict(x)
            ctx.detail = {**ctx.detail, "inputs": len(x)}
            self.commit_now(ctx, 200)
            return d, x, result

        return await run_in_threadpool(on_worker)


def note(ctx: AuditContext, action: str, route: str, model: str | None) -> None:
    ctx.action, ctx.route = action, route
    if model is not None:
        ctx.model = model if valid_model_name(model) else "<invalid name>"


def conclude(ctx: AuditContext, d: Decision) -> Decision:
    """Record the decision; raise the refusal through the error tree (403: AccessDenied)."""
    ctx.key_id, ctx.reason = (d.key.key_id if d.key else None), d.reason
    if d.status == 403:
        raise AccessDenied(d.reason)
    if not d.allowed:
        raise ApiError(d.status, d.reason, headers={"Retry-After": str(d.retry_after)} if d.status == 429 else None)
    return d


def choose_path(service: Service) -> RequestPath:
    """The one request path for this service's backend, decided once at start-up."""
    in_memory_rates = service.config.rate_store == "memory"
    if service.db.is_sqlite and in_memory_rates:
        return LoopPath(service)
    if service.db.async_hot is not None and in_memory_rates:
        return AsyncDbPath(service)
    return ThreadPath(service)
