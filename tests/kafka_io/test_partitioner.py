"""kafka_io.partitioner.partition_for is what Faust's producer (aiokafka's DefaultPartitioner)
and kafka-python's default partitioner compute, for many random keys and partition counts."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner as AiokafkaPartitioner
from kafka.partitioner import DefaultPartitioner as KafkaPythonPartitioner

from kafka_io.partitioner import murmur2, partition_for


def random_keys(count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    keys = [b"", b"node-000", "nœud-é".encode("utf-8"), bytes(range(256))]
    keys += [rng.randbytes(rng.randrange(0, 64)) for _ in range(count)]
    keys += [f"node-{i:03d}".encode() for i in range(200)]  # what the pipeline's keys look like
    return keys


def test_equal_to_aiokafkas_partitioner_that_fausts_producer_uses() -> None:
    rng = random.Random(13)
    for key in random_keys(3000, seed=1):
        partitions = rng.choice((1, 2, 3, 4, 6, 7, 12, 16, 31, 64, 100, 1000))
        everyone = list(range(partitions))
        assert partition_for(key, partitions) == AiokafkaPartitioner()(key, everyone, everyone), (key, partitions)


class OneTopicCluster:
    """The three questions kafka-python's partitioner asks its cluster metadata."""

    def __init__(self, topic: str, partitions: int) -> None:
        self.topic, self.partitions = topic, partitions

    def topics(self) -> set[str]:
        return {self.topic}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    available_partitions_for_topic = partitions_for_topic


def test_equal_to_kafka_pythons_default_partitioner() -> None:
    rng = random.Random(14)
    for key in random_keys(3000, seed=2):
        partitions = rng.randrange(1, 257)
        expected = KafkaPythonPartitioner().partition("t", key, key, b"", b"", OneTopicCluster("t", partitions))
        assert partition_for(key, partitions) == expected, (key, partitions)


def test_known_java_values() -> None:
    """Values of the Java client's Utils.murmur2 (its own unit test), as unsigned 32 bits."""
    java = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
            b"a-little-bit-longer-string": -1486304829, b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
            b"abc": 479470107}
    for data, signed in java.items():
        assert murmur2(data) == signed & 0xFFFFFFFF, data


def test_fausts_producer_keeps_the_default_partitioner() -> None:
    """The stream stage's Faust app sets no producer_partitioner, so its producer uses aiokafka's
    DefaultPartitioner: the one compared above."""
    from kafka_io.connection import KafkaConnection
    from streams.app import create_app
    from streams.config import StreamSettings

    app = create_app(StreamSettings(), KafkaConnection())
    assert app.conf.producer_partitioner is None


def test_no_partitions_is_refused() -> None:
    with pytest.raises(ValueError):
        partition_for(b"x", 0)
