"""The started services are real: Kafka carries messages between kafka-python and aiokafka
(Faust's client) with the same key→partition mapping; VictoriaMetrics stores and answers."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from kafka import KafkaProducer

from kafka_io.admin import TopicSpec, ensure_topics
from kafka_io.connection import KafkaConnection

pytestmark = pytest.mark.integration

PARTITIONS = 6


def _create_topic(kafka: KafkaConnection, name: str, partitions: int) -> None:
    ensure_topics(kafka, [TopicSpec(name, partitions)])


def test_kafka_python_to_aiokafka_group_same_partitions(kafka: KafkaConnection, topic_name: str) -> None:
    _create_topic(kafka, topic_name, PARTITIONS)
    keys = [f"node-{i:03d}".encode() for i in range(40)]
    producer = KafkaProducer(**kafka.kafka_python_kwargs(), acks="all")
    sent: dict[bytes, int] = {}
    for key in keys:
        metadata = producer.send(topic_name, key=key, value=b"v-" + key).get(timeout=30)
        sent[key] = metadata.partition
    producer.close()
    assert len(set(sent.values())) > 1, "40 keys should spread over several partitions"

    async def consume() -> dict[bytes, tuple[int, bytes]]:
        consumer = AIOKafkaConsumer(
            topic_name, **kafka.aiokafka_kwargs(), group_id=f"test-{uuid.uuid4().hex[:6]}",
            auto_offset_reset="earliest", enable_auto_commit=False,
        )
        await consumer.start()
        got: dict[bytes, tuple[int, bytes]] = {}
        try:
            deadline = time.monotonic() + 30
            while len(got) < len(keys) and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for record in records:
                        got[record.key] = (record.partition, record.value)
            await consumer.commit()
        finally:
            await consumer.stop()
        return got

    received = asyncio.run(consume())
    assert set(received) == set(keys)
    for key in keys:
        partition, value = received[key]
        assert value == b"v-" + key
        assert partition == sent[key]

    # Faust hashes raw keys with murmur2 like kafka-python's default partitioner: the
    # partition of every key must be what aiokafka's partitioner computes for it.
    from aiokafka.partitioner import DefaultPartitioner

    partitioner = DefaultPartitioner()
    for key in keys:
        assert partitioner(key, list(range(PARTITIONS)), list(range(PARTITIONS))) == sent[key]


def test_victoriametrics_write_flush_read(vm_url: str) -> None:
    series = f"kpp_test_point_{uuid.uuid4().hex[:8]}"
    timestamp_ms = int(time.time() * 1000) - 5_000
    line = f'{series}{{node="node-001",cluster="test"}} 0.125 {timestamp_ms}\n'
    response = httpx.post(f"{vm_url}/api/v1/import/prometheus", content=line.encode(), timeout=10)
    assert response.status_code == 204, response.text
    deadline = time.monotonic() + 20
    result: list = []
    while time.monotonic() < deadline and not result:
        httpx.get(f"{vm_url}/internal/force_flush", timeout=10)
        answer = httpx.get(
            f"{vm_url}/api/v1/query",
            params={"query": series, "time": timestamp_ms / 1000, "nocache": "1"}, timeout=10,
        ).json()
        result = answer["data"]["result"]
        if not result:
            time.sleep(0.5)
    assert len(result) == 1, f"{series} not found in VictoriaMetrics"
    assert result[0]["metric"] == {"__name__": series, "node": "node-001", "cluster": "test"}
    assert float(result[0]["value"][1]) == 0.125
    assert result[0]["value"][0] == pytest.approx(timestamp_ms / 1000)
