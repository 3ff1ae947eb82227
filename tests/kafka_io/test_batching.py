"""kafka_io.batching.BatchingProducer against the real broker: what arrives (keys, values,
timestamps, partitions, order), that records share batches, that a full batch is split in
order, that a refusal reaches the caller's future, and an unreachable broker at start."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from kafka_io.admin import TopicSpec, ensure_topics
from kafka_io.batching import BatchingProducer
from kafka_io.connection import KafkaConnection
from kafka_io.partitioner import partition_for
from tests.conftest import free_port


async def read_all(connection: KafkaConnection, topic: str, partitions: int, count: int) -> dict[int, list]:
    """Every record of `topic` by partition (offset order), once `count` are there."""
    consumer = AIOKafkaConsumer(bootstrap_servers=connection.bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got: dict[int, list] = {p: [] for p in range(partitions)}
        async with asyncio.timeout(60):
            while sum(map(len, got.values())) < count:
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    got[tp.partition] += records
        return got
    finally:
        await consumer.stop()


@pytest.mark.integration
def test_records_arrive_in_order_partitioned_by_key_with_their_timestamps(kafka: KafkaConnection, topic_name) -> None:
    ensure_topics(kafka, [TopicSpec(topic_name, 3, {})])
    # 6,000 records of ~300 bytes: several 64 KiB batches per partition
    records = [(f"node-{i % 7}".encode(), f"{i:06d}".encode() * 50, 1_700_000_000_000 + i) for i in range(6000)]

    async def run():
        producer = BatchingProducer(kafka, client_id="test-batching", max_batch_bytes=64 << 10)
        await producer.start()
        try:
            futures = [await producer.send(topic_name, k, v, ts, None) for k, v, ts in records]
            futures.append(await producer.send(topic_name, None, b"explicit", None, 2))
            for future in futures:
                await future
            return producer.batches_sent, producer.records_sent, await read_all(kafka, topic_name, 3, len(records) + 1)
        finally:
            await producer.stop()

    batches, sent, got = asyncio.run(run())
    assert sent == len(records) + 1
    assert 3 * 2 <= batches < 100  # several per partition (64 KiB each), far fewer than records
    for part, received in got.items():
        expected = [r for r in records if partition_for(r[0], 3) == part]
        if part == 2:
            expected.append((None, b"explicit", None))
        assert [(r.key, r.value) for r in received] == [(k, v) for k, v, _ts in expected]
        # the record's own timestamp, in milliseconds; None: the producer's clock
        assert [r.timestamp for r in received if r.key is not None] == [ts for _k, _v, ts in expected if ts]
    assert got[2][-1].timestamp > 1_700_000_000_000 + 10**9


@pytest.mark.integration
def test_a_batch_kafka_refuses_fails_the_futures_of_its_records(kafka: KafkaConnection, topic_name) -> None:
    ensure_topics(kafka, [TopicSpec(topic_name, 1, {"max.message.bytes": "2000"})])

    async def run():
        producer = BatchingProducer(kafka, client_id="test-batching", request_timeout_s=20)
        await producer.start()
        try:
            small = await producer.send(topic_name, b"k", b"x" * 100, None, 0)
            await small
            large = [await producer.send(topic_name, b"k", b"y" * 1500, None, 0) for _ in range(3)]
            assert len(set(map(id, large))) == 1  # one batch, one future
            with pytest.raises(Exception) as refused:
                await large[0]
            return refused.value
        finally:
            await producer.stop()

    error = asyncio.run(run())
    assert "TooLarge" in type(error).__name__ or "too large" in str(error).lower()


def test_start_without_a_broker_raises_and_can_be_retried() -> None:
    producer = BatchingProducer(KafkaConnection(bootstrap=f"127.0.0.1:{free_port()}"), client_id="test-batching",
                                request_timeout_s=2)

    async def run() -> None:
        for _ in range(2):
            with pytest.raises(Exception):
                await producer.start()
            assert not producer.started
        with pytest.raises(RuntimeError, match="before start"):
            await producer.send("t", b"k", b"v", None, 0)

    asyncio.run(run())
