"""The write pipeline of the sink loop, deterministically: a fake consumer and producer, a
writer whose every send waits for the test and then succeeds or fails as told.

- at most one write in flight; the consumer thread fills the next batch meanwhile;
- a batch the store did not take is not committed, is written again (after the backoff)
  before anything newer, and no newer batch is committed before it;
- a failed DLQ publish commits nothing, seeks back and drops the batch being filled;
- commits are asynchronous: the loop counts a commit only once the coordinator confirmed it,
  and commits again, synchronously, what is unconfirmed before the consumer closes.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from kafka.structs import TopicPartition

from kafka_io.connection import KafkaConnection
from sinks.loop import LoopSettings, SinkLoop
from sinks.sink import Backoff, BatchingSink, BatchLimits, Item
from sinks.writers import StoreUnavailable, VictoriaMetricsWriter, WriterSettings

TOPIC = "t"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


class FakeConsumer:
    def __init__(self) -> None:
        self._assignment = {P0, P1}
        self._paused: set = set()
        self.commits: list[dict[tuple[str, int], int]] = []  # issued, in order
        self.sync_commits: list[dict[tuple[str, int], int]] = []
        self.hold_commits = False
        self.held: list = []
        self.group_offsets: dict[tuple[str, int], int] = {}
        self.seeks: list[tuple[tuple[str, int], int | str]] = []

    def assignment(self) -> set:
        return set(self._assignment)

    def pause(self, *tps) -> None:  # noqa: ANN002
        self._paused |= set(tps)

    def resume(self, *tps) -> None:  # noqa: ANN002
        self._paused -= set(tps)

    def paused(self) -> set:
        return set(self._paused)

    def commit(self, payload) -> None:  # noqa: ANN001
        offsets = {(tp.topic, tp.partition): meta.offset for tp, meta in payload.items()}
        self.commits.append(offsets)
        self.sync_commits.append(offsets)
        self.group_offsets.update(offsets)

    def commit_async(self, payload, callback=None) -> None:  # noqa: ANN001
        """Records the commit; answers it at once, or, with `hold_commits`, when the test calls
        answer_commits (as kafka-python answers in a later poll)."""
        offsets = {(tp.topic, tp.partition): meta.offset for tp, meta in payload.items()}
        self.commits.append(offsets)
        self.held.append((payload, callback, offsets))
        if not self.hold_commits:
            self.answer_commits(True)

    def answer_commits(self, ok: bool) -> None:
        from kafka.errors import CommitFailedError

        held, self.held = self.held, []
        for payload, callback, offsets in held:
            if ok:
                self.group_offsets.update(offsets)
            callback(payload, None if ok else CommitFailedError("scripted"))

    def committed(self, tp):  # noqa: ANN001, ANN201
        return self.group_offsets.get((tp.topic, tp.partition))

    def seek(self, tp, offset) -> None:  # noqa: ANN001
        self.seeks.append(((tp.topic, tp.partition), offset))

    def seek_to_beginning(self, tp) -> None:  # noqa: ANN001
        self.seeks.append(((tp.topic, tp.partition), "beginning"))

    def highwater(self, tp):  # noqa: ANN001, ANN201
        return None


class FakeProducer:
    def __init__(self) -> None:
        self.fail = False
        self.sent: list[bytes] = []

    def send(self, topic, key=None, value=None):  # noqa: ANN001, ANN201
        if self.fail:
            raise RuntimeError("broker away")
        self.sent.append(value)

        class Done:
            def get(self, timeout=None):  # noqa: ANN001, ANN201
                return None
        return Done()

    def flush(self, timeout=None) -> None:  # noqa: ANN001
        pass


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


def make_loop(writer: ScriptedWriter, max_points: int = 3) -> tuple[SinkLoop, FakeConsumer, FakeProducer]:
    loop = SinkLoop(KafkaConnection(bootstrap="127.0.0.1:1"), writer,
                    BatchingSink(writer, BatchLimits(max_points=max_points, max_age_s=3600)),
                    LoopSettings(topics=(TOPIC,), group_id="g", dlq_topic="dlq"),
                    backoff=Backoff(base_s=60.0, cap_s=60.0))
    consumer, producer = FakeConsumer(), FakeProducer()
    loop._consumer, loop._producer = consumer, producer
    loop._executor = ThreadPoolExecutor(max_workers=1)
    return loop, consumer, producer


def add(loop: SinkLoop, partition: int, offset: int, *, malformed: bool = False) -> None:
    item = Item(TOPIC, partition, offset, b"k", b"v")
    if malformed:
        item.dlq_reason, item.dlq_error = "malformed", "cannot decode"
    else:
        item.fragment, item.points = b"m{p=\"%d\"} %d 1\n" % (partition, offset), 1
    if loop.sink.add(item):
        loop._pump()


def settle(loop: SinkLoop) -> None:
    """Let the write thread finish, then let the loop settle it (what its next pump does)."""
    deadline = time.monotonic() + 10
    while loop._inflight is not None and not loop._inflight.done():
        assert time.monotonic() < deadline
        time.sleep(0.001)
    loop._pump()


@pytest.fixture
def writer() -> ScriptedWriter:
    return ScriptedWriter()


def test_a_failed_write_is_not_committed_and_is_retried_before_the_next_batch(writer: ScriptedWriter) -> None:
    loop, consumer, _ = make_loop(writer)
    try:
        for offset in range(3):  # batch N: p0@0..2, full: its write starts
            add(loop, 0, offset)
        assert loop._inflight is not None
        add(loop, 0, 3)  # the consumer goes on while N is written
        add(loop, 1, 0)
        writer.release(False)  # the store does not take N
        settle(loop)
        assert consumer.commits == [] and loop.store_down and consumer.paused() == {P0, P1}
        assert [i.offset for i in loop._retry] == [0, 1, 2]
        add(loop, 1, 1)  # batch N+1 is full now, but N comes first: nothing is started
        loop._pump()
        assert loop._inflight is None and len(writer.bodies) == 1 and consumer.commits == []
        loop._next_attempt = 0.0  # the backoff is over: N is written again
        loop._pump()
        assert loop._inflight is not None and len(loop.sink) == 3
        writer.release(True)
        settle(loop)  # N acknowledged and committed; the store is back; N+1 starts
        assert consumer.commits == [{("t", 0): 3}]
        assert not loop.store_down and consumer.paused() == set()
        assert loop._inflight is not None
        writer.release(True)
        settle(loop)
        assert consumer.commits == [{("t", 0): 3}, {("t", 0): 4, ("t", 1): 2}]
        assert writer.bodies[0] == writer.bodies[1]  # the same batch, re-written
        assert writer.max_active == 1
        assert loop.counters.get("kpp_sink_retries_total") == 1
    finally:
        loop._executor.shutdown(wait=False)


def test_at_most_one_write_in_flight_a_full_batch_waits_for_it(writer: ScriptedWriter) -> None:
    loop, consumer, _ = make_loop(writer)
    try:
        for offset in range(3):
            add(loop, 0, offset)  # N in flight
        done = threading.Event()

        def fill() -> None:
            for offset in range(3, 6):
                add(loop, 0, offset)  # N+1 full: blocks until N is settled
            done.set()

        filler = threading.Thread(target=fill)
        filler.start()
        assert not done.wait(0.3), "a full batch did not wait for the write in flight"
        assert len(writer.bodies) == 1 and consumer.commits == []
        writer.release(True)
        assert done.wait(10)
        filler.join()
        assert consumer.commits == [{("t", 0): 3}]  # N committed before N+1 was started
        writer.release(True)
        settle(loop)
        assert consumer.commits == [{("t", 0): 3}, {("t", 0): 6}]
        assert writer.max_active == 1
    finally:
        loop._executor.shutdown(wait=False)


def test_a_failed_write_of_n_never_lets_n_plus_1_commit(writer: ScriptedWriter) -> None:
    """N fails again and again while N+1 is full: nothing is committed, N+1 is never sent."""
    loop, consumer, _ = make_loop(writer)
    try:
        for offset in range(3):
            add(loop, 0, offset)
        add(loop, 0, 3)
        add(loop, 0, 4)
        writer.release(False)
        settle(loop)
        add(loop, 0, 5)  # N+1 full
        for _ in range(3):
            loop._next_attempt = 0.0
            loop._pump()
            writer.release(False)
            settle(loop)
            assert consumer.commits == [] and loop.store_down
        assert all(body == writer.bodies[0] for body in writer.bodies)  # only N was ever sent
        assert loop.buffered_points == 6  # N waiting for its retry + N+1
    finally:
        loop._executor.shutdown(wait=False)


def test_a_failed_dlq_publish_commits_nothing_and_rereads(writer: ScriptedWriter) -> None:
    loop, consumer, producer = make_loop(writer)
    try:
        consumer.group_offsets[("t", 0)] = 0
        add(loop, 0, 0)
        add(loop, 0, 1, malformed=True)  # DLQ-bound
        add(loop, 0, 2)
        add(loop, 0, 3)
        add(loop, 0, 4)  # buffered
        add(loop, 1, 0)  # no commit for p1 yet: re-read from the beginning
        producer.fail = True
        writer.release(True)
        settle(loop)
        assert consumer.commits == []
        assert sorted(consumer.seeks) == [(("t", 0), 0), (("t", 1), "beginning")]
        assert len(loop.sink) == 0 and loop._retry is None and loop.store_down
        loop._next_attempt = 0.0
        loop._pump()  # the backoff is over: consumption resumes (the records come again)
        assert not loop.store_down and consumer.paused() == set()
    finally:
        loop._executor.shutdown(wait=False)


def test_commits_are_counted_when_confirmed_and_confirmed_before_closing(writer: ScriptedWriter) -> None:
    loop, consumer, _ = make_loop(writer)
    consumer.hold_commits = True
    try:
        for offset in range(3):
            add(loop, 0, offset)
        writer.release(True)
        settle(loop)
        assert consumer.commits == [{("t", 0): 3}]  # issued once the store took the batch...
        assert loop.committed_offsets() == {} and loop._commit_in_flight  # ...not confirmed yet
        consumer.answer_commits(True)
        assert loop.committed_offsets() == {("t", 0): 3} and not loop._commit_in_flight
        for offset in range(3, 6):
            add(loop, 0, offset)
        writer.release(True)
        settle(loop)
        consumer.answer_commits(False)  # the coordinator refused this one
        assert loop.committed_offsets() == {("t", 0): 3}
        assert loop.counters.get("kpp_sink_commits_total", outcome="failed") == 1
        loop._confirm_commits()  # what run() does before closing the consumer
        assert consumer.sync_commits == [{("t", 0): 6}] and consumer.group_offsets == {("t", 0): 6}
        assert loop.committed_offsets() == {("t", 0): 6}
        loop._confirm_commits()  # nothing left unconfirmed: no second commit
        assert consumer.sync_commits == [{("t", 0): 6}]
    finally:
        loop._executor.shutdown(wait=False)


def test_a_reread_starts_after_a_commit_still_in_flight(writer: ScriptedWriter) -> None:
    """A failed DLQ publish re-reads from the last acknowledged offset even if its commit has
    not reached the group yet: commits never go backwards."""
    loop, consumer, producer = make_loop(writer)
    consumer.hold_commits = True
    try:
        consumer.group_offsets[("t", 0)] = 0
        for offset in range(3):
            add(loop, 0, offset)
        writer.release(True)
        settle(loop)  # committed asynchronously, not confirmed: the group still says 0
        assert consumer.commits == [{("t", 0): 3}] and consumer.group_offsets == {("t", 0): 0}
        add(loop, 0, 3)
        add(loop, 0, 4, malformed=True)  # DLQ-bound
        add(loop, 0, 5)
        add(loop, 0, 6)  # full: written
        producer.fail = True
        writer.release(True)
        settle(loop)
        assert consumer.seeks == [(("t", 0), 3)] and consumer.commits == [{("t", 0): 3}]
    finally:
        loop._executor.shutdown(wait=False)


def test_one_commit_in_flight_the_next_ones_coalesce_and_a_failed_one_is_sent_again(
        writer: ScriptedWriter) -> None:
    """kafka-python refuses requests beyond its in-flight limit (NodeNotReadyError): commits go
    one at a time, what is acknowledged meanwhile goes with the next one, and a commit that
    failed is sent again even when nothing newer comes."""
    loop, consumer, _ = make_loop(writer)
    consumer.hold_commits = True
    try:
        for batch in range(3):
            for offset in range(3 * batch, 3 * batch + 3):
                add(loop, 0, offset)
            writer.release(True)
            settle(loop)
        assert consumer.commits == [{("t", 0): 3}]  # the 2nd and 3rd wait for the 1st's answer
        consumer.answer_commits(True)
        loop._pump()
        assert consumer.commits == [{("t", 0): 3}, {("t", 0): 9}]  # together
        consumer.answer_commits(False)
        loop._pump()
        assert len(consumer.commits) == 2  # sent again after a pause...
        loop._commit_retry_at = 0.0
        loop._pump()
        assert consumer.commits[2:] == [{("t", 0): 9}]  # ...with nothing newer to carry it
        consumer.answer_commits(True)
        assert loop.committed_offsets() == {("t", 0): 9} and consumer.group_offsets == {("t", 0): 9}
        assert loop.counters.get("kpp_sink_commits_total", outcome="failed") == 1
    finally:
        loop._executor.shutdown(wait=False)
