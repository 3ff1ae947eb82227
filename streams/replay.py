"""Replay: reprocess a time range of `<prefix>.samples` through exactly the stream logic, in
one process, without Faust.

The same pure stages the Faust agents drive (`NodeStage`, `ClusterStage`) are fed here from a
plain Kafka consumer, the way tests/streams/reference.py feeds them:

* each source partition is read in offset order, with the real offsets; partitions are
  interleaved deterministically (the message with the smallest timestamp first, ties by
  partition), which keeps the cluster stage's open windows few. The output does not depend
  on the interleaving (streams/cluster.py: only progress markers close cluster windows);
* cluster partials and progress markers are delivered in-process, right after the node-stage
  step that produced them;
* at the end of the data every partition is closed as after an idle timeout (the last
  windows close), exactly what the live worker does once its data stops.

A range is read with a warm-up: reading starts `warmup` before `from` so that counter and
histogram baselines, nodes that went missing and the partition watermarks are what the live
worker had; reading stops at the first message stamped at or after `to + allowed lateness`
(Kafka's offsets_for_times finds both offsets; message timestamps are the scrape times).
Only derived records whose window lies inside [from, to] are emitted (an SLO record, published
at the close of each step window, counts as that step window), so every emitted record is
byte-identical to the one the live worker published for that window, given the same settings
and a warm-up that covers the baselines, the SLO window and `node_gone_after`.

Event time is bounded as in the live worker (streams/partition.py), against a trusted clock
that replay has to take from the data: the record's Kafka timestamp, capped at the range end
(`to` + allowed lateness, where reading stops). Live, the worker's wall clock at processing
time is, up to consumer lag, the time Kafka appended the record; the Kafka timestamp is that
time exactly when the samples topic uses `message.timestamp.type=LogAppendTime`, and then a
replay rejects (`clock_skew`) exactly the scrapes the live worker rejected. With the default
CreateTime it is the producer's stamp (`kpp produce` stamps the scrape time): the broker
bounds it (`message.timestamp.after.max.ms`, one hour by default since Kafka 4.0) and the range
end bounds it, so a record stamped in 2100 still cannot move a watermark, but a producer whose
clock ran a few minutes ahead passes the check in a replay that the live worker's wall clock
failed. The range end alone would accept anything up to the end of a long range (one record
two hours ahead in a week's range would make every later scrape late).

Kafka-free core: `Replayer` takes (partition, offset, timestamp, key, value) tuples and an
`emit(topic, key, value, timestamp_ms)` callback; `KafkaSource` and `KafkaSink` connect it to
a broker.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, NamedTuple

import orjson

from contracts.errors import KppError
from kafka_io.connection import KafkaConnection
from kafka_io.admin import TopicSpec, ensure_topics
from kafka_io.partitioner import partition_for
from contracts.topics import Topics
from streams.config import StreamSettings
from streams.stages import ClusterStage, NodeStage

log = logging.getLogger("kpp.replay")

# emit(topic, key, value, timestamp_ms): where replayed records go
Emit = Callable[[str, bytes | None, bytes, int | None], None]

SIDE_SUFFIXES = ("late", "dlq")


class Message(NamedTuple):
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes


def _frozen_clock() -> float:
    """Wall clock of the stages: frozen, so that no partition is ever idle or silent by the
    time a replay takes (partitions are declared idle with NodeStage.close_idle / finish)."""
    return 1000.0


@dataclass
class ReplayStats:
    records_in: int = 0
    out: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # by kind / side topic
    outside_range: int = 0  # derived records of windows not inside [from, to] (warm-up, tail)
    windows: set = field(default_factory=set)  # (size_s, start_ms) of emitted windows
    late: int = 0
    dlq: int = 0
    duplicates: int = 0
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def records_out(self) -> int:
        return sum(v for k, v in self.out.items() if k not in SIDE_SUFFIXES)

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        return self.records_in / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> str:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.out.items()) if k not in SIDE_SUFFIXES)
        sizes: dict[int, int] = defaultdict(int)
        for size_s, _start in self.windows:
            sizes[size_s] += 1
        windows = ", ".join(f"{n} of {s} s" for s, n in sorted(sizes.items())) or "none"
        return (f"{self.records_in} records in, {self.records_out} derived records out ({kinds or 'none'}); "
                f"windows {windows}; late {self.late}, DLQ {self.dlq}, duplicates {self.duplicates}; "
                f"{self.outside_range} records of windows outside the range not emitted; "
                f"{self.elapsed_s:.1f} s, {self.rate:,.0f} records/s")


def out_prefix(prefix: str, namespace: str | None) -> str:
    """`--namespace NAME` writes to `NAME.<prefix>.quantiles`, ...; without it, the live topics."""
    return f"{namespace}.{prefix}" if namespace else prefix


class Replayer:
    """Drives NodeStage/ClusterStage over in-memory tables; emits what they publish.

    `from_ms`/`to_ms` bound the windows emitted (None: unbounded). `side` = also emit the
    late and DLQ messages (to `<out>.late` / `<out>.dlq`).
    """

    def __init__(self, settings: StreamSettings, emit: Emit, *, from_ms: int | None = None,
                 to_ms: int | None = None, output_prefix: str | None = None, side: bool = True) -> None:
        self.settings = settings
        self.emit = emit
        self.from_ms = from_ms
        self.to_ms = to_ms
        self.side = side
        self.stats = ReplayStats()
        topics = settings.topics
        target = Topics(output_prefix or settings.topic_prefix)
        self._derived = {name: (kind, getattr(target, kind))
                         for kind, name in zip(("rates", "quantiles", "gauges", "health", "slo"), topics.derived())}
        self._side = {topics.late: ("late", target.late), topics.dlq: ("dlq", target.dlq)}
        self._queues: dict[int, deque] = defaultdict(deque)
        self._cluster_offsets: dict[int, int] = defaultdict(int)
        self.clock = _frozen_clock
        self.trusted_ms = 0  # the trusted clock of the scrape being fed (see the module docstring)
        self.node = NodeStage(settings, {}, self._send, clock=self.clock, trusted_clock_ms=lambda: self.trusted_ms)
        self.cluster = ClusterStage(settings, {}, self._send, clock=self.clock)
        self._seen_parts: set[int] = set()

    # -- what the stages send --------------------------------------------------------------

    async def _send(self, topic: str, key: bytes | None, value: bytes, ts_ms: int | None, part: int | None):
        if topic == self.settings.cluster_partials_topic:
            q = part if part is not None else _partition_of(key, self.settings.partitions)
            self._queues[q].append((key, value))
        else:
            self._route(topic, key, value, ts_ms)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def _route(self, topic: str, key: bytes | None, value: bytes, ts_ms: int | None) -> None:
        derived = self._derived.get(topic)
        if derived is not None:
            kind, target = derived
            window = orjson.loads(value)["window"]
            start, end = window["start_ms"], window["end_ms"]
            if kind == "slo":  # published at each step-window close: judged by that step window
                start = end - self.settings.step_s * 1000
            if (self.from_ms is not None and start < self.from_ms) or (self.to_ms is not None and end > self.to_ms):
                self.stats.outside_range += 1
                return
            if kind != "slo":  # an SLO record spans the SLO window before a step window's end
                self.stats.windows.add((window["size_s"], start))
            self.stats.out[kind] += 1
            self.emit(target, key, value, ts_ms)
            return
        side = self._side.get(topic)
        if side is None:
            raise KppError(f"replay: the stream stage sent to an unexpected topic {topic!r}")
        kind, target = side
        if kind == "late":
            self.stats.late += 1
        else:
            self.stats.dlq += 1
        if self.side:
            self.stats.out[kind] += 1
            self.emit(target, key, value, ts_ms)

    async def _drain_cluster(self) -> None:
        while True:
            live = [q for q in sorted(self._queues) if self._queues[q]]
            if not live:
                return
            q = live[0]
            key, value = self._queues[q].popleft()
            await self.cluster.on_message(q, self._cluster_offsets[q], key, value)
            self._cluster_offsets[q] += 1

    # -- driving ---------------------------------------------------------------------------

    async def start(self, empty_partitions: Iterable[int] = ()) -> None:
        """Partitions known to hold nothing in the range are idle from the start (as the live
        worker declares them after its idle timeout), so cluster windows need not wait for them."""
        empty = sorted(set(empty_partitions))
        if not empty:
            return
        for p in empty:
            await self.node.close_idle(p)
            await self.node.flush()
        await self._drain_cluster()

    async def feed(self, msg: Message) -> None:
        stats = self.stats
        stats.records_in += 1
        if stats.first_ts_ms is None:
            stats.first_ts_ms = msg.timestamp_ms
        stats.last_ts_ms = msg.timestamp_ms
        self._seen_parts.add(msg.partition)
        self.trusted_ms = trusted_clock_ms(msg.timestamp_ms, self.to_ms, self.settings)
        await self.node.on_sample(msg.partition, msg.offset, msg.key, msg.value)
        await self._drain_cluster()

    async def finish(self) -> ReplayStats:
        """End of data: close every partition's remaining windows, as after an idle timeout."""
        await self.node.finish()
        await self._drain_cluster()
        self.stats.duplicates = int(getattr(self.node, "stats", {}).get("duplicates", 0))
        self.stats.finished = time.monotonic()
        return self.stats

    async def run(self, messages: Iterable[Message] | AsyncIterable[Message], *, speed: float | None = None,
                  on_progress: Callable[[ReplayStats], None] | None = None,
                  empty_partitions: Iterable[int] = ()) -> ReplayStats:
        """Feed all messages (an iterable or an async one) then finish. `speed`: pace to X
        times real time by message timestamps (None: as fast as possible). `on_progress` is
        called after every message."""
        await self.start(empty_partitions)
        wall0 = ts0 = None

        async def step(msg: Message) -> None:
            nonlocal wall0, ts0
            if speed:
                if wall0 is None:
                    wall0, ts0 = time.monotonic(), msg.timestamp_ms
                ahead = (msg.timestamp_ms - ts0) / 1000.0 / speed - (time.monotonic() - wall0)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            await self.feed(msg)
            if on_progress is not None:
                on_progress(self.stats)

        if isinstance(messages, AsyncIterable):
            async for msg in messages:
                await step(msg)
        else:
            for msg in messages:
                await step(msg)
        return await self.finish()


