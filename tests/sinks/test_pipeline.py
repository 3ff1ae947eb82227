"""The write pipeline of the sink loop, deterministically: a fake group and publisher, a
writer whose every send waits for the test and then succeeds or fails as told.

- at most one write in flight; the event loop fills the next batch meanwhile;
- a batch the store did not take is not committed, is written again (after the backoff)
  before anything newer, and no newer batch is committed before it;
- a failed DLQ publish commits nothing, seeks back and drops the batch being filled; the DLQ
  gets its records before the commit;
- commits run in the background, one at a time: the loop counts a commit only once the
  coordinator confirmed it, and commits again, awaited, what is unconfirmed before the
  consumer closes;
- a revoke settles the write in flight, flushes and commits what is held.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kafka_io.connection import KafkaConnection
from kafka_io.group import CommitFailed
from sinks.loop import LoopSettings, SinkLoop
from sinks.sink import Backoff, BatchingSink, BatchLimits, Item
from sinks.writers import StoreUnavailable, VictoriaMetricsWriter, WriterSettings

TOPIC = "t"
P0, P1 = (TOPIC, 0), (TOPIC, 1)


class FakeGroup:
    """kafka_io.group.GroupConsumer's API, in memory: commits are recorded, and answered at once
    or, with `hold_commits`, when the test calls answer_commits."""

    def __init__(self) -> None:
        self._assignment = {P0, P1}
        self._paused: set = set()
        self.commits: list[dict[tuple[str, int], int]] = []  # issued, in order
        self.hold_commits = False
        self.held: list[tuple[asyncio.Future, dict]] = []
        self.group_offsets: dict[tuple[str, int], int] = {}
        self.seeks: list[tuple[tuple[str, int], int | str]] = []

    def assignment(self) -> set:
        return set(self._assignment)

    def pause(self, partitions) -> None:  # noqa: ANN001
        self._paused |= set(partitions)

    def resume(self, partitions) -> None:  # noqa: ANN001
        self._paused -= set(partitions)

    def paused(self) -> set:
        return set(self._paused)

    async def commit(self, offsets) -> None:  # noqa: ANN001
        offsets = dict(offsets)
        self.commits.append(offsets)
        if self.hold_commits:
            answer = asyncio.get_running_loop().create_future()
            self.held.append((answer, offsets))
            if not await answer:
                raise CommitFailed("scripted")
        self.group_offsets.update(offsets)

    async def answer_commits(self, ok: bool) -> None:
        held, self.held = self.held, []
        for answer, _ in held:
            answer.set_result(ok)
        for _ in range(5):  # let the committing tasks see their answer
            await asyncio.sleep(0)

    async def committed(self, tp):  # noqa: ANN001, ANN201
        return self.group_offsets.get(tp)

    def seek(self, tp, offset) -> None:  # noqa: ANN001
        self.seeks.append((tp, offset))

    async def seek_to_beginning(self, tp) -> None:  # noqa: ANN001
        self.seeks.append((tp, "beginning"))

    def highwater(self, tp):  # noqa: ANN001, ANN201
        return None


class FakePublisher:
    def __init__(self) -> None:
        self.fail = False
        self.sent: list[bytes] = []

    async def publish(self, topic, messages) -> None:  # noqa: ANN001
        if self.fail:
            raise RuntimeError("broker away")
        self.sent.extend(value for _, value in messages)


class ScriptedWriter(VictoriaMetricsWriter):
    """Each send blocks until the test answers it with `release(ok)`."""

    def __init__(self) -> None:
        super().__init__(WriterSettings(url="http://127.0.0.1:1"))
        self.bodies: list[bytes] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()
        self._answers: list[tuple[threading.Event, list]] = []
        self.started = threading.Semaphore(0)

    def send(self, body: bytes) -> None:
        event, outcome = threading.Event(), []
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self.bodies.append(body)
            self._answers.append((event, outcome))
        self.started.release()
        try:
            assert event.wait(10), "the test never answered this write"
            if not outcome[0]:
                raise StoreUnavailable("store away (scripted)")
        finally:
            with self._lock:
                self.active -= 1

    def release(self, ok: bool) -> None:
        assert self.started.acquire(timeout=10), "no write was started"
        with self._lock:
            event, outcome = next((e, o) for e, o in self._answers if not e.is_set())
        outcome.append(ok)
        event.set()


def make_loop(writer: ScriptedWriter, max_points: int = 3) -> tuple[SinkLoop, FakeGroup, FakePublisher]:
    loop = SinkLoop(KafkaConnection(bootstrap="127.0.0.1:1"), writer,
                    BatchingSink(writer, BatchLimits(max_points=max_points, max_age_s=3600)),
                    LoopSettings(topics=(TOPIC,), group_id="g", dlq_topic="dlq"),
                    backoff=Backoff(base_s=60.0, cap_s=60.0))
    group, publisher = FakeGroup(), FakePublisher()
    loop._group, loop._dlq = group, publisher
    loop._executor = ThreadPoolExecutor(max_workers=1)
    return loop, group, publisher


def in_event_loop(test):  # noqa: ANN001, ANN201
    """Runs an async test (its loop's executor shut down after it)."""
    def run(writer: ScriptedWriter) -> None:
        asyncio.run(test(writer))
    run.__name__ = test.__name__
    return run


async def add(loop: SinkLoop, partition: int, offset: int, *, malformed: bool = False) -> None:
    item = Item(TOPIC, partition, offset, b"k", b"v")
    if malformed:
        item.dlq_reason, item.dlq_error = "malformed", "cannot decode"
    else:
        item.fragment, item.points = b"m{p=\"%d\"} %d 1\n" % (partition, offset), 1
    if loop.sink.add(item):
        await loop._pump()


async def settle(loop: SinkLoop) -> None:
    """Let the write thread finish, then let the loop settle it (what its next pump does)."""
    deadline = time.monotonic() + 10
    while loop._inflight is not None and not loop._inflight.done():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)
    await loop._pump()
    for _ in range(5):  # let a background commit run
        await asyncio.sleep(0)


