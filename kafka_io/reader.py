"""Reading a range of topics with aiokafka: `kpp tail`, `kpp archive`, `kpp replay`, the
demo's live summary.

A `RangeReader` is assigned partitions directly (never a group member: no rebalances, no
heartbeats). Where it starts and stops is fixed when it opens, per partition:

- start: BEGINNING (oldest retained), END (only what comes next), COMMITTED (the offset the
  reader's `group_id` committed, else the beginning; `kpp archive` resumes so), or `At(ms)`
  (the first record stamped at or after `ms`, Kafka's offsets_for_times);
- stop: END (the end offsets captured at open: records written later are not read), `At(ms)`
  (before the first record stamped at or after `ms`), or FOLLOW (never: read live).

`plan_range` (offsets -> range) and `take` (a fetched batch -> what lies inside the range) are
the pure parts. Commits only happen when asked (`commit`, with a `group_id`).

The reader is a coroutine API (aiokafka's); `SyncRangeReader` runs it on an event loop of its
own for the thread-based commands. Opening takes at most the connection's --kafka-timeout and
fails with the connection's one-line errors (unreachable broker, refused credentials, missing
topic, refused authorization).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Collection, Iterable, Mapping, NamedTuple, Sequence

from contracts.errors import KppError
from kafka_io.connection import KafkaConnection, capture_client_failures, client_failures_captured, is_client_error

BEGINNING = "beginning"
END = "end"
COMMITTED = "committed"
FOLLOW = None

# How many records one read() returns at most (per call, across partitions).
DEFAULT_MAX_RECORDS = 5000
# aiokafka fetches a partition again only once its fetched records are consumed, so a reader
# waits for each fetch's round trip: fetches larger than its 1 MiB default wait less often (on
# 1.5 kB records, 4 MiB read a range at 2-3x the records/s). Memory: up to this per partition.
PARTITION_FETCH_BYTES = 4 << 20


@dataclass(frozen=True)
class At:
    """A position given as a time: the first record stamped at or after `ms` (Unix ms)."""

    ms: int


Start = str | At  # BEGINNING | END | COMMITTED | At
Stop = str | At | None  # END | At | FOLLOW


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


class PartitionRange(NamedTuple):
    topic: str
    partition: int
    start: int  # the first offset read
    stop: int | None  # the first offset not read; None: follow

    @property
    def empty(self) -> bool:
        return self.stop is not None and self.stop <= self.start


def plan_range(topic: str, partition: int, start: Start, stop: Stop, *, begin: int, end: int,
               start_found: int | None = None, stop_found: int | None = None,
               committed: int | None = None) -> PartitionRange:
    """The offsets to read of one partition whose retained records are [begin, end).
    `start_found`/`stop_found`: what offsets_for_times answered for an `At` start/stop (None:
    no record stamped that late, so the end). `committed`: the group's committed offset."""
    if start == BEGINNING:
        first = begin
    elif start == END:
        first = end
    elif start == COMMITTED:
        first = begin if committed is None else committed
    elif isinstance(start, At):
        first = end if start_found is None else start_found
    else:
        raise ValueError(f"not a start: {start!r}")
    first = min(max(first, begin), end)  # a committed offset retention already deleted: the oldest kept
    if stop is FOLLOW:
        last = None
    elif stop == END:
        last = end
    elif isinstance(stop, At):
        last = end if stop_found is None else stop_found
    else:
        raise ValueError(f"not a stop: {stop!r}")
    return PartitionRange(topic, partition, first, last)


def take(offsets_and_records: Sequence[Any], stop: int | None) -> tuple[list[Any], bool]:
    """The records of one fetched batch (offset order, each with an `offset`) that lie before
    `stop`, and whether the batch reached `stop` (so the partition is finished)."""
    if stop is None or not offsets_and_records or offsets_and_records[-1].offset < stop:
        return list(offsets_and_records), False
    return [r for r in offsets_and_records if r.offset < stop], True


def finished(position: int, stop: int | None) -> bool:
    """A partition whose next offset to read is `position` is finished (the records between a
    batch's last offset and `stop` can be transaction markers or compacted away)."""
    return stop is not None and position >= stop


