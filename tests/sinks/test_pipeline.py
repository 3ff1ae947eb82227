"""The write pipeline of the sink loop, deterministically: a fake consumer and producer, a
writer whose every send waits for the test and then succeeds or fails as told.

- at most one write in flight; the consumer thread fills the next batch meanwhile;
- a batch the store did not take is not committed, is written again (after the backoff)
  before anything newer, and no newer batch is committed before it;
- a failed DLQ publish commits nothing, seeks back and drops the batch being filled.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from kafka.structs import TopicPartition

from contracts.kafka import KafkaConnection
from sinks.loop import LoopSettings, SinkLoop
from sinks.sink import Backoff, BatchingSink, BatchLimits, Item
from sinks.writers import StoreUnavailable, VictoriaMetricsWriter, WriterSettings

TOPIC = "t"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


class FakeConsumer:
    def __init__(self) -> None:
        self._assignment = {P0, P1}
        self._paused: set = set()
        self.commits: list[dict[tuple[str, int], int]] = []
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
        self.group_offsets.update(offsets)

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
