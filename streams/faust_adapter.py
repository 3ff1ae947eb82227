"""Where the stream stage goes past Faust's everyday API (`table[key] = value` inside an
agent, `topic.send(...)`), and why. tests/streams/test_faust_adapter.py fails if Faust
changes what this relies on.

Sends (outputs and changelog records) go through Faust's public `Producer.send` (the app's
producer: the same aiokafka client, partitioner and settings as Faust's own sends), which
returns the delivery future at once. `Topic.send` and `table[key] = value` instead queue the
record in Faust's producer buffer, whose flush before an offset commit gives up after 0.1 s,
and cost more per record (a scrape yields ~8 outputs).

A state write needs an explicit changelog partition: a batch mixes events of several source
partitions, and `table[key] = value` takes the partition of Faust's "current event" (the
last one the stream handed out). So `ChangelogTable.write_in` writes the table's store itself
(`table.data`, Faust's documented "underlying table storage", which `table[key] = value`
writes too) and sends the changelog record Faust would send (key from the changelog topic's
`prepare_key`) to the partition given.

The producer's partitioner (Faust's `producer_partitioner` setting) is `KeyPartitioner`:
Kafka's default partitioner with each key's hash remembered."""

from __future__ import annotations

import random
from typing import Any, Awaitable, Callable, Sequence

from kafka_io.partitioner import murmur2

#: send(topic, key, value, timestamp_ms, partition) -> awaitable delivery future
Send = Callable[[str, "bytes | None", "bytes | None", "int | None", "int | None"], Awaitable[Any]]


def producer_send(app: Any) -> Send:
    """A send function over the app's producer (started on first use)."""
    producer = None

    async def send(topic: str, key: bytes | None, value: bytes | None, ts_ms: int | None, part: int | None):
        nonlocal producer
        if producer is None:
            producer = await app.maybe_start_producer()
        # Faust takes seconds and sends int(seconds * 1000.0): exact for integer milliseconds
        # below 2**53 / 1000 (tested)
        return await producer.send(topic, key, value, part, None if ts_ms is None else ts_ms / 1000, None)

    return send


class ChangelogTable:
    """A Faust table as the stages use it: `get`, and `write_in` with an explicit changelog
    partition, returning the changelog record's delivery future."""

    def __init__(self, table: Any, send: Send) -> None:
        self.table = table
        self.send = send

    def get(self, key: str, default=None):
        return self.table.data.get(key, default)

    async def write_in(self, part: int, key: str, raw: bytes | None):
        table = self.table
        if raw is None:
            table.data.pop(key, None)
        else:
            table.data[key] = raw
        key_bytes, _headers = table.changelog_topic.prepare_key(key, table.key_serializer)
        return await self.send(table.changelog_topic.get_topic_name(), key_bytes, raw, None, part)


class KeyPartitioner:
    """Kafka's default partitioner (kafka_io.partitioner, what aiokafka's DefaultPartitioner
    computes) with the positive murmur2 hash of each key remembered: the worker sends the same
    keys (nodes, series) window after window, and the hash is pure Python (aiokafka's too),
    ~2% of the worker's CPU recomputed on every send. The partition is still taken from the
    partition list aiokafka passes, so a topic that grows partitions is followed. A record
    without a key goes to a random available partition, as aiokafka's does."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self.hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        hashed = self.hashes.get(key)
        if hashed is None:
            if len(self.hashes) >= self.max_keys:
                self.hashes.clear()  # a bound, not an eviction policy: the keys in use come back
            hashed = self.hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]
