"""What streams/faust_adapter.py relies on in Faust, pinned: if a Faust upgrade changes the
table store, the changelog key or how `Producer.send` hands a record to aiokafka, these fail."""

from __future__ import annotations

import asyncio
import random

import faust

from streams.faust_adapter import ChangelogTable, producer_send


class RecordingAiokafka:
    """Stands in for the aiokafka producer under Faust's: what Faust passes on."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []

    async def send(self, topic, value, *, key, partition, timestamp_ms, headers):
        self.sent.append((topic, key, value, partition, timestamp_ms, headers))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(("delivered", topic, partition))
        return fut


def new_app(tmp_path) -> faust.App:
    return faust.App("adapter-test", broker="kafka://127.0.0.1:1", store="memory://", key_serializer="raw",
                     value_serializer="raw", datadir=str(tmp_path), autodiscover=False, web_enabled=False)


def test_write_in_writes_the_store_faust_reads_and_sends_fausts_changelog_record(tmp_path) -> None:
    app = new_app(tmp_path)
    table = app.Table("node-state", key_type=str, value_type=bytes, partitions=4)
    sent = []

    async def send(topic, key, value, ts_ms, part):
        sent.append((topic, key, value, ts_ms, part))
        return "future"

    changelog = ChangelogTable(table, send)

    async def run() -> None:
        assert await changelog.write_in(3, "node:a", b"state") == "future"
        # Faust's own reads (and its restore, which fills the same store) see the write
        assert table["node:a"] == b"state" and changelog.get("node:a") == b"state"
        await changelog.write_in(2, "node:a", None)
        assert "node:a" not in table and changelog.get("node:a", "gone") == "gone"

    asyncio.run(run())
    # the changelog topic Faust creates and restores from; the key as Faust's own table writes
    # encode a str key (its table key serializer, JSON), which the changelogs of running
    # pipelines hold and a restore decodes
    assert sent == [("adapter-test-node-state-changelog", b'"node:a"', b"state", None, 3),
                    ("adapter-test-node-state-changelog", b'"node:a"', None, None, 2)]


def test_producer_send_hands_aiokafka_exactly_what_the_stage_sends(tmp_path) -> None:
    app = new_app(tmp_path)
    aiokafka = RecordingAiokafka()
    stamps = [0, 1_672_531_200_123] + [random.Random(5).randrange(1_000_000_000_000, 4_000_000_000_000)
                                       for _ in range(2000)]

    async def started():
        app.producer._producer = aiokafka  # the aiokafka client Faust starts; no broker here
        return app.producer

    app.maybe_start_producer = started
    send = producer_send(app)

    async def run() -> list:
        futures = [await send("out", b"k", b"v", ts, 1) for ts in stamps]
        futures.append(await send("log", b"k2", None, None, 0))
        return [await f for f in futures]

    delivered = asyncio.run(run())
    assert delivered[-1] == ("delivered", "log", 0)
    # integer milliseconds survive Faust's seconds-based timestamp unchanged
    assert aiokafka.sent == [("out", b"k", b"v", 1, ts, None) for ts in stamps] + [("log", b"k2", None, 0, None, None)]


def test_key_partitioner_equals_aiokafkas_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    from streams.faust_adapter import KeyPartitioner

    ours, theirs = KeyPartitioner(max_keys=50), DefaultPartitioner()
    rng = random.Random(3)
    keys = [rng.randbytes(rng.randrange(0, 40)) for _ in range(300)] + [b"node-1", "nöde".encode()]
    for count in (1, 2, 3, 7, 12):
        partitions = list(range(count))
        for key in keys + keys:  # the second time from the remembered hashes
            assert ours(key, partitions, partitions) == theirs(key, partitions, partitions), (key, count)
    assert len(ours.hashes) <= 50  # bounded
    assert ours(None, [0, 1, 2], [2]) == 2  # no key: an available partition, like aiokafka's


def test_the_worker_app_partitions_with_the_key_partitioner(tmp_path) -> None:
    from kafka_io.connection import KafkaConnection
    from streams.app import create_app
    from streams.config import StreamSettings
    from streams.faust_adapter import KeyPartitioner

    app = create_app(StreamSettings(topic_prefix="kp", data_dir=str(tmp_path)), KafkaConnection(bootstrap="127.0.0.1:1"))
    assert isinstance(app.conf.producer_partitioner, KeyPartitioner)