def trusted_clock_ms(kafka_ts_ms: int, to_ms: int | None, settings: StreamSettings) -> int:
    """What a replayed scrape's time is checked against: its Kafka timestamp, never later
    than where the range's reading stops."""
    if to_ms is None:
        return kafka_ts_ms
    return min(kafka_ts_ms, to_ms + settings.lateness_ms)


def _partition_of(key: bytes | None, partitions: int) -> int:
    """Where the live worker's producer sends a keyed partial (the stages always key them)."""
    return 0 if key is None else partition_for(key, partitions)


def merge_by_time(streams: dict[int, Iterator[Message]]) -> Iterator[Message]:
    """Interleave per-partition streams (each kept in its own order) by (timestamp, partition)."""
    heap: list[tuple[int, int, Message, Iterator[Message]]] = []
    for p, it in streams.items():
        first = next(it, None)
        if first is not None:
            heap.append((first.timestamp_ms, p, first, it))
    heapq.heapify(heap)
    while heap:
        _ts, p, msg, it = heap[0]
        yield msg
        nxt = next(it, None)
        if nxt is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (nxt.timestamp_ms, p, nxt, it))


# -- Kafka ends ------------------------------------------------------------------------------

class KafkaSource:
    """The messages of `topic` from the first one stamped >= start_ms to the last one before
    the first stamped >= stop_ms (per partition, as kafka_io.reader plans it), as one
    deterministic stream (the order of `merge_by_time`). Never waits for new messages: the end
    is fixed when the source is opened (`await source.open()`)."""

    def __init__(self, connection: KafkaConnection, topic: str, start_ms: int, stop_ms: int,
                 stall_timeout_s: float = 60.0) -> None:
        from kafka_io.reader import At, RangeReader

        self.topic = topic
        self.stall_timeout_s = stall_timeout_s
        self.reader = RangeReader(connection, topic, start=At(start_ms), stop=At(stop_ms), client_id="kpp-replay")
        self.partitions = 0
        self.start: dict[int, int] = {}
        self.stop: dict[int, int] = {}
        self.total = 0

    async def open(self) -> None:
        ranges = await self.reader.open()
        self.partitions = self.reader.partition_counts[self.topic]
        self.start = {p: r.start for (_t, p), r in sorted(ranges.items())}
        self.stop = {p: r.stop for (_t, p), r in sorted(ranges.items())}
        self.total = sum(max(0, self.stop[p] - self.start[p]) for p in self.start)

    @property
    def empty_partitions(self) -> list[int]:
        return [p for p in self.start if self.stop[p] <= self.start[p]]

    async def messages(self) -> AsyncIterator[Message]:
        """Every message of the range, interleaved by (timestamp, partition), each partition in
        offset order: the next message is chosen once every unfinished partition has one
        buffered."""
        empty = set(self.empty_partitions)
        buffers: dict[int, deque] = {p: deque() for p in self.start if p not in empty}
        await self._fill(buffers, list(buffers))
        heap = [(buf[0].timestamp_ms, p) for p, buf in buffers.items() if buf]
        heapq.heapify(heap)
        while heap:
            p = heap[0][1]
            buf = buffers[p]
            msg = buf.popleft()
            if not buf:
                await self._fill(buffers, [p])
            if buf:
                heapq.heapreplace(heap, (buf[0].timestamp_ms, p))
            else:  # finished and drained
                heapq.heappop(heap)
            yield msg

    async def _fill(self, buffers: dict[int, deque], partitions: list[int]) -> None:
        """Read until each of `partitions` has a message buffered or is finished."""
        deadline = time.monotonic() + self.stall_timeout_s
        while True:
            finished = {p for _t, p in self.reader.finished_partitions()}
            waiting = [p for p in partitions if not buffers[p] and p not in finished]
            if not waiting:
                return
            records = await self.reader.read(0.5, only=[(self.topic, p) for p in waiting])
            for r in records:  # a reader Record has Message's fields
                buffers[r.partition].append(r)
            if records:
                deadline = time.monotonic() + self.stall_timeout_s
            elif time.monotonic() > deadline:
                raise KppError(f"replay: no message from {self.topic} for {self.stall_timeout_s:.0f} s "
                               "although the range is not finished (broker unreachable?)")

    async def close(self) -> None:
        await self.reader.close()