@pytest.fixture
def writer() -> ScriptedWriter:
    return ScriptedWriter()


@in_event_loop
async def test_a_failed_write_is_not_committed_and_is_retried_before_the_next_batch(writer: ScriptedWriter) -> None:
    loop, group, _ = make_loop(writer)
    try:
        for offset in range(3):  # batch N: p0@0..2, full: its write starts
            await add(loop, 0, offset)
        assert loop._inflight is not None
        await add(loop, 0, 3)  # the loop goes on while N is written
        await add(loop, 1, 0)
        writer.release(False)  # the store does not take N
        await settle(loop)
        assert group.commits == [] and loop.store_down and group.paused() == {P0, P1}
        assert [i.offset for i in loop._retry] == [0, 1, 2]
        await add(loop, 1, 1)  # batch N+1 is full now, but N comes first: nothing is started
        await loop._pump()
        assert loop._inflight is None and len(writer.bodies) == 1 and group.commits == []
        loop._next_attempt = 0.0  # the backoff is over: N is written again
        await loop._pump()
        assert loop._inflight is not None and len(loop.sink) == 3
        writer.release(True)
        await settle(loop)  # N acknowledged and committed; the store is back; N+1 starts
        assert group.commits == [{("t", 0): 3}]
        assert not loop.store_down and group.paused() == set()
        assert loop._inflight is not None
        writer.release(True)
        await settle(loop)
        assert group.commits == [{("t", 0): 3}, {("t", 0): 4, ("t", 1): 2}]
        assert writer.bodies[0] == writer.bodies[1]  # the same batch, re-written
        assert writer.max_active == 1
        assert loop.counters.get("kpp_sink_retries_total") == 1
    finally:
        loop._executor.shutdown(wait=False)


@in_event_loop
async def test_at_most_one_write_in_flight_a_full_batch_waits_for_it(writer: ScriptedWriter) -> None:
    loop, group, _ = make_loop(writer)
    try:
        for offset in range(3):
            await add(loop, 0, offset)  # N in flight

        async def fill() -> None:
            for offset in range(3, 6):
                await add(loop, 0, offset)  # N+1 full: waits until N is settled

        filler = asyncio.ensure_future(fill())
        await asyncio.sleep(0.3)
        assert not filler.done(), "a full batch did not wait for the write in flight"
        assert len(writer.bodies) == 1 and group.commits == []
        writer.release(True)
        await asyncio.wait_for(filler, 10)
        for _ in range(5):
            await asyncio.sleep(0)
        assert group.commits == [{("t", 0): 3}]  # N committed before N+1 was started
        writer.release(True)
        await settle(loop)
        assert group.commits == [{("t", 0): 3}, {("t", 0): 6}]
        assert writer.max_active == 1
    finally:
        loop._executor.shutdown(wait=False)


