"""The stage waits for its batch's deliveries without a callback per record, and still sees
every failure."""

from __future__ import annotations

import asyncio

import pytest

from streams.stages import Outbox


class CountingLoop(asyncio.SelectorEventLoop):
    """Counts the callbacks scheduled (a future's done callbacks are scheduled with call_soon)."""

    scheduled = 0

    def call_soon(self, *args, **kwargs):
        self.scheduled += 1
        return super().call_soon(*args, **kwargs)


def run(coro_fn):
    loop = CountingLoop()
    try:
        return loop.run_until_complete(coro_fn(loop)), loop
    finally:
        loop.close()


def test_a_batch_of_deliveries_settled_at_once_wakes_the_stage_about_once() -> None:
    async def scenario(loop):
        futures = [loop.create_future() for _ in range(2000)]
        out = Outbox(lambda *a: None)
        out.pending = list(futures)
        waiting = asyncio.ensure_future(out.delivered())
        await asyncio.sleep(0)
        before = loop.scheduled
        for f in futures:  # what aiokafka does when a produce batch is acknowledged
            f.set_result(None)
        await waiting
        return loop.scheduled - before

    scheduled, _loop = run(scenario)
    assert scheduled < 20  # asyncio.gather: one callback per future (2,000)


def test_a_failed_delivery_raises_even_behind_settled_ones() -> None:
    async def scenario(loop):
        futures = [loop.create_future() for _ in range(5)]
        out = Outbox(lambda *a: None)
        out.pending = list(futures)
        for f in futures[:3]:
            f.set_result(None)
        futures[3].set_exception(RuntimeError("broker refused"))
        futures[4].set_result(None)
        with pytest.raises(RuntimeError, match="broker refused"):
            await out.delivered()
        assert out.pending == []  # the batch is not waited for twice
        return True

    assert run(scenario)[0]


def test_delivered_waits_for_a_delivery_still_in_flight() -> None:
    async def scenario(loop):
        late = loop.create_future()
        out = Outbox(lambda *a: None)
        out.pending = [late]
        loop.call_later(0.05, late.set_result, None)
        await out.delivered()
        return late.done()

    assert run(scenario)[0]