class KafkaSink:
    """kafka-python producer for the replayed records: acks=all, idempotent, keyed, stamped
    with the window end like the live worker's records."""

    def __init__(self, connection: KafkaConnection) -> None:
        from kafka_io.publish import kafka_python_producer

        self.producer = kafka_python_producer(connection, client_id="kpp-replay", linger_ms=20, batch_size=1 << 20,
                                              max_request_size=8 << 20)
        self.errors: list[BaseException] = []

    def __call__(self, topic: str, key: bytes | None, value: bytes, ts_ms: int | None) -> None:
        if self.errors:
            raise KppError(f"replay: writing to Kafka failed: {self.errors[0]!r}")
        self.producer.send(topic, key=key, value=value, timestamp_ms=ts_ms).add_errback(self.errors.append)

    def close(self, timeout: float = 60.0) -> None:
        try:
            self.producer.flush(timeout)
        finally:
            self.producer.close(timeout)
        if self.errors:
            raise KppError(f"replay: {len(self.errors)} record(s) could not be written: {self.errors[0]!r}")


# Kafka deletes by message timestamp: records of windows older than a topic's retention.ms
# (7 days by default) would vanish at the next retention check. Topics replay creates keep
# their records until someone deletes the topic or lowers this.
CREATED_TOPIC_CONFIG = {"retention.ms": "-1"}


