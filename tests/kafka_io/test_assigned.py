"""kafka_io.assigned.read_offset_range against the real broker: exactly the asked range, in
order, outside any group; a range that does not exist yet times out with a clear error."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from kafka_io.admin import TopicSpec, ensure_topics
from kafka_io.assigned import read_offset_range
from kafka_io.connection import KafkaConnection


def _topic_with(kafka: KafkaConnection, count: int) -> str:
    from kafka import KafkaProducer

    topic = f"range-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka, [TopicSpec(topic, 2)])
    producer = KafkaProducer(**kafka.kafka_python_kwargs())
    for i in range(count):
        producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=1)
    producer.send(topic, value=b"other partition", partition=0)
    producer.flush(30)
    producer.close()
    return topic


def test_reads_exactly_the_range_of_one_partition(kafka: KafkaConnection) -> None:
    topic = _topic_with(kafka, 10)
    got = asyncio.run(read_offset_range(kafka, topic, 1, 3, 7, timeout_s=30))
    assert got == [(i, f"k{i}".encode(), f"v{i}".encode()) for i in range(3, 7)]
    assert asyncio.run(read_offset_range(kafka, topic, 1, 5, 5)) == []


def test_a_range_past_the_end_times_out_naming_it(kafka: KafkaConnection) -> None:
    topic = _topic_with(kafka, 3)
    with pytest.raises(TimeoutError, match=rf"{topic}\[1\] offsets 1\.\.5 within 2 s"):
        asyncio.run(read_offset_range(kafka, topic, 1, 1, 6, timeout_s=2))