def quiet_reader_logs(args: Any = None) -> None:
    """For a command that reads with a RangeReader: aiokafka logs every failed reconnect at
    ERROR (tens of lines a second while the broker is away); its records are kept back like
    kafka-python's (kafka_io.connection.capture_client_failures), shown in DEBUG runs."""
    capture_client_failures("aiokafka", show_below_critical=getattr(args, "log_level", None) == "DEBUG")


class RangeReader:
    """Reads `topics` (all their partitions, or `partitions`) from `start` to `stop`.

        reader = RangeReader(connection, ["kube-proxy.samples"], start=At(ms), stop=END)
        await reader.open()
        while not reader.done:
            for record in await reader.read():
                ...
        await reader.close()
    """

    def __init__(self, connection: KafkaConnection, topics: str | Sequence[str], *, start: Start = BEGINNING,
                 stop: Stop = END, partitions: Collection[int] | None = None, group_id: str | None = None,
                 client_id: str = "kpp-reader", max_records: int = DEFAULT_MAX_RECORDS) -> None:
        if start == COMMITTED and group_id is None:
            raise ValueError("start=COMMITTED needs the group_id whose commits it resumes from")
        self.connection = connection
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.start, self.stop = start, stop
        self.partitions = None if partitions is None else set(partitions)
        self.group_id = group_id
        self.client_id = client_id
        self.max_records = max_records
        self.ranges: dict[tuple[str, int], PartitionRange] = {}
        self.partition_counts: dict[str, int] = {}
        self._open: set[tuple[str, int]] = set()  # not finished
        self._consumer: Any = None
        self._tps: dict[tuple[str, int], Any] = {}

    # -- opening ------------------------------------------------------------------------------

    async def open(self) -> dict[tuple[str, int], PartitionRange]:
        """Connect, find the partitions and their ranges, and position the consumer; within
        --kafka-timeout, else the connection's one-line error."""
        started = time.monotonic()
        try:
            # aiokafka names a refused login or TLS handshake only in its records: kept for the
            # one-line error, printed in DEBUG runs only
            with client_failures_captured("aiokafka", show_from=logging.DEBUG):
                await asyncio.wait_for(self._open_now(), timeout=self.connection.timeout_s)
        except KppError:
            await self.close()
            raise
        except (asyncio.TimeoutError, OSError) as exc:
            await self.close()
            raise self.connection.failure(exc, since=started, waited_s=self.connection.timeout_s) from None
        except Exception as exc:
            await self.close()
            if is_client_error(exc):
                raise self.connection.failure(exc, since=started, topic=self.topics[0]) from None
            raise
        return self.ranges

    async def _open_now(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self.partition_counts = await self._describe()
        wanted = [TopicPartition(t, p) for t in self.topics for p in range(self.partition_counts[t])
                  if self.partitions is None or p in self.partitions]
        self._tps = {(tp.topic, tp.partition): tp for tp in wanted}
        self._consumer = consumer = AIOKafkaConsumer(
            **self.connection.aiokafka_kwargs(), group_id=self.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", client_id=self.client_id,
            request_timeout_ms=int(max(self.connection.timeout_s, 5.0) * 1000),
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES)
        await consumer.start()
        if not wanted:
            return
        begins = await consumer.beginning_offsets(wanted)
        ends = await consumer.end_offsets(wanted)
        found_start = await self._offsets_at(self.start, wanted)
        found_stop = await self._offsets_at(self.stop, wanted)
        committed = ({tp: await consumer.committed(tp) for tp in wanted} if self.start == COMMITTED else {})
        consumer.assign(wanted)
        for key, tp in self._tps.items():
            planned = plan_range(tp.topic, tp.partition, self.start, self.stop, begin=begins[tp], end=ends[tp],
                                 start_found=found_start.get(tp), stop_found=found_stop.get(tp),
                                 committed=committed.get(tp))
            self.ranges[key] = planned
            consumer.seek(tp, planned.start)
            if planned.empty:
                consumer.pause(tp)
            else:
                self._open.add(key)

    async def _describe(self) -> dict[str, int]:
        """Partition counts of self.topics; a missing one is the connection's one-line error.
        Asks for every topic's name first: a metadata request naming a missing topic would
        create it on a broker with auto.create.topics.enable."""
        from aiokafka.admin import AIOKafkaAdminClient
        from aiokafka.errors import for_code

        admin = AIOKafkaAdminClient(**self.connection.aiokafka_kwargs(), client_id=self.client_id,
                                    request_timeout_ms=int(max(self.connection.timeout_s, 5.0) * 1000))
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            for topic in self.topics:
                if topic not in existing:
                    raise self.connection.topic_missing(topic)
            counts: dict[str, int] = {}
            for described in await admin.describe_topics(list(self.topics)):
                topic = described["topic"]
                if described["error_code"]:
                    raise self.connection.failure(for_code(described["error_code"])(topic), topic=topic)
                counts[topic] = len(described["partitions"])
            for topic in self.topics:
                if not counts.get(topic):
                    raise self.connection.topic_missing(topic)
            return counts
        finally:
            await admin.close()

    async def _offsets_at(self, position: Start | Stop, tps: list[Any]) -> dict[Any, int | None]:
        if not isinstance(position, At):
            return {}
        found = await self._consumer.offsets_for_times({tp: max(0, position.ms) for tp in tps})
        return {tp: (None if hit is None else hit.offset) for tp, hit in found.items()}

    # -- reading ------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Every partition read up to its stop (never while following)."""
        return not self._open and self.stop is not FOLLOW

    def finished_partitions(self) -> set[tuple[str, int]]:
        return set(self.ranges) - self._open

    async def read(self, timeout_s: float = 0.5,
                   only: Iterable[tuple[str, int]] | None = None) -> list[Record]:
        """The next records of the unfinished partitions (of `only` when given), each
        partition's in offset order; [] when none came within `timeout_s`."""
        active = [self._tps[key] for key in (self._open if only is None else set(only) & self._open)]
        if not active:
            if self.stop is FOLLOW and only is None:
                await asyncio.sleep(timeout_s)  # nothing assigned to follow: wait as a fetch would
            return []
        batches = await self._consumer.getmany(*active, timeout_ms=int(timeout_s * 1000),
                                               max_records=self.max_records)
        out: list[Record] = []
        for tp, batch in batches.items():
            key = (tp.topic, tp.partition)
            kept, reached = take(batch, self.ranges[key].stop)
            out.extend(Record(m.topic, m.partition, m.offset, m.timestamp, m.key, m.value) for m in kept)
            if reached:
                self._finish(key)
        if self.stop is not FOLLOW:
            for tp in active:
                key = (tp.topic, tp.partition)
                if key in self._open and finished(await self._consumer.position(tp), self.ranges[key].stop):
                    self._finish(key)
        return out

    def _finish(self, key: tuple[str, int]) -> None:
        self._open.discard(key)
        self._consumer.pause(self._tps[key])  # fetch nothing more for it

    async def position(self, topic: str, partition: int) -> int:
        """The next offset to read of a partition (never past its stop)."""
        key = (topic, partition)
        position = await self._consumer.position(self._tps[key])
        stop = self.ranges[key].stop
        return position if stop is None else min(position, stop)

    async def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit `offsets` (the next offset to read, per partition) for the reader's group."""
        if self.group_id is None:
            raise ValueError("a reader without a group_id commits nothing")
        if offsets:
            await self._consumer.commit({self._tps[key]: offset for key, offset in offsets.items()})

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()


class SyncRangeReader:
    """A RangeReader for code without an event loop: each call runs on the reader's own loop
    (the consumer's fetches progress only inside calls). A context manager that opens and
    closes it."""

    def __init__(self, connection: KafkaConnection, topics: str | Sequence[str], **options: Any) -> None:
        self._runner = asyncio.Runner()
        self.reader = RangeReader(connection, topics, **options)

    def open(self) -> dict[tuple[str, int], PartitionRange]:
        try:
            return self._runner.run(self.reader.open())
        except BaseException:
            self._runner.close()
            raise

    @property
    def ranges(self) -> dict[tuple[str, int], PartitionRange]:
        return self.reader.ranges

    @property
    def done(self) -> bool:
        return self.reader.done

    def read(self, timeout_s: float = 0.5) -> list[Record]:
        return self._runner.run(self.reader.read(timeout_s))

    def position(self, topic: str, partition: int) -> int:
        return self._runner.run(self.reader.position(topic, partition))

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self._runner.run(self.reader.commit(offsets))

    def close(self) -> None:
        try:
            self._runner.run(self.reader.close())
        finally:
            self._runner.close()

    def __enter__(self) -> "SyncRangeReader":
        self.open()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