@in_event_loop
async def test_a_failed_write_of_n_never_lets_n_plus_1_commit(writer: ScriptedWriter) -> None:
    """N fails again and again while N+1 is full: nothing is committed, N+1 is never sent."""
    loop, group, _ = make_loop(writer)
    try:
        for offset in range(3):
            await add(loop, 0, offset)
        await add(loop, 0, 3)
        await add(loop, 0, 4)
        writer.release(False)
        await settle(loop)
        await add(loop, 0, 5)  # N+1 full
        for _ in range(3):
            loop._next_attempt = 0.0
            await loop._pump()
            writer.release(False)
            await settle(loop)
            assert group.commits == [] and loop.store_down
        assert all(body == writer.bodies[0] for body in writer.bodies)  # only N was ever sent
        assert loop.buffered_points == 6  # N waiting for its retry + N+1
    finally:
        loop._executor.shutdown(wait=False)


@in_event_loop
async def test_a_failed_dlq_publish_commits_nothing_and_rereads(writer: ScriptedWriter) -> None:
    loop, group, publisher = make_loop(writer)
    try:
        group.group_offsets[("t", 0)] = 0
        await add(loop, 0, 0)
        await add(loop, 0, 1, malformed=True)  # DLQ-bound
        await add(loop, 0, 2)
        await add(loop, 0, 3)
        await add(loop, 0, 4)  # buffered
        await add(loop, 1, 0)  # no commit for p1 yet: re-read from the beginning
        publisher.fail = True
        writer.release(True)
        await settle(loop)
        assert group.commits == []
        assert sorted(group.seeks, key=str) == [(("t", 0), 0), (("t", 1), "beginning")]
        assert len(loop.sink) == 0 and loop._retry is None and loop.store_down
        loop._next_attempt = 0.0
        await loop._pump()  # the backoff is over: consumption resumes (the records come again)
        assert not loop.store_down and group.paused() == set()
    finally:
        loop._executor.shutdown(wait=False)


@in_event_loop
async def test_the_dlq_gets_its_records_before_the_commit(writer: ScriptedWriter) -> None:
    loop, group, publisher = make_loop(writer)
    seen_at_commit: list[int] = []
    commit = group.commit

    async def commit_after_dlq(offsets) -> None:  # noqa: ANN001
        seen_at_commit.append(len(publisher.sent))
        await commit(offsets)

    group.commit = commit_after_dlq
    try:
        await add(loop, 0, 0)
        await add(loop, 0, 1, malformed=True)
        await add(loop, 0, 2)
        await add(loop, 0, 3)  # full (the dead letter has no point): written
        writer.release(True)
        await settle(loop)
        assert group.commits == [{("t", 0): 4}] and seen_at_commit == [1]
    finally:
        loop._executor.shutdown(wait=False)


@in_event_loop
async def test_commits_are_counted_when_confirmed_and_confirmed_before_closing(writer: ScriptedWriter) -> None:
    loop, group, _ = make_loop(writer)
    group.hold_commits = True
    try:
        for offset in range(3):
            await add(loop, 0, offset)
        writer.release(True)
        await settle(loop)
        assert group.commits == [{("t", 0): 3}]  # issued once the store took the batch...
        assert loop.committed_offsets() == {} and loop._commit_task is not None  # ...not confirmed yet
        await group.answer_commits(True)
        assert loop.committed_offsets() == {("t", 0): 3} and loop._commit_task is None
        for offset in range(3, 6):
            await add(loop, 0, offset)
        writer.release(True)
        await settle(loop)
        await group.answer_commits(False)  # the coordinator refused this one
        assert loop.committed_offsets() == {("t", 0): 3}
        assert loop.counters.get("kpp_sink_commits_total", outcome="failed") == 1
        group.hold_commits = False
        await loop._confirm_commits()  # what run() does before closing the consumer
        assert group.commits[-1] == {("t", 0): 6} and group.group_offsets == {("t", 0): 6}
        assert loop.committed_offsets() == {("t", 0): 6}
        issued = len(group.commits)
        await loop._confirm_commits()  # nothing left unconfirmed: no second commit
        assert len(group.commits) == issued
    finally:
        loop._executor.shutdown(wait=False)


