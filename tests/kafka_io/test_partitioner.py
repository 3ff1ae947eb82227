"""kafka_io.partitioner.partition_for is what Faust's producer (aiokafka's DefaultPartitioner)
and kafka-python's default partitioner compute, for many random keys and partition counts."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner as AiokafkaPartitioner
from kafka.partitioner import DefaultPartitioner as KafkaPythonPartitioner

from kafka_io.partitioner import KeyPartitioner, murmur2, partition_for


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


def test_equal_to_the_stream_stages_faust_producer() -> None:
    """The partitioner the stream stage's Faust app gives its producer (aiokafka's
    DefaultPartitioner when the app sets none) sends every key where partition_for says."""
    from kafka_io.connection import KafkaConnection
    from streams.app import create_app
    from streams.config import StreamSettings

    app = create_app(StreamSettings(), KafkaConnection())
    partitioner = app.conf.producer_partitioner or AiokafkaPartitioner()
    rng = random.Random(15)
    for key in random_keys(2000, seed=3):
        partitions = rng.randrange(1, 129)
        everyone = list(range(partitions))
        for _ in range(2):  # twice: a partitioner that remembers hashes answers the same
            assert partitioner(key, everyone, everyone) == partition_for(key, partitions), (key, partitions)


def test_no_partitions_is_refused() -> None:
    with pytest.raises(ValueError):
        partition_for(b"x", 0)


def test_key_partitioner_equals_aiokafkas_default_partitioner() -> None:
    ours, theirs = KeyPartitioner(max_keys=50), AiokafkaPartitioner()
    rng = random.Random(3)
    keys = [rng.randbytes(rng.randrange(0, 40)) for _ in range(300)] + [b"node-1", "nöde".encode()]
    for count in (1, 2, 3, 7, 12):
        partitions = list(range(count))
        for key in keys + keys:  # the second time from the remembered hashes
            assert ours(key, partitions, partitions) == theirs(key, partitions, partitions), (key, count)
    assert len(ours.hashes) <= 50  # bounded
    assert ours(None, [0, 1, 2], [2]) == 2  # no key: an available partition, like aiokafka's
