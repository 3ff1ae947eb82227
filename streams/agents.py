"""Faust glue: topics, the two tables, the two agents and the idle timer. Each agent decodes
the Kafka message, hands it to streams.stages and never lets an exception escape (Faust
would acknowledge the event anyway): a failure goes to the DLQ with its reason."""

from __future__ import annotations

import logging
import traceback

import faust

from streams.app import TABLES
from streams.config import StreamSettings
from streams.stages import ClusterStage, NodeStage, dead_letter

log = logging.getLogger("kpp.stream")


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

    async def send(topic: str, key, value: bytes, ts_ms, part):
        return await outputs[topic].send(key=key, value=value, partition=part,
                                         timestamp=None if ts_ms is None else ts_ms / 1000.0)

    node_stage = NodeStage(settings, node_table, send)
    cluster_stage = ClusterStage(settings, cluster_table, send)

    async def to_dlq(stage: str, event: faust.EventT, exc: BaseException) -> None:
        msg = event.message
        log.error("%s stage failed on %s[%d]@%d: %s", stage, msg.topic, msg.partition, msg.offset,
                  "".join(traceback.format_exception_only(type(exc), exc)).strip())
        try:
            await send(topics.dlq, msg.key,
                       dead_letter(f"{stage} stage error: {exc!r}", msg.topic, msg.partition, msg.offset,
                                   msg.key, msg.value), None, None)
        except Exception:  # noqa: BLE001 - keep the agent alive whatever happens
            log.exception("could not write to the DLQ")

    @app.agent(samples_in, name="kpp-node-stage")
    async def node_agent(stream):
        async for event in stream.events():
            msg = event.message
            try:
                if msg.topic == settings.ticks_topic:
                    await node_stage.on_tick(msg.partition)
                else:
                    await node_stage.on_sample(msg.partition, msg.offset, msg.key, msg.value)
            except Exception as exc:  # noqa: BLE001
                await to_dlq("node", event, exc)

    @app.agent(partials_in, name="kpp-cluster-stage")
    async def cluster_agent(stream):
        async for event in stream.events():
            msg = event.message
            try:
                await cluster_stage.on_message(msg.partition, msg.offset, msg.key, msg.value)
            except Exception as exc:  # noqa: BLE001
                await to_dlq("cluster", event, exc)

    tick_every = max(0.5, min(5.0, settings.idle_timeout_s / 4))

    @app.timer(interval=tick_every)
    async def idle_ticks() -> None:
        # Tables can only change inside stream iteration, so the timer only sends a tick to the
        # idle partition; the node agent re-checks idleness and closes what is open.
        assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == topics.samples}
        for part in node_stage.idle_partitions(assigned):
            if node_stage.tick_due(part):
                await outputs[settings.ticks_topic].send(value=b"{}", partition=part)

    return {"node_stage": node_stage, "cluster_stage": cluster_stage, "node_agent": node_agent,
            "cluster_agent": cluster_agent}
