"""The sink's consumer loop: an asyncio member of a consumer group (kafka_io.group) with
manual commits, feeding a BatchingSink, with the HTTP write pipelined on one write thread.

    getmany → decode+encode (fastpath, else the contract path) → sink.add ─┐ full/due
       ▲                                                                    ▼
       │      write thread: write_items(batch N) ─→ ok ─→ (event loop) DLQ → commit N
       │      meanwhile the event loop reads and fills batch N+1            │ StoreUnavailable
       └── paused while the store is away ◀──── N waits in _retry ◀─────────┘ (backoff, jitter)

- At most one batch is in flight. Offsets are committed only after the store acknowledged
  the batch and the DLQ got its records (every DLQ message awaited until the broker took
  it), strictly in batch order: a newer batch is started only when no older one is in
  flight or waiting for its retry. At-least-once, nothing lost. Commits run in the
  background, one at a time (what is acknowledged meanwhile goes with the next one, a
  failed one is sent again); what is not confirmed when the loop stops is committed again,
  awaited, before the consumer leaves the group.
- The HTTP write runs on a worker thread (run_in_executor): the event loop keeps fetching
  (aiokafka decodes record batches in C) and heartbeating meanwhile.
- While the store is down the assigned partitions are paused and the loop keeps calling
  getmany (the group's heartbeats and rebalances go on). Memory: the batch in flight (or to
  retry) plus the batch being filled, each bounded by the batch limits plus one getmany (a
  full batch waits for the write in flight).
- A rebalance first settles the write in flight, flushes and commits what is held: the
  group awaits our `on_revoked` coroutine before it gives partitions away, and a lock keeps
  it from interleaving with the handling of a fetched batch. What cannot be flushed is
  dropped for the revoked partitions, and their new owner re-reads it from the committed
  offset.
- If the DLQ publish fails after a write, nothing is committed: the partitions are sought
  back to the last offsets committed (or acknowledged, if a commit of them is still on its
  way), the batch being filled is dropped, and all is re-read (re-writes are idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Mapping

from contracts.codec import DecodeError
from contracts.derived import DerivedRecord
from contracts.dlq import dead_letter, dlq_key
from contracts.errors import KppError
from contracts.records import ScrapeRecord
from kafka_io.connection import KafkaConnection
from kafka_io.group import GroupConsumer, GroupSettings, Partition, Publisher
from runtime.selfmetrics import Counters
from sinks.encode import Unrepresentable
from sinks.fastpath import fast_path_for
from sinks.series import Point, derived_points, raw_points
from sinks.sink import Backoff, BatchingSink, FlushResult, Item, Rejection, write_items
from sinks.timerange import TimestampLimits
from sinks.writers import StoreUnavailable, Writer

log = logging.getLogger("kpp.sink")


@dataclass(kw_only=True)
class LoopSettings:
    topics: tuple[str, ...]
    group_id: str
    dlq_topic: str
    raw_topic: str | None = None  # records of this topic are raw scrapes (--raw)
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    client_id: str = "kpp-sink"  # fetching and session: kafka_io.group.GroupSettings' defaults
    revoke_flush_attempts: int = 1
    lag_interval_s: float = 2.0
    shutdown_flush_s: float = 10.0
    # Timestamps the store keeps; a record outside goes to the DLQ (sinks/timerange.py).
    timestamps: TimestampLimits = field(default_factory=TimestampLimits)


def describe_metrics(counters: Counters) -> None:
    for name, kind, text, labels in (
        ("kpp_sink_points_written_total", "counter", "Points the store acknowledged.", ()),
        ("kpp_sink_records_total", "counter", "Kafka records handled, by outcome (written, empty, dlq).",
         ("outcome",)),
        ("kpp_sink_batches_total", "counter", "Batches flushed, by outcome (ok, unavailable).", ("outcome",)),
        ("kpp_sink_requests_total", "counter", "Write requests sent to the store (a rejected batch is split).", ()),
        ("kpp_sink_retries_total", "counter", "Flushes retried after the store was unavailable.", ()),
        ("kpp_sink_dlq_total", "counter", "Records sent to the dead-letter topic, by reason.", ("reason",)),
        ("kpp_sink_points_skipped_total", "counter", "Points the protocol cannot carry (NaN/Inf in Influx).",
         ("reason",)),
        ("kpp_sink_points_dropped_total", "counter",
         "Points the store would drop silently (timestamp outside its range), by reason: dead-lettered.",
         ("reason",)),
        ("kpp_sink_commits_total", "counter", "Offset commits, by outcome (ok, failed).", ("outcome",)),
        ("kpp_sink_rebalances_total", "counter", "Partition revocations seen.", ()),
        ("kpp_sink_dropped_on_revoke_total", "counter",
         "Buffered records dropped on revoke (re-read by the new owner).", ()),
        ("kpp_sink_consumer_lag", "gauge", "Records in Kafka not yet fetched, per topic (highwater - position).",
         ("topic",)),
        ("kpp_sink_store_up", "gauge", "1 when the last write to the store succeeded.", ()),
        ("kpp_sink_buffered_points", "gauge", "Points held: the batch being filled, in flight and to retry.", ()),
        ("kpp_sink_paused", "gauge", "1 while consumption is paused because the store is away.", ()),
        ("kpp_sink_last_flush_seconds", "gauge", "Duration of the last successful flush.", ()),
        ("kpp_sink_write_duration_seconds", "histogram",
         "Writes the store acknowledged: from sending a batch to its acknowledgement (all its requests).", ()),
    ):
        counters.describe(name, kind, text, labels)


class SinkLoop:
    def __init__(self, connection: KafkaConnection, writer: Writer, sink: BatchingSink,
                 settings: LoopSettings, counters: Counters | None = None,
                 backoff: Backoff | None = None) -> None:
        self.connection = connection
        self.writer = writer
        self.sink = sink
        self.settings = settings
        self.counters = counters or Counters()
        describe_metrics(self.counters)
        self.backoff = backoff or Backoff()
        self.store_down = False
        self._next_attempt = 0.0
        self._committed: dict[Partition, int] = {}  # confirmed by the group coordinator
        # The next offset of every partition whose records the store (and the DLQ) acknowledged:
        # what the group should hold.
        self._acked: dict[Partition, int] = {}
        self._to_commit: dict[Partition, int] = {}  # acknowledged, not handed to a commit yet
        self._commit_task: asyncio.Task | None = None  # the commit in flight (one at a time)
        self._commit_retry_at = 0.0
        self._commit_error: BaseException | None = None  # a background commit's unexpected error
        self._group: GroupConsumer | None = None
        self._dlq: Publisher | None = None
        self.last_flush_wall: float | None = None
        self.loop_at: float | None = None  # monotonic time the consume loop last came round
        self.started = threading.Event()
        self._on_flush: Callable[[FlushResult], None] | None = None
        settings.timestamps.refresh(_now_ms())
        self._fast = fast_path_for(writer, settings.extra_labels, settings.timestamps)
        # The write pipeline: at most one batch in flight on the write thread; a batch the
        # store did not take waits in _retry and is written again before anything newer.
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: asyncio.Future | None = None
        self._inflight_items: list[Item] = []
        self._inflight_started = 0.0
        self._inflight_points = 0
        self._retry: list[Item] | None = None
        self._last_error: Exception | None = None
        # Handling a fetched batch and a rebalance never interleave (both await writes).
        self._lock = asyncio.Lock()
        self._rewound: set[Partition] = set()  # sought back during this getmany's records
        self._backlog = False  # the last batch closed on size: flush the rest once caught up

    # -- decoding (pure apart from the writer's encoder) -------------------------------------

    def to_item(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> Item:
        """The record decoded and encoded: by the fast path when it takes it, else by the
        contract path (`_contract_item`), which also names the DLQ reason. (_consume inlines
        this.)"""
        if self._fast is not None and value and topic != self.settings.raw_topic:
            try:
                fragment, points, skipped = self._fast(value)
            except Exception:  # noqa: BLE001 (not the common shape: the contract path decides)
                pass
            else:
                return Item(topic, partition, offset, key, value, fragment, points, skipped)
        return self._contract_item(topic, partition, offset, key, value)

    def _contract_item(self, topic: str, partition: int, offset: int, key: bytes | None,
                       value: bytes | None) -> Item:
        item = Item(topic, partition, offset, key, value or b"")
        try:
            points = self.points_of(topic, value)
        except (DecodeError, ValueError, TypeError, KeyError) as exc:
            item.dlq_reason, item.dlq_error = "malformed", f"cannot decode: {exc}"
            return item
        try:
            item.fragment, item.skipped = self.writer.encode(points)
        except Unrepresentable as exc:
            item.dlq_reason, item.dlq_error = "unrepresentable", str(exc)
            return item
        except (TypeError, ValueError, AttributeError) as exc:
            # A field of the wrong type the contract lets through (e.g. a number as cluster):
            # dead-lettered instead of stopping the sink on every restart.
            item.dlq_reason, item.dlq_error = "malformed", f"cannot encode: {exc}"
            return item
        item.points = len(points) - item.skipped
        violation = self.timestamp_violation(points)
        if violation is not None:
            # The store would answer 204 and drop them: dead-lettered, counted as dropped.
            item.dlq_reason, item.dlq_error = violation
            item.dropped, item.points, item.fragment = item.points, 0, b""
        return item

    def timestamp_violation(self, points: list[Point]) -> tuple[str, str] | None:
        """(reason, error) when a point's timestamp is outside what the store keeps."""
        limits = self.settings.timestamps
        for timestamp_ms in {p.timestamp_ms for p in points}:
            violation = limits.violation(timestamp_ms)
            if violation is not None:
                return violation
        return None

    def points_of(self, topic: str, value: bytes | None) -> list[Point]:
        if value is None:
            raise DecodeError("empty message (tombstone)")
        if self.settings.raw_topic is not None and topic == self.settings.raw_topic:
            return raw_points(ScrapeRecord.decode(value), self.settings.extra_labels)
        return derived_points(DerivedRecord.decode(value), self.settings.extra_labels)

    # -- Kafka --------------------------------------------------------------------------------

    async def _open(self) -> None:
        s = self.settings
        self._group = GroupConsumer(self.connection, GroupSettings(
            topics=s.topics, group_id=s.group_id, client_id=s.client_id), hook=self)
        self._dlq = Publisher(self.connection, client_id=s.client_id + "-dlq")
        await self._group.start()

    async def _close(self) -> None:
        for what, closing in (("the consumer", self._group), ("the DLQ producer", self._dlq)):
            if closing is None:
                continue
            try:
                await closing.close()
            except Exception as exc:  # noqa: BLE001 (closing: report, go on)
                log.warning("closing %s: %s", what, exc)

    async def on_assigned(self, partitions: set[Partition]) -> None:
        """The group's hook: new partitions (paused at once while the store is away)."""
        log.info("assigned %d partition(s): %s", len(partitions), _tps(partitions))
        for topic in {topic for topic, _ in partitions}:
            self.counters.set("kpp_sink_consumer_lag", 0, topic=topic)  # until the first measurement
        if self.store_down and partitions:
            self._group.pause(partitions)

    async def on_revoked(self, partitions: set[Partition]) -> None:
        """The group's hook, awaited before partitions go: settle the write in flight, write
        what is held, commit it all, then forget what is left of the revoked partitions."""
        if not partitions:
            return
        self.counters.inc("kpp_sink_rebalances_total")
        log.info("revoking %d partition(s): %s", len(partitions), _tps(partitions))
        async with self._lock:
            try:
                await self._settle_inflight()
                if not self.store_down and (self._retry or len(self.sink)):
                    await self._flush_and_commit()
            except StoreUnavailable as exc:
                log.warning("store unavailable during a rebalance (%s): buffered records of revoked "
                            "partitions are left to their next owner", exc)
            await self._commit_unconfirmed()
            self._forget(partitions)

    def _forget(self, revoked: set[Partition]) -> None:
        gone = {(topic, partition) for topic, partition in revoked}
        dropped = self.sink.drop_partitions(gone)
        if self._retry is not None:
            keep = [i for i in self._retry if i.tp not in gone]
            dropped += len(self._retry) - len(keep)
            self._retry = keep or None
        if dropped:
            self.counters.inc("kpp_sink_dropped_on_revoke_total", dropped)
        for tp in gone:
            self._committed.pop(tp, None)
            self._to_commit.pop(tp, None)
            self._acked.pop(tp, None)

    # -- the loop -------------------------------------------------------------------------------

    def run(self, stop: threading.Event, on_flush: Callable[[FlushResult], None] | None = None) -> None:
        """Consume until `stop` is set (a thread's call: the loop runs its own event loop)."""
        asyncio.run(self.run_async(stop, on_flush))

    async def run_async(self, stop: threading.Event,
                        on_flush: Callable[[FlushResult], None] | None = None) -> None:
        self._on_flush = on_flush
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kpp-sink-write")
        try:
            await self._open()
            self.started.set()
            await self._consume(stop)
            await self._shutdown_flush()
        finally:
            await self._confirm_commits()
            await self._close()  # may revoke (and settle) before the write thread goes
            self._executor.shutdown(wait=True)

    async def _consume(self, stop: threading.Event) -> None:
        group = self._group
        sink = self.sink
        add = sink.add
        to_item = self.to_item
        contract_item = self._contract_item
        raw_topic = self.settings.raw_topic
        counters = self.counters
        last_lag = 0.0
        limits = self.settings.timestamps
        while not stop.is_set():
            now = self.loop_at = time.monotonic()  # liveness: the loop comes round (sinks/cli.py)
            limits.refresh(_now_ms())
            timeout_s = 0.2
            if self._inflight is not None or self._to_commit:
                timeout_s = 0.01  # notice the write's end soon: its commit waits for us
            elif self.store_down:
                timeout_s = max(0.0, min(timeout_s, self._next_attempt - now))
            batches = await group.getmany(timeout_s)
            async with self._lock:
                assignment = group.assignment()
                if self.store_down and assignment:
                    group.pause(assignment)  # a rebalance may have handed us new, unpaused partitions
                rewound = self._rewound
                rewound.clear()
                for tp, records in batches.items():
                    topic, partition = tp
                    if (topic, partition) in rewound or tp not in assignment:
                        continue  # re-read from the committed offset / revoked meanwhile
                    fast = self._fast if topic != raw_topic else None
                    for r in records:
                        # to_item's fast case inlined (a call and three attribute writes less per
                        # record); a record the fast path refuses goes to the contract path.
                        value = r.value
                        if fast is not None and value:
                            try:
                                fragment, points, skipped = fast(value)
                            except Exception:  # noqa: BLE001 (not the common shape: the contract path decides)
                                item = contract_item(topic, partition, r.offset, r.key, value)
                            else:
                                item = Item(topic, partition, r.offset, r.key, value, fragment, points, skipped)
                        else:
                            item = to_item(topic, partition, r.offset, r.key, value)
                        if item.skipped:
                            counters.inc("kpp_sink_points_skipped_total", item.skipped, reason="nonfinite")
                        if add(item):
                            # Full: hand it to the write thread now (or wait for the write in
                            # flight), so that batches keep their size whatever getmany returns.
                            await self._pump()
                            if (topic, partition) in rewound:
                                break  # the rest of this batch is re-read from the committed offset
                await self._pump()
                counters.set("kpp_sink_buffered_points", self.buffered_points)
                now = time.monotonic()
                if now - last_lag >= self.settings.lag_interval_s:
                    last_lag = now
                    await self._update_lag()

    @property
    def buffered_points(self) -> int:
        """Points held: the batch being filled, the batch in flight and a batch to retry."""
        held = self.sink.buffered_points + (self._inflight_points if self._inflight is not None else 0)
        if self._retry:
            held += sum(i.points for i in self._retry)
        return held

    async def _pump(self) -> None:
        """Drive the write pipeline: settle a finished write (commit, or keep it to retry),
        then start the next write: the batch to retry once its backoff is over, else the
        filled batch when it is due. Commits stay in batch order: a batch is started only
        when no older batch is in flight or waiting for a retry."""
        self._send_commit()  # what waited for the commit in flight, or a failed one
        if self._inflight is not None:
            if not self._inflight.done() and not self.sink.full():
                return  # keep consuming into the next batch while this one is written
            # Done, or the next batch is full: wait (memory stays bounded by two batches).
            await self._settle_inflight()
        now = time.monotonic()
        if self._retry is not None:
            if now >= self._next_attempt:
                self._start_write(self._retry)
                self._retry = None
            return
        if self.store_down and now >= self._next_attempt:
            # Nothing to retry (the DLQ failed and the batch is re-read from Kafka): go on.
            self._store_back()
        if self.store_down or not len(self.sink):
            return
        if self.sink.full():
            self._backlog = True  # batches close on size: we are behind
            self._start_write(self.sink.take())
        elif self.sink.due(now) or (self._backlog and await self._caught_up()):
            # The last batch of a backlog is not held back for the batch interval.
            self._backlog = False
            self._start_write(self.sink.take())

    async def _caught_up(self) -> bool:
        """Every assigned partition is read up to its last known high watermark."""
        group = self._group
        for tp in group.assignment():
            highwater = group.highwater(tp)
            if highwater is None:
                return False
            position = await group.position(tp)
            if position is None or position < highwater:
                return False
        return True

    def _start_write(self, items: list[Item]) -> None:
        assert self._inflight is None, "at most one write in flight"
        self._inflight_items = items
        self._inflight_points = sum(i.points for i in items)
        self._inflight_started = time.monotonic()
        self._inflight = asyncio.get_running_loop().run_in_executor(self._executor, write_items, self.writer, items)

    async def _settle_inflight(self) -> bool:
        """Wait for the write in flight, if any, and settle it: on success publish its DLQ
        records and commit its offsets; if the store did not take it, keep it for a retry (and
        pause). Returns False when something stays to be retried."""
        if self._inflight is None:
            return True
        future, items = self._inflight, self._inflight_items
        try:
            result = await future
        except StoreUnavailable as exc:
            self._retry = items
            self._unavailable(exc)
            return False
        finally:
            self._inflight = None
            self._inflight_items = []
        return await self._acknowledged(result, items, time.monotonic() - self._inflight_started)

    async def _acknowledged(self, result: FlushResult, items: list[Item], seconds: float) -> bool:
        """The store took the batch: DLQ its rejects, then commit. False if the DLQ failed (then
        the batch's partitions are re-read from the committed offsets)."""
        self.counters.set("kpp_sink_store_up", 1)
        self.counters.set("kpp_sink_last_flush_seconds", seconds)
        self.counters.observe("kpp_sink_write_duration_seconds", seconds)
        self.counters.inc("kpp_sink_batches_total", outcome="ok")
        self.counters.inc("kpp_sink_requests_total", result.requests)
        self.counters.inc("kpp_sink_points_written_total", result.written_points)
        self.counters.inc("kpp_sink_records_total", result.written_records, outcome="written")
        try:
            await self._publish_dlq(result.rejected)
        except Exception as exc:  # noqa: BLE001 (any failure: re-read from the committed offsets)
            log.error("cannot publish %d record(s) to %s (%s): re-reading from the committed offsets",
                      len(result.rejected), self.settings.dlq_topic, exc)
            # The batch being filled holds later records of the same partitions: they must not be
            # written (and committed) before the re-read ones, so they are re-read too.
            await self._rewind(set(result.commit) | {i.tp for i in self.sink.take()})
            self._unavailable(StoreUnavailable(f"DLQ publish failed: {exc}"))
            return False
        self._commit(result.commit)
        self.last_flush_wall = time.time()
        if self.store_down:
            self._store_back()
        self.backoff.reset()
        if self._on_flush is not None:
            self._on_flush(result)
        return True

    def _unavailable(self, exc: StoreUnavailable) -> None:
        self._last_error = exc
        delay = self.backoff.next_delay()
        self.counters.inc("kpp_sink_batches_total", outcome="unavailable")
        self.counters.inc("kpp_sink_retries_total")
        self.counters.set("kpp_sink_store_up", 0)
        if not self.store_down:
            log.warning("store unavailable (%s): pausing consumption, retrying with backoff", exc)
        else:
            log.info("store still unavailable (%s): next try in %.1f s", exc, delay)
        self.store_down = True
        self.counters.set("kpp_sink_paused", 1)
        assignment = self._group.assignment()
        if assignment:
            self._group.pause(assignment)
        self._next_attempt = time.monotonic() + delay

    def _store_back(self) -> None:
        log.info("store is back: resuming consumption")
        self.store_down = False
        self.counters.set("kpp_sink_paused", 0)
        paused = self._group.paused()
        if paused:
            self._group.resume(paused)

    async def _flush_and_commit(self) -> None:
        """Write and commit everything held (the write in flight, the batch to retry, the
        batch being filled), in this order. Raises StoreUnavailable, keeping what was not
        written for a retry."""
        if not await self._settle_inflight():
            raise StoreUnavailable(f"the batch in flight was not written: {self._last_error}")
        for take in (self._take_retry, self.sink.take):
            items = take()
            if items:
                self._start_write(items)
                if not await self._settle_inflight():
                    raise StoreUnavailable(str(self._last_error))

    def _take_retry(self) -> list[Item]:
        items, self._retry = self._retry or [], None
        return items

    async def _publish_dlq(self, rejected: list[Rejection]) -> None:
        if not rejected:
            return
        await self._dlq.publish(self.settings.dlq_topic,
                                [(dlq_key(r.item.key), self.dlq_message(r)) for r in rejected])
        for rejection in rejected:
            self.counters.inc("kpp_sink_dlq_total", reason=rejection.reason)
            if rejection.item.dropped:
                self.counters.inc("kpp_sink_points_dropped_total", rejection.item.dropped, reason=rejection.reason)
        self.counters.inc("kpp_sink_records_total", len(rejected), outcome="dlq")

    def dlq_message(self, rejection: Rejection) -> bytes:
        """The dead letter of a record (contracts/dlq.py, schema kube-proxy.dlq/v1): the reason,
        the original bytes, where they came from and, for a record the store refused, its
        answer."""
        item = rejection.item
        store = None
        if rejection.reason == "rejected":
            store = {"url": self.writer.url, "status": rejection.status, "answer": rejection.answer}
        return dead_letter(stage="sink", reason=rejection.reason, error=rejection.error, topic=item.topic,
                           partition=item.partition, offset=item.offset, key=item.key, value=item.value,
                           store=store, dead_lettered_ms=int(time.time() * 1000))

    # -- commits --------------------------------------------------------------------------------

    def _commit(self, offsets: Mapping[Partition, int]) -> None:
        """Commit acknowledged offsets (batches are acknowledged in order, so the highest offset
        per partition is the one to commit), in the background."""
        for tp, offset in offsets.items():
            if offset > self._to_commit.get(tp, -1):
                self._to_commit[tp] = offset
            if offset > self._acked.get(tp, -1):
                self._acked[tp] = offset
        self._send_commit()

    def _send_commit(self) -> None:
        """Start a commit of what is to commit, unless one is in flight (then the offsets wait
        for its answer and go with the next one) or a failed one waits to be sent again. The
        loop goes on reading while the coordinator writes it."""
        if self._commit_error is not None:
            error, self._commit_error = self._commit_error, None
            raise error
        if self._commit_task is not None or not self._to_commit or time.monotonic() < self._commit_retry_at:
            return
        assignment = self._group.assignment()
        payload = {tp: offset for tp, offset in self._to_commit.items() if tp in assignment}
        self._to_commit = {}
        if payload:
            self._commit_task = asyncio.ensure_future(self._commit_in_background(payload))

    async def _commit_in_background(self, payload: dict[Partition, int]) -> None:
        try:
            await self._commit_and_note(payload)
        except Exception as exc:  # noqa: BLE001 (a bug, not Kafka: the loop raises it, see _send_commit)
            self._commit_error = exc
            return
        finally:
            self._commit_task = None
        self._send_commit()  # what was acknowledged meanwhile

    async def _commit_and_note(self, payload: dict[Partition, int]) -> None:
        try:
            await self._group.commit(payload)
        except KppError as exc:
            self._commit_failed(exc)
            # Sent again (with anything newer) after a pause, as long as the partition is ours.
            assignment = self._group.assignment()
            for tp, offset in payload.items():
                if tp in assignment and offset > self._to_commit.get(tp, -1):
                    self._to_commit[tp] = offset
            self._commit_retry_at = time.monotonic() + 0.5
            return
        assignment = self._group.assignment()
        self._commit_done({tp: offset for tp, offset in payload.items() if tp in assignment})

    async def _commit_unconfirmed(self) -> None:
        """Commit, awaited, every acknowledged offset of an assigned partition the group has not
        confirmed (a commit in flight is awaited first; a failed one or one not sent yet goes
        now)."""
        if self._commit_task is not None:
            await asyncio.shield(self._commit_task)
        self._to_commit = {}
        assignment = self._group.assignment()
        payload = {tp: offset for tp, offset in self._acked.items()
                   if tp in assignment and offset > self._committed.get(tp, -1)}
        if not payload:
            return
        try:
            await self._group.commit(payload)
        except KppError as exc:  # the next owner re-reads, idempotently
            self._commit_failed(exc)
            return
        self._commit_done(payload)

    async def _confirm_commits(self) -> None:
        """Before closing: commit every acknowledged offset the group has not confirmed, so
        that leaving the group does not lose it."""
        if self._group is None or not self._acked:
            return
        try:
            await self._commit_unconfirmed()
        except Exception as exc:  # noqa: BLE001 (closing: the next owner re-reads, idempotently)
            self._commit_failed(exc)

    def _commit_failed(self, exc: Exception) -> None:
        # The data is in the store; the next owner re-writes it (idempotent).
        self.counters.inc("kpp_sink_commits_total", outcome="failed")
        log.warning("offset commit failed (%s): records may be written again", exc)

    def _commit_done(self, offsets: dict[Partition, int]) -> None:
        self.counters.inc("kpp_sink_commits_total", outcome="ok")
        for tp, offset in offsets.items():
            if offset >= self._committed.get(tp, -1):
                self._committed[tp] = offset

    async def _rewind(self, partitions: set[Partition]) -> None:
        """Seek the partitions back to their committed offsets (re-read). A commit may not have
        reached the group yet: its offset counts too (the store acknowledged everything before
        it), so that commits never go backwards."""
        self._rewound |= partitions
        assignment = self._group.assignment()
        for tp in partitions:
            if tp not in assignment:
                continue
            committed = await self._group.committed(tp)
            ours = self._acked.get(tp, -1)
            if ours >= 0 and (committed is None or ours > committed):
                committed = ours
            if committed is None:
                await self._group.seek_to_beginning(tp)
            else:
                self._group.seek(tp, committed)

    async def _update_lag(self) -> None:
        per_topic: dict[str, int] = {}
        for tp in self._group.assignment():
            highwater = self._group.highwater(tp)
            if highwater is None:
                continue
            position = await self._group.position(tp)
            if position is None:
                continue
            per_topic[tp[0]] = per_topic.get(tp[0], 0) + max(0, highwater - position)
        for topic, lag in per_topic.items():
            self.counters.set("kpp_sink_consumer_lag", lag, topic=topic)

    async def _shutdown_flush(self) -> None:
        """On stop, try for a while to write what is held; what stays is re-read later."""
        deadline = time.monotonic() + self.settings.shutdown_flush_s
        error = None
        while time.monotonic() < deadline:
            try:
                async with self._lock:
                    await self._flush_and_commit()
                return
            except StoreUnavailable as exc:
                error = exc
                await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        held = len(self.sink) + len(self._retry or ())
        if held:
            log.warning("stopping: store unavailable (%s); %d buffered record(s) stay in Kafka, uncommitted",
                        error, held)

    def committed_offsets(self) -> dict[Partition, int]:
        return dict(self._committed)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _tps(tps: set[Partition]) -> str:
    return ", ".join(sorted(f"{topic}[{partition}]" for topic, partition in tps))
