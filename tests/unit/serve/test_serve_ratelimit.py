"""Token buckets: burst then refill, Retry-After in whole seconds, and the database store shared
between two limiter instances (two workers)."""

from __future__ import annotations

from torchshield.serve.ratelimit import DbRateLimiter, Limit, MemoryRateLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_memory_bucket_bursts_refills_and_says_when():
    clock = Clock()
    lim = MemoryRateLimiter(clock)
    limit = Limit(rate=0.5, burst=3)
    assert [lim.hit("k", limit).allowed for _ in range(4)] == [True, True, True, False]
    assert lim.hit("k", limit).retry_after == 2
    clock.t += 2.0
    assert lim.hit("k", limit).allowed and not lim.hit("k", limit).allowed
    assert lim.hit("other", limit).allowed  # per key


def test_db_bucket_is_shared_between_workers(db):
    clock = Clock()
    a, b = DbRateLimiter(db, clock), DbRateLimiter(db, clock)
    limit = Limit(rate=1.0, burst=4)
    results = [(a if i % 2 else b).hit("k", limit).allowed for i in range(6)]
    assert results == [True, True, True, True, False, False]
    clock.t += 1.0
    assert a.hit("k", limit).allowed and not b.hit("k", limit).allowed
