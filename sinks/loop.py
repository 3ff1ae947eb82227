"""The sink's consumer loop: a plain kafka-python consumer in a consumer group with manual
commits, feeding a BatchingSink.

    poll → decode → encode (pure) → sink.add ─┐
       ▲                                       ├ due? → sink.flush() → DLQ (sync) → commit
       └── paused while the store is away ◀────┘          │ StoreUnavailable
                                                          └→ pause, back off (jitter), retry

- Offsets are committed only after the store acknowledged the batch and the DLQ got its
  records: at-least-once, nothing lost.
- While the store is down the assigned partitions are paused and the loop keeps polling
  (heartbeats, rebalances), so memory stays bounded by the batch limits plus one poll.
- A rebalance first tries to flush and commit what is buffered; what cannot be flushed is
  dropped for the revoked partitions, and their new owner re-reads it from the committed
  offset.
- If anything fails after the buffer was handed over (DLQ publish), the consumer seeks back
  to the committed offsets and re-reads: re-writes are idempotent.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

from contracts.codec import DecodeError, dumps
from contracts.derived import DerivedRecord
from contracts.kafka import KafkaConnection
from contracts.records import ScrapeRecord
from contracts.selfmetrics import Counters
from sinks.encode import Unrepresentable
from sinks.series import Point, derived_points, raw_points
from sinks.sink import Backoff, BatchingSink, FlushResult, Item, Rejection
from sinks.writers import StoreUnavailable, Writer

log = logging.getLogger("kpp.sink")

DLQ_SCHEMA = "kube-proxy.dlq/v1"


@dataclass(kw_only=True)
class LoopSettings:
    topics: tuple[str, ...]
    group_id: str
    dlq_topic: str
    raw_topic: str | None = None  # records of this topic are raw scrapes (--raw)
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    client_id: str = "kpp-sink"
    max_poll_records: int = 2000
    revoke_flush_attempts: int = 1
    lag_interval_s: float = 2.0
    # A sink killed without leaving the group holds its partitions until this expires.
    session_timeout_ms: int = 10_000
    shutdown_flush_s: float = 10.0


def describe_metrics(counters: Counters) -> None:
    for name, kind, text in (
        ("kpp_sink_points_written_total", "counter", "Points the store acknowledged."),
        ("kpp_sink_records_total", "counter", "Kafka records handled, by outcome (written, empty, dlq)."),
        ("kpp_sink_batches_total", "counter", "Batches flushed, by outcome (ok, unavailable)."),
        ("kpp_sink_requests_total", "counter", "Write requests sent to the store (a rejected batch is split)."),
        ("kpp_sink_retries_total", "counter", "Flushes retried after the store was unavailable."),
        ("kpp_sink_dlq_total", "counter", "Records sent to the dead-letter topic, by reason."),
        ("kpp_sink_points_skipped_total", "counter", "Points the protocol cannot carry (NaN/Inf in Influx)."),
        ("kpp_sink_commits_total", "counter", "Offset commits, by outcome (ok, failed)."),
        ("kpp_sink_rebalances_total", "counter", "Partition revocations seen."),
        ("kpp_sink_dropped_on_revoke_total", "counter", "Buffered records dropped on revoke (re-read by the new owner)."),
        ("kpp_sink_consumer_lag", "gauge", "Records in Kafka not yet fetched, per topic (highwater - position)."),
        ("kpp_sink_store_up", "gauge", "1 when the last write to the store succeeded."),
        ("kpp_sink_buffered_points", "gauge", "Points waiting in the batch."),
        ("kpp_sink_paused", "gauge", "1 while consumption is paused because the store is away."),
        ("kpp_sink_last_flush_seconds", "gauge", "Duration of the last successful flush."),
    ):
        counters.describe(name, kind, text)


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
        self._committed: dict[tuple[str, int], int] = {}
        self._consumer = None
        self._producer = None
        self.last_flush_wall: float | None = None
        self.started = threading.Event()

    # -- decoding (pure apart from the writer's encoder) -------------------------------------

    def to_item(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> Item:
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
        item.points = len(points) - item.skipped
        return item

    def points_of(self, topic: str, value: bytes | None) -> list[Point]:
        if value is None:
            raise DecodeError("empty message (tombstone)")
        if self.settings.raw_topic is not None and topic == self.settings.raw_topic:
            return raw_points(ScrapeRecord.decode(value), self.settings.extra_labels)
        return derived_points(DerivedRecord.decode(value), self.settings.extra_labels)

    # -- Kafka --------------------------------------------------------------------------------

    def _open(self) -> None:
        from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer

        loop = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):  # noqa: ANN001
                loop._on_revoked(revoked)

            def on_partitions_assigned(self, assigned):  # noqa: ANN001
                loop._on_assigned(assigned)

        kwargs = self.connection.kafka_python_kwargs()
        self._consumer = KafkaConsumer(
            **kwargs, group_id=self.settings.group_id, client_id=self.settings.client_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_poll_records=self.settings.max_poll_records,
            max_poll_interval_ms=300_000,
            # Topics created after the sink started (the stream stage comes up later) are
            # noticed within this time.
            metadata_max_age_ms=30_000,
            session_timeout_ms=self.settings.session_timeout_ms,
            heartbeat_interval_ms=max(1000, self.settings.session_timeout_ms // 3),
            allow_auto_create_topics=False,
        )
        self._consumer.subscribe(list(self.settings.topics), listener=Listener())
        self._producer = KafkaProducer(**kwargs, client_id=self.settings.client_id + "-dlq", acks="all",
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

    def _on_revoked(self, revoked) -> None:  # noqa: ANN001
        if not revoked:
            return
        self.counters.inc("kpp_sink_rebalances_total")
        log.info("revoking %d partition(s): %s", len(revoked), _tps(revoked))
        if len(self.sink) and not self.store_down:
            try:
                self._flush_and_commit()
            except StoreUnavailable as exc:
                log.warning("store unavailable during a rebalance (%s): buffered records of revoked "
                            "partitions are left to their next owner", exc)
        dropped = self.sink.drop_partitions((tp.topic, tp.partition) for tp in revoked)
        if dropped:
            self.counters.inc("kpp_sink_dropped_on_revoke_total", dropped)
        for tp in revoked:
            self._committed.pop((tp.topic, tp.partition), None)

    # -- the loop -------------------------------------------------------------------------------

    def run(self, stop: threading.Event, on_flush: Callable[[FlushResult], None] | None = None) -> None:
        self._on_flush = on_flush
        self._open()
        self.started.set()
        last_lag = 0.0
        try:
            while not stop.is_set():
                now = time.monotonic()
                timeout_ms = 200
                if self.store_down:
                    timeout_ms = max(0, min(200, int((self._next_attempt - now) * 1000)))
                batches = self._consumer.poll(timeout_ms=timeout_ms)
                if self.store_down:
                    # A rebalance may have handed us new, unpaused partitions.
                    assignment = self._consumer.assignment()
                    if assignment:
                        self._consumer.pause(*assignment)
                for tp, records in batches.items():
                    for r in records:
                        item = self.to_item(tp.topic, tp.partition, r.offset, r.key, r.value)
                        if item.skipped:
                            self.counters.inc("kpp_sink_points_skipped_total", item.skipped, reason="nonfinite")
                        self.sink.add(item)
                self.counters.set("kpp_sink_buffered_points", self.sink.buffered_points)
                now = time.monotonic()
                if self.sink.due(now) and (not self.store_down or now >= self._next_attempt):
                    self._try_flush()
                if now - last_lag >= self.settings.lag_interval_s:
                    last_lag = now
                    self._update_lag()
            self._shutdown_flush()
        finally:
            self._close()

    def _try_flush(self) -> None:
        try:
            self._flush_and_commit()
        except StoreUnavailable as exc:
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
            return
        if self.store_down:
            log.info("store is back: resuming consumption")
            self.store_down = False
            self.counters.set("kpp_sink_paused", 0)
            paused = self._consumer.paused()
            if paused:
                self._consumer.resume(*paused)
        self.backoff.reset()

    def _flush_and_commit(self) -> None:
        started = time.monotonic()
        result = self.sink.flush()  # raises StoreUnavailable with the buffer intact
        self.counters.set("kpp_sink_store_up", 1)
        self.counters.set("kpp_sink_last_flush_seconds", time.monotonic() - started)
        self.counters.inc("kpp_sink_batches_total", outcome="ok")
        self.counters.inc("kpp_sink_requests_total", result.requests)
        self.counters.inc("kpp_sink_points_written_total", result.written_points)
        self.counters.inc("kpp_sink_records_total", result.written_records, outcome="written")
        try:
            self._publish_dlq(result.rejected)
        except Exception as exc:  # noqa: BLE001 (any failure: re-read from the committed offsets)
            log.error("cannot publish %d record(s) to %s (%s): re-reading from the committed offsets",
                      len(result.rejected), self.settings.dlq_topic, exc)
            self._rewind(result.commit)
            raise StoreUnavailable(f"DLQ publish failed: {exc}") from None
        self._commit(result.commit)
        self.last_flush_wall = time.time()
        if self._on_flush is not None:
            self._on_flush(result)

    def _publish_dlq(self, rejected: list[Rejection]) -> None:
        if not rejected:
            return
        futures = []
        for rejection in rejected:
            futures.append(self._producer.send(self.settings.dlq_topic, key=rejection.item.key,
                                               value=self.dlq_message(rejection)))
        self._producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
        for rejection in rejected:
            self.counters.inc("kpp_sink_dlq_total", reason=rejection.reason)
        self.counters.inc("kpp_sink_records_total", len(rejected), outcome="dlq")

    def dlq_message(self, rejection: Rejection) -> bytes:
        item = rejection.item
        message: dict = {
            "schema": DLQ_SCHEMA,
            "stage": "sink",
            "reason": rejection.reason,
            "error": rejection.error,
            "store": None,
            "source": {"topic": item.topic, "partition": item.partition, "offset": item.offset,
                       "key": _text(item.key)},
            "value": None,
            "value_base64": None,
            "dead_lettered_ms": int(time.time() * 1000),
        }
        if rejection.reason == "rejected":
            message["store"] = {"url": self.writer.url, "status": rejection.status, "answer": rejection.answer}
        text = _text(item.value)
        if text is not None:
            message["value"] = text
        else:
            message["value_base64"] = base64.b64encode(item.value).decode("ascii")
        return dumps(message)

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        if not offsets:
            return
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata, TopicPartition

        assignment = self._consumer.assignment()
        payload = {}
        for (topic, partition), offset in offsets.items():
            tp = TopicPartition(topic, partition)
            if tp in assignment:
                payload[tp] = OffsetAndMetadata(offset, "", -1)
        if not payload:
            return
        try:
            self._consumer.commit(payload)
        except KafkaError as exc:
            # The data is in the store; the next owner re-writes it (idempotent).
            self.counters.inc("kpp_sink_commits_total", outcome="failed")
            log.warning("offset commit failed (%s): records may be written again", exc)
            return
        self.counters.inc("kpp_sink_commits_total", outcome="ok")
        for tp, meta in payload.items():
            self._committed[(tp.topic, tp.partition)] = meta.offset

    def _rewind(self, offsets: Mapping[tuple[str, int], int]) -> None:
        from kafka.structs import TopicPartition

        for (topic, partition) in offsets:
            tp = TopicPartition(topic, partition)
            committed = self._consumer.committed(tp)
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
        """On stop, try for a while to write what is buffered; what stays is re-read later."""
        deadline = time.monotonic() + self.settings.shutdown_flush_s
        error = None
        while len(self.sink) and time.monotonic() < deadline:
            try:
                self._flush_and_commit()
                return
            except StoreUnavailable as exc:
                error = exc
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        if len(self.sink):
            log.warning("stopping: store unavailable (%s); %d buffered record(s) stay in Kafka, uncommitted",
                        error, len(self.sink))

    def committed_offsets(self) -> dict[tuple[str, int], int]:
        return dict(self._committed)


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _tps(tps) -> str:  # noqa: ANN001
    return ", ".join(sorted(f"{tp.topic}[{tp.partition}]" for tp in tps))
