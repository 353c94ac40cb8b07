"""The references bench_serve.py measures the secure service against, kept out of the product:
the same app (same middleware, routes, model placement) with a request path that checks nothing
and audits nothing. ``monitored=True`` is the issue's reference, "the same app with auth, RBAC
and audit off" (the extraction monitor still runs, every caller as one anonymous key);
``monitored=False`` turns the monitor off too."""

from __future__ import annotations

from typing import Any

from torchshield.serve.access.keys import ApiKey
from torchshield.serve.http.context import AuditContext
from torchshield.serve.http.paths import LoopPath, note
from torchshield.serve.service import Decision

__all__ = ["ANONYMOUS", "OpenPath"]

ANONYMOUS = ApiKey(key_id="anonymous", name="", role="", models=(), created_at=0.0)


class OpenPath(LoopPath):
    """Everything on the loop like :class:`LoopPath`, minus authentication, authorization, rate
    limits and the audit record."""

    def __init__(self, service: Any, *, monitored: bool) -> None:
        super().__init__(service)
        self._decision = Decision(200, "security off", ANONYMOUS if monitored else None)

    async def check(self, request: Any, ctx: AuditContext, action: str, route: str, obj: str, act: str,
                    model: str | None = None, exists: bool = True) -> Decision:
        note(ctx, action, route, model)
        return self._decision

    async def authenticated(self, request: Any, ctx: AuditContext, action: str, route: str, *,
                            need_manage: bool = False) -> Decision:
        ctx.action, ctx.route = action, route
        return self._decision

    async def commit(self, ctx: AuditContext, status: int) -> None:
        return None  # audit off
