"""Where the stream stage goes past Faust's everyday API (`table[key] = value` inside an
agent, `topic.send(...)`), and why. tests/streams/test_faust_adapter.py fails if Faust
changes what this relies on.

Sends (outputs and changelog records) do not go through Faust's producer but through the
stages' own batching producer (kafka_io/batching.py, wired in streams/agents.py), which
returns a delivery future per record batch: `Topic.send` and `table[key] = value` queue each
record in Faust's producer buffer, whose flush before an offset commit gives up after 0.1 s,
and every per-record send (Faust's or aiokafka's) costs several times the CPU of a record
added to a batch (a scrape yields ~8 outputs).

A state write needs an explicit changelog partition: a batch mixes events of several source
partitions, and `table[key] = value` takes the partition of Faust's "current event" (the
last one the stream handed out). So `ChangelogTable.write_in` writes the table's store itself
(`table.data`, Faust's documented "underlying table storage", which `table[key] = value`
writes too) and sends the changelog record Faust would send (key from the changelog topic's
`prepare_key`) to the partition given.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

#: send(topic, key, value, timestamp_ms, partition) -> awaitable delivery future
Send = Callable[[str, "bytes | None", "bytes | None", "int | None", "int | None"], Awaitable[Any]]


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
