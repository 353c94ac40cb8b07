"""Token-bucket rate limits per API key.

Each key has a bucket of ``burst`` tokens refilled at ``rate`` tokens a second; a request takes
one token or is refused with the seconds until the next token (``Retry-After``).

Two stores, chosen with ``serve --rate-limit-store``:

* ``memory`` (default): buckets live in the worker process. Fast (no I/O), but with N uvicorn
  workers a key can reach N times its rate, and a restart refills every bucket.
* ``db``: buckets are rows of ``serve_rate_buckets`` updated under the database write lock, so
  all workers and hosts share one bucket per key; it costs one write transaction per request.

Threat model: a key holder flooding the service or extracting the model by volume. The limit
is per key, so it does not stop one party holding many keys; the extraction monitor and key
issuance policy cover that.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["DbRateLimiter", "Limit", "MemoryRateLimiter", "RateDecision"]


@dataclass(frozen=True)
class Limit:
    rate: float  # tokens per second
    burst: int


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    retry_after: int = 0  # whole seconds, as HTTP's Retry-After wants


_ALLOWED = RateDecision(True)  # immutable: one instance serves every allowed request


def _take(tokens: float, updated: float, now: float, limit: Limit) -> tuple[float, RateDecision]:
    tokens = min(float(limit.burst), tokens + (now - updated) * limit.rate)
    if tokens >= 1.0:
        return tokens - 1.0, _ALLOWED
    return tokens, RateDecision(False, max(1, math.ceil((1.0 - tokens) / limit.rate)))


class MemoryRateLimiter:
    """Buckets in this process (see the module docstring for what that means with workers)."""

    shared = False

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def hit(self, key_id: str, limit: Limit) -> RateDecision:
        with self._lock:
            now = self._clock()
            tokens, updated = self._buckets.get(key_id, (float(limit.burst), now))
            tokens, decision = _take(tokens, updated, now, limit)
            self._buckets[key_id] = (tokens, now)
        return decision


class DbRateLimiter:
    """Buckets in the serving database, shared by every worker and host."""

    shared = True

    def __init__(self, db: Any, clock: Any = time.time) -> None:
        self._db = db
        self._clock = clock

    def hit(self, key_id: str, limit: Limit) -> RateDecision:
        import sqlalchemy as sa

        try:
            return self._hit(key_id, limit)
        except sa.exc.IntegrityError:  # another worker created this key's row first: use it
            return self._hit(key_id, limit)

    def _hit(self, key_id: str, limit: Limit) -> RateDecision:
        import sqlalchemy as sa

        t = self._db.t("rate_buckets")
        with self._db.writing() as conn:
            now = self._clock()
            row = conn.execute(sa.select(t.c.tokens, t.c.updated).where(t.c.key_id == key_id)
                               .with_for_update()).first()
            tokens, updated = (float(limit.burst), now) if row is None else (row.tokens, row.updated)
            tokens, decision = _take(tokens, updated, now, limit)
            if row is None:
                conn.execute(sa.insert(t).values(key_id=key_id, tokens=tokens, updated=now))
            else:
                conn.execute(sa.update(t).where(t.c.key_id == key_id).values(tokens=tokens, updated=now))
        return decision
