"""The routes, at module level: each gets the service, the request path chosen at start-up and
the request's typed audit context as FastAPI dependencies (``async`` ones, resolved on the loop)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from torchshield.errors import AccessDenied
from torchshield.serve.access.keys import ApiKey
from torchshield.serve.http.context import AuditContext
from torchshield.serve.http.paths import ApiError, RequestPath, json_body
from torchshield.serve.http.schemas import MAX_SEQ, CreateKeyBody, GenerateBody, first_problem, valid_since
from torchshield.serve.rbac import GLOBAL
from torchshield.serve.service import Decision, Service

__all__ = ["router"]

router = APIRouter()


async def _service(request: Request) -> Service:
    return request.app.state.service


async def _path(request: Request) -> RequestPath:
    return request.app.state.path


async def _ctx(request: Request) -> AuditContext:
    return request.scope["state"]["audit"]


Svc = Annotated[Service, Depends(_service)]
Path = Annotated[RequestPath, Depends(_path)]
Ctx = Annotated[AuditContext, Depends(_ctx)]


def _caller(d: Decision) -> ApiKey:
    """The key of an allowed decision (``authenticated`` and an allowed ``check`` always carry one)."""
    if d.key is None:
        raise ApiError(401, "missing, unknown, expired or revoked API key")
    return d.key


def _parse(request: Request, ctx: AuditContext, schema: type[BaseModel]) -> Any:
    """The JSON body validated against ``schema``; 422 naming the first bad field."""
    try:
        return schema.model_validate(json_body(request, ctx))
    except ValidationError as exc:
        raise ApiError(422, first_problem(exc)) from None


@router.get("/healthz", tags=["service"])
async def healthz(service: Svc, ctx: Ctx) -> dict:
    """Liveness; no authentication, no audit record."""
    ctx.skip_audit, ctx.route = True, "/healthz"
    return {"status": "ok", "models": len(service.registry.names())}


@router.get("/metrics", tags=["service"], response_class=Response)
async def metrics(request: Request, service: Svc, path: Path, ctx: Ctx) -> Response:
    """Prometheus text exposition, the totals of every worker (role monitor or admin)."""
    await path.check(request, ctx, "metrics.read", "/metrics", "metrics", "read")
    head = (await run_in_threadpool(service.audit.head))[0]
    data, ctype = await run_in_threadpool(service.metrics.render, head)
    return Response(data, media_type=ctype)


@router.get("/v1/models", tags=["models"])
async def list_models(request: Request, service: Svc, path: Path, ctx: Ctx) -> dict:
    """Models the caller may use (others are not listed)."""
    d = await path.authenticated(request, ctx, "models.list", "/v1/models")
    names = [n for n in service.registry.names() if service.authz.allowed(_caller(d).key_id, n, "model", "read")]
    return {"models": [service.registry.get(n).describe() for n in names]}


@router.get("/v1/models/{name}", tags=["models"])
async def describe_model(name: str, request: Request, service: Svc, path: Path, ctx: Ctx) -> dict:
    """Input spec (shape, dtype, bounds), output policy and signer of one model."""
    m = service.registry.get(name)
    await path.check(request, ctx, "model.read", "/v1/models/{name}", "model", "read", name, m is not None)
    if m is None:
        raise ApiError(404, "no such model")
    return m.describe()


@router.post("/v1/models/{name}/predict", tags=["models"])
async def predict(name: str, request: Request, service: Svc, path: Path, ctx: Ctx) -> JSONResponse:
    """`{"inputs": [[...], ...]}` -> `{"outputs": ..., "predictions": [...]}`."""
    d, x, result = await path.predict(request, ctx, name, service.registry.get(name))
    if d.key is not None:
        service.observe_later(d.key, x.numpy(), result["labels"])
    service.metrics.predicted(name, len(x))
    return JSONResponse({"model": name, "outputs": result["outputs"], "predictions": result["predictions"]})


@router.post("/v1/models/{name}/generate", tags=["models"])
async def generate(name: str, request: Request, service: Svc, path: Path, ctx: Ctx) -> JSONResponse:
    """Causal LMs: `{"text": "...", "max_new_tokens": 32}` -> `{"text": continuation, "tokens", "stopped"}`
    (greedy; bounded by the model's max_new_tokens, wall time and positions)."""
    m = service.registry.get(name)
    d = await path.check(request, ctx, "generate", "/v1/models/{name}/generate", "model", "predict", name,
                         m is not None)
    if m is None:
        raise ApiError(404, "no such model")
    if not m.causal:
        raise ApiError(404, f"model {name} does not generate (not a causal language model); use /predict")
    body = _parse(request, ctx, GenerateBody)

    def work() -> dict[str, Any]:
        if service.gateway_for(name) is None:
            return m.generate(body.text, max_new_tokens=body.max_new_tokens)
        with service.gateway_request(ctx, _caller(d), name) as req:
            out = m.generate(req.deidentify(body.text), max_new_tokens=body.max_new_tokens)
            out["text"] = req.finish(out["text"])
            return out

    out = await run_in_threadpool(work)
    ctx.detail = {**ctx.detail, "tokens": out["tokens"], "stopped": out["stopped"]}
    service.metrics.predicted(name, 1)
    return JSONResponse({"model": name, **out})


# ---- keys: whoever the policy table lets manage keys (serve/policy.py) ------------------------
@router.post("/v1/keys", tags=["keys"], status_code=201)
async def create_key(request: Request, service: Svc, path: Path, ctx: Ctx) -> JSONResponse:
    """Create a key: `{"role", "models": [...], "name", "expires": "30d", "rate_per_s", "burst"}`.
    The token is in this response only."""
    d = await path.authenticated(request, ctx, "keys.create", "/v1/keys", need_manage=True)
    body = _parse(request, ctx, CreateKeyBody)
    service.authorize_new_key(_caller(d), body.role, body.models)
    new = await run_in_threadpool(lambda: service.keys.create(
        role=body.role, models=body.models, name=body.name, expires_in=body.expires_in, created_by=_caller(d).key_id,
        rate_per_s=body.rate_per_s, burst=body.burst))
    ctx.detail = {"created": new.key.key_id, "role": body.role}
    return JSONResponse({"key": new.key.to_dict(), "token": new.token}, 201)


@router.get("/v1/keys", tags=["keys"])
async def list_keys(request: Request, service: Svc, path: Path, ctx: Ctx) -> dict:
    """Keys the caller may manage (never their tokens)."""
    d = await path.authenticated(request, ctx, "keys.list", "/v1/keys", need_manage=True)
    keys = service.manageable(_caller(d), await run_in_threadpool(service.keys.list))
    return {"keys": [k.to_dict() for k in keys]}


@router.delete("/v1/keys/{key_id}", tags=["keys"])
async def revoke_key(key_id: str, request: Request, service: Svc, path: Path, ctx: Ctx) -> dict:
    """Revoke a key; effective for the next request in every worker."""
    d = await path.authenticated(request, ctx, "keys.revoke", "/v1/keys/{key_id}", need_manage=True)
    target = await run_in_threadpool(service.keys.get, key_id)
    # An unknown id answers 404 only to a manager of every key, so that others learn nothing.
    if target is None and not service.may_manage(_caller(d), "admin", [GLOBAL]):
        raise AccessDenied("you may not revoke this key")
    if target is not None and not service.may_manage(_caller(d), target.role, target.models):
        raise AccessDenied("you may not revoke this key")
    if target is None:
        raise ApiError(404, "no such key")
    await run_in_threadpool(service.keys.revoke, key_id)
    ctx.detail = {"revoked": key_id}
    return {"revoked": key_id}


# ---- audit (auditor, admin) ---------------------------------------------------------------------
@router.get("/v1/audit", tags=["audit"])
async def audit_records(request: Request, service: Svc, path: Path, ctx: Ctx,
                        after_seq: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                        since: Annotated[str | None, Query(max_length=40)] = None) -> dict:
    """Audit records after `after_seq` (or from ISO time `since`), oldest first, at most `limit` (<= 1000)."""
    await path.check(request, ctx, "audit.read", "/v1/audit", "audit", "read")
    try:
        valid_since(since)
    except ValueError:
        raise ApiError(422, "since: not an ISO date or time, e.g. 2026-11-01T12:00:00+00:00") from None
    recs = await run_in_threadpool(service.audit.records, since=since, after_seq=after_seq, limit=limit)
    return {"records": recs}


@router.get("/v1/audit/verify", tags=["audit"])
async def audit_verify(request: Request, service: Svc, path: Path, ctx: Ctx) -> dict:
    """Walk the hash chain; names the first bad record, or what is wrong with the head."""
    await path.check(request, ctx, "audit.verify", "/v1/audit/verify", "audit", "read")
    return (await run_in_threadpool(service.audit.verify)).to_dict()