@in_event_loop
async def test_a_reread_starts_after_a_commit_still_in_flight(writer: ScriptedWriter) -> None:
    """A failed DLQ publish re-reads from the last acknowledged offset even if its commit has
    not reached the group yet: commits never go backwards."""
    loop, group, publisher = make_loop(writer)
    group.hold_commits = True
    try:
        group.group_offsets[("t", 0)] = 0
        for offset in range(3):
            await add(loop, 0, offset)
        writer.release(True)
        await settle(loop)  # committed in the background, not confirmed: the group still says 0
        assert group.commits == [{("t", 0): 3}] and group.group_offsets == {("t", 0): 0}
        await add(loop, 0, 3)
        await add(loop, 0, 4, malformed=True)  # DLQ-bound
        await add(loop, 0, 5)
        await add(loop, 0, 6)  # full: written
        publisher.fail = True
        writer.release(True)
        await settle(loop)
        assert group.seeks == [(("t", 0), 3)] and group.commits == [{("t", 0): 3}]
        await group.answer_commits(True)
    finally:
        loop._executor.shutdown(wait=False)


@in_event_loop
async def test_one_commit_in_flight_the_next_ones_coalesce_and_a_failed_one_is_sent_again(
        writer: ScriptedWriter) -> None:
    """Commits go one at a time, what is acknowledged meanwhile goes with the next one, and a
    commit that failed is sent again even when nothing newer comes."""
    loop, group, _ = make_loop(writer)
    group.hold_commits = True
    try:
        for batch in range(3):
            for offset in range(3 * batch, 3 * batch + 3):
                await add(loop, 0, offset)
            writer.release(True)
            await settle(loop)
        assert group.commits == [{("t", 0): 3}]  # the 2nd and 3rd wait for the 1st's answer
        await group.answer_commits(True)
        await loop._pump()
        assert group.commits == [{("t", 0): 3}, {("t", 0): 9}]  # together
        await group.answer_commits(False)
        await loop._pump()
        assert len(group.commits) == 2  # sent again after a pause...
        loop._commit_retry_at = 0.0
        await loop._pump()
        await asyncio.sleep(0)  # the commit's task starts
        assert group.commits[2:] == [{("t", 0): 9}]  # ...with nothing newer to carry it
        await group.answer_commits(True)
        assert loop.committed_offsets() == {("t", 0): 9} and group.group_offsets == {("t", 0): 9}
        assert loop.counters.get("kpp_sink_commits_total", outcome="failed") == 1
    finally:
        loop._executor.shutdown(wait=False)


@in_event_loop
async def test_a_revoke_settles_the_write_in_flight_flushes_commits_and_forgets(writer: ScriptedWriter) -> None:
    """The group awaits on_revoked: the batch in flight and the batch being filled are written
    and committed before the partitions go; nothing of them stays held."""
    loop, group, _ = make_loop(writer)
    try:
        for offset in range(3):
            await add(loop, 0, offset)  # N in flight
        await add(loop, 1, 0)  # being filled
        revoke = asyncio.ensure_future(loop.on_revoked({P0, P1}))
        await asyncio.sleep(0.05)
        assert not revoke.done(), "the revoke did not wait for the write in flight"
        writer.release(True)  # N
        await asyncio.sleep(0.05)
        writer.release(True)  # the batch being filled, flushed by the revoke
        await asyncio.wait_for(revoke, 10)
        assert group.group_offsets == {("t", 0): 3, ("t", 1): 1}
        assert len(loop.sink) == 0 and loop._inflight is None and loop.committed_offsets() == {}
        assert loop.counters.get("kpp_sink_rebalances_total") == 1
    finally:
        loop._executor.shutdown(wait=False)
