"""The sink's consumer loop: a plain kafka-python consumer in a consumer group with manual
commits, feeding a BatchingSink, with the HTTP write pipelined on one write thread.

    poll → decode+encode (fastpath, else the contract path) → sink.add ─┐ full/due
       ▲                                                                 ▼
       │        write thread: write_items(batch N) ─→ ok ─→ (our thread) DLQ → commit N
       │        meanwhile our thread polls and fills batch N+1           │ StoreUnavailable
       └── paused while the store is away ◀──── N waits in _retry ◀──────┘ (backoff, jitter)

- At most one batch is in flight. Offsets are committed only after the store acknowledged
  the batch and the DLQ got its records, strictly in batch order: a newer batch is started
  only when no older one is in flight or waiting for its retry. At-least-once, nothing lost.
  The commit is asynchronous (its answer comes in a later poll); what is not confirmed when
  the loop stops is committed again, synchronously, before the consumer closes.
- Records are decoded from the fetch by aiokafka's C decoder where kafka-python allows it
  (sinks/fetch.py), and encoded by the fast path inlined in _consume.
- While the store is down the assigned partitions are paused and the loop keeps polling
  (heartbeats, rebalances). Memory: the batch in flight (or to retry) plus the batch being
  filled, each bounded by the batch limits plus one poll (a full batch waits for the write
  in flight).
- A rebalance first settles the write in flight, flushes and commits what is held (the
  listener runs on kafka-python's IO thread: it awaits the commit); what cannot be flushed
  is dropped for the revoked partitions, and their new owner re-reads it from the committed
  offset.
- If the DLQ publish fails after a write, nothing is committed: the partitions are sought
  back to the last offsets committed (or handed to commit_async: acknowledged), the batch
  being filled is dropped, and all is re-read (re-writes are idempotent).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Mapping

from contracts.codec import DecodeError
from contracts.derived import DerivedRecord
from contracts.dlq import dead_letter, dlq_key
from kafka_io.connection import KafkaConnection
from contracts.records import ScrapeRecord
from runtime.selfmetrics import Counters
from sinks.encode import Unrepresentable
from sinks.fastpath import fast_path_for
from sinks.fetch import install as install_fast_decoding
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
    client_id: str = "kpp-sink"
    # Fetching. kafka-python keeps one fetch in flight per broker and sends the next one only
    # when the previous one is drained; a fetch that holds only caught-up partitions makes
    # the others wait up to fetch_max_wait_ms (Kafka's default of 500 ms halved the
    # throughput of a catch-up). A poll returns at most max_poll_records; batches are cut at
    # their limits whatever a poll returns.
    max_poll_records: int = 2000
    max_partition_fetch_bytes: int = 1024 * 1024
    fetch_max_bytes: int = 50 * 1024 * 1024
    fetch_max_wait_ms: int = 100
    revoke_flush_attempts: int = 1
    lag_interval_s: float = 2.0
    # A sink killed without leaving the group holds its partitions until this expires.
    session_timeout_ms: int = 10_000
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
        self._committed: dict[tuple[str, int], int] = {}  # confirmed by the group coordinator
        # The next offset of every partition whose records the store (and the DLQ) acknowledged:
        # what the group should hold. Commits are asynchronous, one at a time (they coalesce
        # meanwhile, and a failed one is sent again); what is not confirmed when the loop stops
        # is committed synchronously before the consumer closes.
        self._acked: dict[tuple[str, int], int] = {}
        self._commit_in_flight = False
        self._commit_retry_at = 0.0
        self.fast_decoding = False
        self._consumer = None
        self._producer = None
        self.last_flush_wall: float | None = None
        self.loop_at: float | None = None  # monotonic time the consume loop last came round
        self.started = threading.Event()
        self._on_flush: Callable[[FlushResult], None] | None = None
        settings.timestamps.refresh(_now_ms())
        self._fast = fast_path_for(writer, settings.extra_labels, settings.timestamps)
        # The write pipeline: at most one batch in flight on the write thread; a batch the
        # store did not take waits in _retry and is written again before anything newer.
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: Future | None = None
        self._inflight_items: list[Item] = []
        self._inflight_started = 0.0
        self._inflight_points = 0
        self._retry: list[Item] | None = None
        self._last_error: Exception | None = None
        # Acknowledged offsets not committed yet, and partitions to seek back to their committed
        # offset: the rebalance listener (IO thread) only records them, our thread acts.
        self._to_commit: dict[tuple[str, int], int] = {}  # acknowledged, not yet sent
        self._to_rewind: set[tuple[str, int]] = set()
        self._in_listener = False
        self._rewound: set[tuple[str, int]] = set()  # seeked back during this poll's records
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

    def _open(self) -> None:
        from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, KafkaProducer

        loop = self

        # kafka-python 3 calls the listener on its IO thread (while our thread waits in
        # poll()), where a blocking consumer call (commit, committed) raises: the listener
        # is async and awaits its commit.
        class Listener(AsyncConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):  # noqa: ANN001
                await loop._on_revoked_async(revoked)

            async def on_partitions_assigned(self, assigned):  # noqa: ANN001
                loop._on_assigned(assigned)

        kwargs = self.connection.kafka_python_kwargs()
        self._consumer = KafkaConsumer(
            **kwargs, group_id=self.settings.group_id, client_id=self.settings.client_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=self.settings.max_poll_records,
            max_partition_fetch_bytes=self.settings.max_partition_fetch_bytes,
            fetch_max_bytes=self.settings.fetch_max_bytes,
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            max_poll_interval_ms=300_000,
            # Topics created after the sink started (the stream stage comes up later) are
            # noticed within this time.
            metadata_max_age_ms=30_000,
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(1000, self.settings.session_timeout_ms // 3),
            allow_auto_create_topics=False,
        )
        self.fast_decoding = install_fast_decoding(self._consumer)
        self._consumer.subscribe(list(self.settings.topics), listener=Listener())
        self._producer = KafkaProducer(**self.connection.kafka_producer_kwargs(),
                                       client_id=self.settings.client_id + "-dlq", acks="all",
                                       linger_ms=0, compression_type="gzip")

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception as exc:  # noqa: BLE001 (closing: report, go on)
                log.warning("closing the consumer: %s", exc)
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the DLQ producer: %s", exc)

    def _on_assigned(self, assigned) -> None:  # noqa: ANN001
        log.info("assigned %d partition(s): %s", len(assigned), _tps(assigned))
        for topic in {tp.topic for tp in assigned}:
            self.counters.set("kpp_sink_consumer_lag", 0, topic=topic)  # until the first measurement
        if self.store_down and assigned:
            self._consumer.pause(*assigned)

    async def _on_revoked_async(self, revoked) -> None:  # noqa: ANN001
        """Before partitions go: settle the write in flight, write what is held, commit it all
        (awaited on the IO thread), then forget what is left of the revoked partitions."""
        if not revoked:
            return
        self.counters.inc("kpp_sink_rebalances_total")
        log.info("revoking %d partition(s): %s", len(revoked), _tps(revoked))
        self._in_listener = True
        try:
            try:
                self._settle_inflight()
                if not self.store_down and (self._retry or len(self.sink)):
                    self._flush_and_commit()
            except StoreUnavailable as exc:
                log.warning("store unavailable during a rebalance (%s): buffered records of revoked "
                            "partitions are left to their next owner", exc)
        finally:
            self._in_listener = False
        await self._commit_pending_async()
        self._forget(revoked)

    def _forget(self, revoked) -> None:  # noqa: ANN001
        gone = {(tp.topic, tp.partition) for tp in revoked}
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
        self._to_rewind -= gone

    # -- the loop -------------------------------------------------------------------------------

    def run(self, stop: threading.Event, on_flush: Callable[[FlushResult], None] | None = None) -> None:
        self._on_flush = on_flush
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kpp-sink-write")
        try:
            self._open()
            self.started.set()
            self._consume(stop)
            self._shutdown_flush()
        finally:
            self._confirm_commits()
            self._close()  # may revoke (and settle) before the write thread goes
            self._executor.shutdown(wait=True)

    def _consume(self, stop: threading.Event) -> None:
        consumer = self._consumer
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
            timeout_ms = 200
            if self._inflight is not None or self._commit_in_flight or self._to_commit:
                # Notice the write's end soon (its commit waits for us), and a commit's answer
                # (it is handed to us in poll; the next commit waits for it).
                timeout_ms = 10
            elif self.store_down:
                timeout_ms = max(0, min(timeout_ms, int((self._next_attempt - now) * 1000)))
            batches = consumer.poll(timeout_ms=timeout_ms)
            if self.store_down:
                # A rebalance may have handed us new, unpaused partitions.
                assignment = consumer.assignment()
                if assignment:
                    consumer.pause(*assignment)
            rewound = self._rewound
            rewound.clear()
            for tp, records in batches.items():
                topic, partition = tp.topic, tp.partition
                if (topic, partition) in rewound:
                    continue
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
                        # flight), so that batches keep their size whatever a poll returns.
                        self._pump()
                        if (topic, partition) in rewound:
                            break  # the rest of this poll is re-read from the committed offset
            self._pump()
            counters.set("kpp_sink_buffered_points", self.buffered_points)
            now = time.monotonic()
            if now - last_lag >= self.settings.lag_interval_s:
                last_lag = now
                self._update_lag()

    @property
    def buffered_points(self) -> int:
        """Points held: the batch being filled, the batch in flight and a batch to retry."""
        held = self.sink.buffered_points + (self._inflight_points if self._inflight is not None else 0)
        if self._retry:
            held += sum(i.points for i in self._retry)
        return held

    def _pump(self) -> None:
        """Drive the write pipeline: settle a finished write (commit, or keep it to retry),
        then start the next write: the batch to retry once its backoff is over, else the
        filled batch when it is due. Commits stay in batch order: a batch is started only
        when no older batch is in flight or waiting for a retry."""
        if self._to_rewind and not self._in_listener:
            self._rewind_now()
        if not self._in_listener:
            self._send_commit()  # what waited for the commit in flight, or a failed one
        if self._inflight is not None:
            if not self._inflight.done():
                if not self.sink.full():
                    return  # keep consuming into the next batch while this one is written
                # The next batch is full: wait (memory stays bounded by two batches).
                wait([self._inflight])
            self._settle_inflight()
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
        elif self.sink.due(now) or (self._backlog and self._caught_up()):
            # The last batch of a backlog is not held back for the batch interval.
            self._backlog = False
            self._start_write(self.sink.take())

    def _caught_up(self) -> bool:
        """Every assigned partition is read up to its last known high watermark."""
        consumer = self._consumer
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                return False
            position = consumer.position(tp, timeout_ms=0)
            if position is None or position < highwater:
                return False
        return True

    def _start_write(self, items: list[Item]) -> None:
        assert self._inflight is None, "at most one write in flight"
        self._inflight_items = items
        self._inflight_points = sum(i.points for i in items)
        self._inflight_started = time.monotonic()
        self._inflight = self._executor.submit(write_items, self.writer, items)

    def _settle_inflight(self) -> bool:
        """Wait for the write in flight, if any, and settle it: on success publish its DLQ
        records and commit its offsets; if the store did not take it, keep it for a retry (and
        pause). Returns False when something stays to be retried."""
        if self._inflight is None:
            return True
        future, items = self._inflight, self._inflight_items
        try:
            result = future.result()
        except StoreUnavailable as exc:
            self._retry = items
            self._unavailable(exc)
            return False
        finally:
            self._inflight = None
            self._inflight_items = []
        return self._acknowledged(result, items, time.monotonic() - self._inflight_started)

    def _acknowledged(self, result: FlushResult, items: list[Item], seconds: float) -> bool:
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
            self._publish_dlq(result.rejected)
        except Exception as exc:  # noqa: BLE001 (any failure: re-read from the committed offsets)
            log.error("cannot publish %d record(s) to %s (%s): re-reading from the committed offsets",
                      len(result.rejected), self.settings.dlq_topic, exc)
            # The batch being filled holds later records of the same partitions: they must not be
            # written (and committed) before the re-read ones, so they are re-read too.
            self._to_rewind |= set(result.commit) | {i.tp for i in self.sink.take()}
            if not self._in_listener:
                self._rewind_now()
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
        assignment = self._consumer.assignment()
        if assignment:
            self._consumer.pause(*assignment)
        self._next_attempt = time.monotonic() + delay

    def _store_back(self) -> None:
        log.info("store is back: resuming consumption")
        self.store_down = False
        self.counters.set("kpp_sink_paused", 0)
        paused = self._consumer.paused()
        if paused:
            self._consumer.resume(*paused)

    def _flush_and_commit(self) -> None:
        """Synchronously write and commit everything held (the write in flight, the batch to
        retry, the batch being filled), in this order. Raises StoreUnavailable, keeping what was
        not written for a retry."""
        if not self._settle_inflight():
            raise StoreUnavailable(f"the batch in flight was not written: {self._last_error}")
        for take in (self._take_retry, self.sink.take):
            items = take()
            if items:
                self._start_write(items)
                if not self._settle_inflight():
                    raise StoreUnavailable(str(self._last_error))

    def _take_retry(self) -> list[Item]:
        items, self._retry = self._retry or [], None
        return items

    def _publish_dlq(self, rejected: list[Rejection]) -> None:
        if not rejected:
            return
        futures = []
        for rejection in rejected:
            futures.append(self._producer.send(self.settings.dlq_topic, key=dlq_key(rejection.item.key),
                                               value=self.dlq_message(rejection)))
        self._producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
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

    def _commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Commit acknowledged offsets (batches are acknowledged in order, so the highest offset
        per partition is the one to commit). In the rebalance listener they are only recorded
        and committed by `_commit_pending_async`."""
        for tp, offset in offsets.items():
            if offset > self._to_commit.get(tp, -1):
                self._to_commit[tp] = offset
            if offset > self._acked.get(tp, -1):
                self._acked[tp] = offset
        if not self._in_listener:
            self._send_commit()

    def _send_commit(self) -> None:
        """Hand what is to commit to commit_async, unless a commit is in flight (then it waits
        for its answer and goes with the offsets that came meanwhile) or a failed one waits to
        be sent again. The consumer goes on reading while the coordinator writes it."""
        if self._commit_in_flight or not self._to_commit or time.monotonic() < self._commit_retry_at:
            return
        payload = self._commit_payload()
        if not payload:
            return
        from kafka.errors import KafkaError

        self._commit_in_flight = True
        try:
            self._consumer.commit_async(payload, callback=self._on_commit)
        except KafkaError as exc:
            self._on_commit(payload, exc)

    def _on_commit(self, payload: dict, response: object) -> None:
        """commit_async's answer (kafka-python hands it over in a later poll, on our thread)."""
        self._commit_in_flight = False
        assignment = self._consumer.assignment()
        if isinstance(response, Exception):
            self._commit_failed(response)
            # Sent again (with anything newer) after a pause, as long as the partition is ours.
            for tp, meta in payload.items():
                key = (tp.topic, tp.partition)
                if tp in assignment and meta.offset > self._to_commit.get(key, -1):
                    self._to_commit[key] = meta.offset
            self._commit_retry_at = time.monotonic() + 0.5
            return
        self._commit_done({tp: meta for tp, meta in payload.items() if tp in assignment})

    def _unconfirmed_payload(self) -> dict:
        """Acknowledged offsets of assigned partitions that the group has not confirmed."""
        from kafka.structs import OffsetAndMetadata, TopicPartition

        assignment = self._consumer.assignment()
        payload = {}
        for (topic, partition), offset in self._acked.items():
            tp = TopicPartition(topic, partition)
            if tp in assignment and offset > self._committed.get((topic, partition), -1):
                payload[tp] = OffsetAndMetadata(offset, "", -1)
        return payload

    def _confirm_commits(self) -> None:
        """Before closing: commit, synchronously, every acknowledged offset the group has not
        confirmed (a commit in flight, failed, or not sent yet), so that closing the consumer
        does not lose it."""
        if self._consumer is None or not self._acked:
            return
        try:
            payload = self._unconfirmed_payload()
            if not payload:
                return
            self._consumer.commit(payload)
        except Exception as exc:  # noqa: BLE001 (closing: the next owner re-reads, idempotently)
            self._commit_failed(exc)
            return
        self._to_commit = {}
        self._commit_done(payload)

    async def _commit_pending_async(self) -> None:
        """In the rebalance listener: commit every acknowledged offset not confirmed yet (a
        commit of the consumer thread may be in flight or have failed), awaited."""
        self._to_commit = {}
        payload = self._unconfirmed_payload()
        if not payload:
            return
        from kafka.errors import KafkaError

        try:
            await self._consumer.commit_async(payload)
        except KafkaError as exc:
            self._commit_failed(exc)
            return
        self._commit_done(payload)

    def _commit_payload(self) -> dict:
        from kafka.structs import OffsetAndMetadata, TopicPartition

        assignment = self._consumer.assignment()
        payload = {}
        for (topic, partition), offset in self._to_commit.items():
            tp = TopicPartition(topic, partition)
            if tp in assignment:
                payload[tp] = OffsetAndMetadata(offset, "", -1)
        self._to_commit = {}
        return payload

    def _commit_failed(self, exc: Exception) -> None:
        # The data is in the store; the next owner re-writes it (idempotent).
        self.counters.inc("kpp_sink_commits_total", outcome="failed")
        log.warning("offset commit failed (%s): records may be written again", exc)

    def _commit_done(self, payload: dict) -> None:
        self.counters.inc("kpp_sink_commits_total", outcome="ok")
        for tp, meta in payload.items():
            key = (tp.topic, tp.partition)
            if meta.offset >= self._committed.get(key, -1):
                self._committed[key] = meta.offset

    def _rewind_now(self) -> None:
        """Seek the partitions of `_to_rewind` back to their committed offsets (re-read). An
        asynchronous commit may not have reached the group yet: its offset counts too (the
        store acknowledged everything before it), so that commits never go backwards."""
        from kafka.structs import TopicPartition

        partitions, self._to_rewind = self._to_rewind, set()
        self._rewound |= partitions
        assignment = self._consumer.assignment()
        for (topic, partition) in partitions:
            tp = TopicPartition(topic, partition)
            if tp not in assignment:
                continue
            committed = self._consumer.committed(tp)
            ours = self._acked.get((topic, partition), -1)
            if ours >= 0 and (committed is None or ours > committed):
                committed = ours
            if committed is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)

    def _update_lag(self) -> None:
        per_topic: dict[str, int] = {}
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            try:
                position = self._consumer.position(tp, timeout_ms=1000)
            except Exception:  # noqa: BLE001 (a gauge is not worth failing for)
                continue
            if position is None:
                continue
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, highwater - position)
        for topic, lag in per_topic.items():
            self.counters.set("kpp_sink_consumer_lag", lag, topic=topic)

    def _shutdown_flush(self) -> None:
        """On stop, try for a while to write what is held; what stays is re-read later."""
        deadline = time.monotonic() + self.settings.shutdown_flush_s
        error = None
        while time.monotonic() < deadline:
            try:
                self._flush_and_commit()
                return
            except StoreUnavailable as exc:
                error = exc
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        held = len(self.sink) + len(self._retry or ())
        if held:
            log.warning("stopping: store unavailable (%s); %d buffered record(s) stay in Kafka, uncommitted",
                        error, held)

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        return dict(self._committed)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _tps(tps) -> str:  # noqa: ANN001
    return ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in tps))