def ensure_output_topics(connection: KafkaConnection, names: Iterable[str], partitions: int) -> list[str]:
    """Create the output topics that do not exist yet (unlimited retention); returns those created."""
    specs = [TopicSpec(n, partitions, dict(CREATED_TOPIC_CONFIG)) for n in names]
    return list(ensure_topics(connection, specs, client_id="kpp-replay-setup").created)


def replay_kafka(connection: KafkaConnection, settings: StreamSettings, *, from_ms: int, to_ms: int,
                 warmup_ms: int, namespace: str | None = None, speed: float | None = None,
                 progress: Callable[[ReplayStats, int], None] | None = None,
                 side: bool | None = None) -> ReplayStats:
    """Replay `<prefix>.samples` for windows inside [from_ms, to_ms] into the live derived
    topics (namespace None) or into `<namespace>.<prefix>.*`. `side` (late/DLQ records) defaults
    to on in a namespace and off for the live topics (the live worker wrote them already)."""
    return asyncio.run(_replay_kafka(connection, settings, from_ms=from_ms, to_ms=to_ms, warmup_ms=warmup_ms,
                                     namespace=namespace, speed=speed, progress=progress, side=side))


async def _replay_kafka(connection: KafkaConnection, settings: StreamSettings, *, from_ms: int, to_ms: int,
                        warmup_ms: int, namespace: str | None, speed: float | None,
                        progress: Callable[[ReplayStats, int], None] | None, side: bool | None) -> ReplayStats:
    import dataclasses

    topics = settings.topics
    source = KafkaSource(connection, topics.samples, from_ms - warmup_ms, to_ms + settings.lateness_ms)
    await source.open()
    try:
        if source.partitions != settings.partitions:
            log.info("%s has %d partition(s): replaying with that count", topics.samples, source.partitions)
            settings = dataclasses.replace(settings, partitions=source.partitions)
        side = bool(namespace) if side is None else side
        target = Topics(out_prefix(settings.topic_prefix, namespace))
        names = [*target.derived(), *((target.late, target.dlq) if side else ())]
        created = ensure_output_topics(connection, names, source.partitions)
        if created:
            log.info("created %s", ", ".join(created))
        sink = KafkaSink(connection)
        replayer = Replayer(settings, sink, from_ms=from_ms, to_ms=to_ms,
                            output_prefix=target.prefix, side=side)
        total = source.total
        callback = (lambda stats: progress(stats, total)) if progress else None
        try:
            stats = await replayer.run(source.messages(), speed=speed, on_progress=callback,
                                       empty_partitions=source.empty_partitions)
        finally:
            sink.close()
        stats.finished = time.monotonic()
        return stats
    finally:
        await source.close()
