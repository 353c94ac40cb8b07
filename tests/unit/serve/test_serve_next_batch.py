"""NextBatch: concurrent statements coalesced into one round trip, never into one already sent
(so a key read always starts after its request asked, and a revocation before it is seen)."""

from __future__ import annotations

import asyncio

import pytest

from torchshield.serve.db_async import NextBatch


class _Recorder:
    """A ``run`` that records its batches and answers after a few turns of the loop."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.fail_on = fail_on

    async def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        for _ in range(3):
            await asyncio.sleep(0)
        if self.fail_on in items:
            raise RuntimeError("lost connection")
        return [i.upper() for i in items]


def test_items_that_arrive_while_a_batch_is_in_flight_wait_for_the_next():
    run = _Recorder()

    async def scenario() -> list[str]:
        batch = NextBatch(run)
        first = [batch.submit(x) for x in ("a", "b")]
        await asyncio.sleep(0)  # the first batch is now in flight
        later = [batch.submit(x) for x in ("c", "d", "e")]
        return [await f for f in first + later]

    assert asyncio.run(scenario()) == ["A", "B", "C", "D", "E"]
    assert run.batches == [["a", "b"], ["c", "d", "e"]]


def test_a_failed_batch_fails_its_own_waiters_only_and_max_batch_splits():
    run = _Recorder(fail_on="x")

    async def scenario() -> tuple[list, list[str]]:
        batch = NextBatch(run, max_batch=2)
        doomed = [batch.submit(i) for i in ("w", "x")]
        fine = [batch.submit(i) for i in ("y", "z")]
        errors = []
        for f in doomed:
            with pytest.raises(RuntimeError, match="lost connection"):
                await f
            errors.append("raised")
        return errors, [await f for f in fine]

    errors, answers = asyncio.run(scenario())
    assert errors == ["raised", "raised"] and answers == ["Y", "Z"]
    assert run.batches == [["w", "x"], ["y", "z"]]


def test_a_cancelled_waiter_is_skipped_and_a_new_event_loop_starts_clean():
    run = _Recorder()
    batch = NextBatch(run)

    async def cancelled() -> str:
        gone = batch.submit("gone")
        kept = batch.submit("kept")
        gone.cancel()
        return await kept

    assert asyncio.run(cancelled()) == "KEPT"

    async def abandoned() -> None:
        batch.submit("left")  # its loop ends before the batch runs: nobody waits for it

    asyncio.run(abandoned())

    async def again() -> str:
        return await batch.submit("next")

    assert asyncio.run(again()) == "NEXT"
    assert run.batches[-1] == ["next"]
