"""What streams/faust_adapter.py relies on in Faust, pinned: if a Faust upgrade changes the
table store or the changelog key, these fail."""

from __future__ import annotations

import asyncio

import faust

from streams.faust_adapter import ChangelogTable


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


def test_the_worker_app_partitions_with_the_key_partitioner(tmp_path) -> None:
    from kafka_io.connection import KafkaConnection
    from streams.app import create_app
    from streams.config import StreamSettings
    from kafka_io.partitioner import KeyPartitioner

    app = create_app(StreamSettings(topic_prefix="kp", data_dir=str(tmp_path)), KafkaConnection(bootstrap="127.0.0.1:1"))
    assert isinstance(app.conf.producer_partitioner, KeyPartitioner)
