"""Run the stream stages in-process over dict tables, as the reference the Kafka runs must
equal (same pure code, no Faust, no timing): partitions are processed one message at a time,
cluster-partials are delivered in an order chosen by the caller. With `batch`, the stages are
driven as the Faust agents drive them: `sample`/`message` per event and one `flush` every
`batch` events (the output must not depend on it)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from kafka_io.partitioner import partition_for
from streams import bundle, statecodec
from streams.config import StreamSettings
from streams.stages import ClusterStage, NodeStage


def partition_of(key: bytes, partitions: int) -> int:
    return partition_for(key, partitions)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_reference(settings: StreamSettings, messages: list[tuple[bytes | None, bytes]], *, seed: int | None = None,
                  finish_idle: bool = True, tables: tuple[dict, dict] | None = None,
                  first_offset: int = 0, batch: int | None = None) -> list[tuple[str, bytes | None, bytes]]:
    """Feed `messages` (key, value) through the stages; returns everything they sent (topic, key,
    value), cluster-partials excluded. With `seed`, node partitions are interleaved randomly and
    cluster-partials delivery is shuffled across partitions (order kept within one)."""
    return asyncio.run(_run(settings, messages, seed, finish_idle, tables, first_offset, batch))


def recording_send(settings: StreamSettings, sent: list, partials: dict[int, list]):
    """The stages' `send` over lists: cluster-partials go to `partials[partition]` (key, value),
    everything else to `sent` (topic, key, value); delivery is immediate."""

    async def send(topic, key, value, ts_ms, part):
        if topic == settings.cluster_partials_topic:
            q = part if part is not None else partition_of(key, settings.partitions)
            partials[q].append((key, value))
        else:
            sent.append((topic, key, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    return send


async def _run(settings, messages, seed, finish_idle, tables, first_offset, batch=None):
    sent: list[tuple[str, bytes | None, bytes]] = []
    queues: dict[int, list] = defaultdict(list)
    clock = FakeClock()
    node_table, cluster_table = tables or ({}, {})
    rng = random.Random(seed)

    send = recording_send(settings, sent, queues)
    node = NodeStage(settings, node_table, send, clock=clock)
    cluster = ClusterStage(settings, cluster_table, send, clock=clock)
    offsets: dict[int, int] = defaultdict(lambda: first_offset)  # single-partition replays only
    cluster_offsets: dict[int, int] = defaultdict(lambda: first_offset)  # single-partition replays only

    # on_sample / on_message are sample / message followed by flush: batch None is batch 1
    every = batch or 1
    pending = {"node": 0, "cluster": 0}

    async def count(name: str, stage) -> None:
        pending[name] += 1
        if pending[name] >= every:
            pending[name] = 0
            await stage.flush()

    async def drain_cluster(all_: bool) -> None:
        while any(queues.values()):
            qs = [q for q in sorted(queues) if queues[q]]
            q = rng.choice(qs) if seed is not None else qs[0]
            key, value = queues[q].pop(0)
            await cluster.message(q, cluster_offsets[q], key, value)
            await count("cluster", cluster)
            cluster_offsets[q] += 1
            if not all_ and seed is not None and rng.random() < 0.3:
                return

    per_part: dict[int, list] = defaultdict(list)
    for key, value in messages:
        per_part[partition_of(key, settings.partitions) if key is not None else 0].append((key, value))
    cursors = {p: 0 for p in per_part}
    while any(cursors[p] < len(per_part[p]) for p in per_part):
        live = [p for p in sorted(per_part) if cursors[p] < len(per_part[p])]
        p = rng.choice(live) if seed is not None else live[0]
        key, value = per_part[p][cursors[p]]
        cursors[p] += 1
        await node.sample(p, offsets[p], key, value)
        await count("node", node)
        offsets[p] += 1
        await drain_cluster(all_=False)
    if batch is not None:
        await node.flush()
    await drain_cluster(all_=True)
    if batch is not None:
        await cluster.flush()
    if finish_idle:
        await node.finish()
        await drain_cluster(all_=True)
        if batch is not None:
            await cluster.flush()
    return sent


def cluster_messages(value: bytes) -> list[dict]:
    """The decoded partials or progress marker of one cluster-partials message (a bundle of
    partials, streams/bundle.py, or a message of its own)."""
    return [statecodec.decode(raw) for raw in bundle.unpack(value) or [value]]
