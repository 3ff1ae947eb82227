"""Faust glue: topics, the two tables, the two agents and the idle timer. Each agent takes the
Kafka messages in batches, hands each message to streams.stages and flushes the stage once
per batch: outputs are acknowledged together, then each changed state is written once and
its changelog record acknowledged (see streams/stages.py for why that order is crash-safe).
Only then are the batch's events acknowledged to Faust (whose commits follow its acks).
An event the stage fails on goes to the DLQ with the reason; a batch Kafka will not take
stops the worker before it is acknowledged.

Batches come from `noack_take`, and the agents ack each event themselves after the flush.
`take_events` acks a batch in a `finally` around its `yield`: when a worker stops (SIGTERM,
or a rebalance that stops the agent) while a batch is being flushed, the cancelled agent's
generator is closed, that `finally` acks events whose states were never written, and the
stopping consumer commits them. The next owner of the partition then starts after scrapes
that no state holds: they are counted in no window (the fault suite caught it as one scrape
missing per node around a worker's SIGTERM; tests/streams/test_stream_stop.py reproduces it)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import traceback

import faust

from contracts.dlq import dlq_key
from kafka_io.assigned import read_offset_range
from kafka_io.batching import BatchingProducer
from kafka_io.connection import KafkaConnection
from kafka_io.partitioner import KeyPartitioner
from streams.app import TABLES
from streams.config import StreamSettings
from streams.faust_adapter import ChangelogTable
from streams.selfmetrics import HEARTBEAT_S, StreamMetrics
from streams.stages import ClusterStage, NodeStage, dead_letter

log = logging.getLogger("kpp.stream")

#: Seconds without any samples partition before the worker says so.
UNASSIGNED_WARNING_S = 60

#: Events per batch, and how long a batch waits to fill (seconds). The consumer hands events
#: over only while the agent waits (one event loop), ~7,000 a second: at 0.1 s a catching-up
#: worker's batches held ~700 events, and every node state was decoded, encoded and written
#: for each (measured: ~7 % more CPU per scrape than at 0.3 s, whose batches near 2,000).
BATCH_MAX = 2000
BATCH_WITHIN = 0.3


class SkippedRecords:
    """Reads, straight from Kafka, input records the consumer did not deliver.

    Each stage's state records the offset after the last input event it holds, per source
    partition (`next_offset`). The topics it reads are written without transactions and never
    compacted, so their offsets are contiguous: an event whose offset is past that one means
    records in between were not delivered. Faust can do that: it skips (and acknowledges)
    events that arrive while its flow control is paused or after a generation change, drops
    fetched records of partitions it deactivated, and fills offset gaps when it commits
    (https://github.com/faust-streaming/faust/issues/606). The stage then reads the gap here,
    in order, before the event; it never relies on the consumer having delivered everything."""

    def __init__(self, connection: KafkaConnection, timeout_s: float = 60.0) -> None:
        self.connection = connection
        self.timeout_s = timeout_s
        self.read_total = 0
        self.lost_total = 0

    async def read(self, topic: str, part: int, start: int, end: int) -> list[tuple[int, bytes | None, bytes]]:
        """(offset, key, value) of the records of `topic`[`part`] in [start, end)."""
        out = await read_offset_range(self.connection, topic, part, start, end, timeout_s=self.timeout_s,
                                      client_id="kpp-stream-gap-reader")
        first = out[0][0] if out else end
        if first > start:
            # deleted by retention before anyone processed them: gone for good, say so loudly
            self.lost_total += first - start
            log.error("%s[%d]: offsets %d..%d were deleted (retention) before this stage processed them: "
                      "%d record(s) lost", topic, part, start, first - 1, first - start)
        self.read_total += len(out)
        log.warning("%s[%d]: the consumer delivered offset %d after %d: read the %d record(s) in between "
                    "directly from Kafka", topic, part, end, start - 1, len(out))
        return out


def wire(app: faust.App, settings: StreamSettings, connection: KafkaConnection) -> dict:
    topics = settings.topics
    n = settings.partitions

    def owned(name: str) -> faust.TopicT:
        # Topics this stage writes: created at start-up with the configured partition count.
        return app.topic(name, key_type=bytes, value_type=bytes, partitions=n, internal=True)

    outputs = {name: owned(name) for name in (*topics.derived(), topics.late, topics.dlq,
                                               settings.cluster_partials_topic, settings.ticks_topic)}
    samples_in = app.topic(topics.samples, settings.ticks_topic, key_type=bytes, value_type=bytes)
    partials_in = app.topic(settings.cluster_partials_topic, key_type=bytes, value_type=bytes)

    # Keys are str (restored as str: Faust decodes str-typed keys), values our own JSON bytes.
    node_table = app.Table(TABLES[0], key_type=str, value_type=bytes, partitions=n)
    cluster_table = app.Table(TABLES[1], key_type=str, value_type=bytes, partitions=n)

    # Outputs and changelog records go through a producer of the stages' own that fills its
    # record batches itself (kafka_io/batching.py: a fraction of the CPU per record of
    # aiokafka's or Faust's per-record send); Faust's producer sends the idle ticks. Its
    # request timeout is Faust's: while Kafka is away the stages wait as long as Faust would.
    publisher = BatchingProducer(connection, client_id=f"{app.conf.id}-stages",
                                 request_timeout_s=float(app.conf.producer_request_timeout),
                                 partitioner=KeyPartitioner())
    send = publisher.send

    async def start_publisher() -> None:
        # before an agent's first batch: a failure to connect is retried, never a failed event
        while not publisher.started:
            try:
                await publisher.start()
            except Exception as exc:  # noqa: BLE001
                log.warning("the stream stages' producer cannot reach Kafka (%s); trying again in 5 s",
                            connection.explain(exc))
                await asyncio.sleep(5)

    @app.on_before_shutdown.connect
    async def stop_publisher(_app, **_kwargs) -> None:  # noqa: ANN001 - Faust's signal signature
        # after the agents stopped: whatever is still unacknowledged is processed again
        await publisher.stop()

    node_stage = NodeStage(settings, ChangelogTable(node_table, send), send)
    cluster_stage = ClusterStage(settings, ChangelogTable(cluster_table, send), send)
    skipped = SkippedRecords(connection)
    # the worker's /metrics, served by `kpp stream --listen` (streams/cli.py)
    app.self_metrics = metrics = StreamMetrics(samples_topic=topics.samples)
    node_stage.metrics = cluster_stage.metrics = metrics

    async def read_skipped(stage_name: str, stage, msg) -> list[tuple[int, bytes | None, bytes]]:
        """The records of msg's partition between the stage's state and msg (usually none)."""
        expected = stage.next_offset(msg.partition)
        if expected is None or msg.offset <= expected:
            return []
        try:
            return await skipped.read(msg.topic, msg.partition, expected, msg.offset)
        except Exception:  # noqa: BLE001
            # Not acknowledging the batch is the only safe answer; the restarted worker
            # finds the same gap (its state did not move) and reads it again.
            log.critical("%s stage: could not read the records the consumer skipped on %s[%d]; exiting so "
                         "that a restart reads them", stage_name, msg.topic, msg.partition, exc_info=True)
            logging.shutdown()
            os._exit(75)

    async def to_dlq(stage_name: str, stage, event: faust.EventT, exc: BaseException) -> None:
        msg = event.message
        metrics.dead_lettered("stage_error")
        log.error("%s stage failed on %s[%d]@%d: %s", stage_name, msg.topic, msg.partition, msg.offset,
                  "".join(traceback.format_exception_only(type(exc), exc)).strip())
        # through the stage's outbox: delivered before the batch is acknowledged
        await stage.out.put(topics.dlq, dlq_key(msg.key), dead_letter(
            "stage_error", msg.topic, msg.partition, msg.offset, msg.key, msg.value, stage=stage_name,
            error=f"{stage_name} stage error: {exc!r}"), None)

    async def flush(stage_name: str, stage) -> None:
        try:
            await stage.flush()
        except Exception:  # noqa: BLE001
            # Kafka did not take the batch's outputs or states (the producer retries for
            # producer_request_timeout first). Acknowledging the batch now would lose it, and
            # Faust acknowledges whatever an agent's body raised on: leave without
            # acknowledging, so that the restarted worker processes the batch again.
            log.critical("%s stage: Kafka did not acknowledge a batch's outputs or state; exiting so "
                         "that a restart processes the batch again", stage_name, exc_info=True)
            logging.shutdown()
            os._exit(75)

    async def acknowledge(stream, events) -> None:
        # after the flush: the batch's outputs and states are on Kafka, its offsets may commit
        for event in events:
            await stream.ack(event)

    @app.agent(samples_in, name="kpp-node-stage")
    async def node_agent(stream):
        await start_publisher()
        async for events in stream.noack_take(BATCH_MAX, within=BATCH_WITHIN):
            started = time.perf_counter()
            for event in events:
                msg = event.message
                try:
                    if msg.topic == settings.ticks_topic:
                        await node_stage.tick(msg.partition)
                    else:
                        for offset, key, value in await read_skipped("node", node_stage, msg):
                            await node_stage.sample(msg.partition, offset, key, value)
                        await node_stage.sample(msg.partition, msg.offset, msg.key, msg.value)
                except Exception as exc:  # noqa: BLE001
                    await to_dlq("node", node_stage, event, exc)
            await flush("node", node_stage)
            await acknowledge(stream, events)
            metrics.batch_done("node", events, started)

    @app.agent(partials_in, name="kpp-cluster-stage")
    async def cluster_agent(stream):
        await start_publisher()
        async for events in stream.noack_take(BATCH_MAX, within=BATCH_WITHIN):
            started = time.perf_counter()
            for event in events:
                msg = event.message
                try:
                    for offset, key, value in await read_skipped("cluster", cluster_stage, msg):
                        await cluster_stage.message(msg.partition, offset, key, value)
                    await cluster_stage.message(msg.partition, msg.offset, msg.key, msg.value)
                except Exception as exc:  # noqa: BLE001
                    await to_dlq("cluster", cluster_stage, event, exc)
            await flush("cluster", cluster_stage)
            await acknowledge(stream, events)
            metrics.batch_done("cluster", events, started)

    tick_every = max(0.5, min(5.0, settings.idle_timeout_s / 4))
    unassigned = {"since": time.monotonic(), "warned": False}

    @app.timer(interval=tick_every)
    async def idle_ticks() -> None:
        # Tables can only change inside stream iteration, so the timer only sends a tick to the
        # idle partition; the node agent re-checks idleness and closes what is open.
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == topics.samples}
        if assigned:
            unassigned.update(since=time.monotonic(), warned=False)
        elif not unassigned["warned"] and time.monotonic() - unassigned["since"] > UNASSIGNED_WARNING_S:
            # Faust's assignor skips topics its consumer's metadata did not show yet ("Ignoring
            # missing topic") and waits for the next rebalance: on a busy broker a lone worker can
            # end up holding nothing. Legitimate with more workers than partitions; say so anyway.
            unassigned["warned"] = True
            log.warning("this worker has held no partition of %s for %d s: fine if other workers hold "
                        "them all; otherwise the last rebalance missed the topic (see \"Ignoring missing "
                        "topic\" above) and a restart of this worker fixes it", topics.samples,
                        UNASSIGNED_WARNING_S)
        for part in node_stage.idle_partitions(assigned):
            if node_stage.tick_due(part):
                await outputs[settings.ticks_topic].send(value=b"{}", partition=part)

    @app.timer(interval=HEARTBEAT_S)
    async def self_metrics_heartbeat() -> None:
        # apart from idle_ticks, whose sends may wait on a broker that is down
        metrics.heartbeat(node_stage, cluster_stage, app.consumer.assignment())

    return {"node_stage": node_stage, "cluster_stage": cluster_stage, "node_agent": node_agent,
            "cluster_agent": cluster_agent}
