"""What one request tells its audit record, typed: the middleware creates it, the routes and the
request path fill it in, and the middleware turns it into the record it commits."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["AuditContext"]


@dataclass(slots=True)
class AuditContext:
    """The audit facts of one request (never a token or an input: key ids and a body digest)."""

    method: str = ""
    body: bytes = b""
    started: float = field(default_factory=time.perf_counter)
    action: str = "unknown"
    route: str | None = None
    model: str | None = None
    key_id: str | None = None
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    skip_audit: bool = False  # /healthz: no record
    committed: int | None = None  # the status an early commit recorded (see RequestPath.commit_now)
    # PostgreSQL: the request was decided on a cached key row read under this key revision; its
    # commit is guarded by it, and ``recheck`` decides again from a fresh row if it moved
    key_revision: int | None = None
    recheck: Callable[[], Awaitable[Any]] | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def record(self, status: int, digest: Any) -> dict[str, Any]:
        """The audit record of this request answered with ``status`` (``digest``: the keyed body digest)."""
        rec = {"action": self.action, "key_id": self.key_id, "model": self.model,
               "decision": "allow" if status < 400 else "deny", "reason": self.reason[:200], "status": status,
               "method": self.method, "route": self.route or "unmatched", "latency_us": int(self.elapsed() * 1e6),
               "body_digest": digest(self.body) if self.body else None}
        if self.detail:
            rec["detail"] = self.detail
        return rec

    def amend(self) -> None:
        """The answer's status differs from the one committed early (a bug): the next record says so."""
        self.detail = {**self.detail, "amends_status": self.committed}
        self.action += ".amend"
