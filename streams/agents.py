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

import logging
import os
import time
import traceback

import faust

from streams.app import TABLES
from streams.config import StreamSettings
from streams.stages import ClusterStage, NodeStage, dead_letter

log = logging.getLogger("kpp.stream")

#: Seconds without any samples partition before the worker says so.
UNASSIGNED_WARNING_S = 60

#: Events per batch, and how long a batch waits to fill (seconds).
BATCH_MAX = 2000
BATCH_WITHIN = 0.1


class ChangelogTable:
    """A Faust table as the stages use it: `get`, and `write_in` with an explicit changelog
    partition (a batch mixes events of several partitions, so Faust's "current event" cannot
    choose it). Writes the store and sends the same changelog record as `table[key] = value`,
    but straight to the producer, returning the delivery future: Faust's own path queues the
    record in a buffer whose flush before an offset commit may give up after 0.1 s, which
    would let a commit run ahead of the state a restart recovers."""

    def __init__(self, table, producer) -> None:
        self.table = table
        self.producer = producer  # async () -> the started aiokafka producer

    def get(self, key: str, default=None):
        return self.table.data.get(key, default)

    async def write_in(self, part: int, key: str, raw: bytes | None):
        table = self.table
        if raw is None:
            table.data.pop(key, None)
        else:
            table.data[key] = raw
        key_bytes, _headers = table.changelog_topic.prepare_key(key, table.key_serializer)
        producer = await self.producer()
        return await producer.send(table.changelog_topic.get_topic_name(), raw, key=key_bytes, partition=part)


def wire(app: faust.App, settings: StreamSettings) -> dict:
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

    producer = None

    async def started_producer():
        # The aiokafka producer under Faust's (same client, same partitioner, same settings):
        # Faust's Topic.send and Producer.send wrappers cost more than the send itself, and a
        # scrape yields ~8 outputs.
        nonlocal producer
        if producer is None:
            producer = (await app.maybe_start_producer())._ensure_producer()
        return producer

    async def send(topic: str, key, value: bytes, ts_ms, part):
        # The topics are still declared above, so Faust creates them at start-up.
        return await (await started_producer()).send(topic, value, key=key, partition=part, timestamp_ms=ts_ms)

    node_stage = NodeStage(settings, ChangelogTable(node_table, started_producer), send)
    cluster_stage = ClusterStage(settings, ChangelogTable(cluster_table, started_producer), send)

    async def to_dlq(stage_name: str, stage, event: faust.EventT, exc: BaseException) -> None:
        msg = event.message
        log.error("%s stage failed on %s[%d]@%d: %s", stage_name, msg.topic, msg.partition, msg.offset,
                  "".join(traceback.format_exception_only(type(exc), exc)).strip())
        # through the stage's outbox: delivered before the batch is acknowledged
        await stage.out.put(topics.dlq, msg.key, dead_letter(f"{stage_name} stage error: {exc!r}", msg.topic,
                                                             msg.partition, msg.offset, msg.key, msg.value), None)

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
        async for events in stream.noack_take(BATCH_MAX, within=BATCH_WITHIN):
            for event in events:
                msg = event.message
                try:
                    if msg.topic == settings.ticks_topic:
                        await node_stage.tick(msg.partition)
                    else:
                        await node_stage.sample(msg.partition, msg.offset, msg.key, msg.value)
                except Exception as exc:  # noqa: BLE001
                    await to_dlq("node", node_stage, event, exc)
            await flush("node", node_stage)
            await acknowledge(stream, events)

    @app.agent(partials_in, name="kpp-cluster-stage")
    async def cluster_agent(stream):
        async for events in stream.noack_take(BATCH_MAX, within=BATCH_WITHIN):
            for event in events:
                msg = event.message
                try:
                    await cluster_stage.message(msg.partition, msg.offset, msg.key, msg.value)
                except Exception as exc:  # noqa: BLE001
                    await to_dlq("cluster", cluster_stage, event, exc)
            await flush("cluster", cluster_stage)
            await acknowledge(stream, events)

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

    return {"node_stage": node_stage, "cluster_stage": cluster_stage, "node_agent": node_agent,
            "cluster_agent": cluster_agent}
