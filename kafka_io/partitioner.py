"""The key -> partition function of the pipeline: Kafka's default partitioner for a keyed
record (murmur2 of the key bytes, made positive, modulo the partition count), as the Java
client, kafka-python and aiokafka compute it, and so as Faust's producer (the stream stage
sets `producer_partitioner` to `KeyPartitioner` below: this function with each key's hash
remembered, which the worker's batching producer uses too).

Co-partitioning rests on it: the producers and the stream workers must send a node's records
to the same partition number in every topic, and replay must route the cluster stage's
partials where the live worker's producer would. Written out here (a few lines, no client
import) rather than taken from a client library's module, so that pure code can use it
without loading a Kafka client; tests/kafka_io/test_partitioner.py checks it against both
libraries' partitioners.
"""

from __future__ import annotations

import random
from typing import Sequence

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 of `data` (org.apache.kafka.common.utils.Utils.murmur2), as an
    unsigned 32-bit value."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = ((h * _M) & _MASK32) ^ k
    rest = length % 4
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a record with key `key` in a topic of
    `partitions` partitions."""
    if partitions < 1:
        raise ValueError(f"a topic has at least one partition, not {partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class KeyPartitioner:
    """Kafka's default partitioner (`partition_for`; what aiokafka's DefaultPartitioner
    computes, with its call signature) with the positive murmur2 hash of each key remembered:
    the stream worker sends the same keys (nodes, clusters) window after window, and the hash
    is pure Python (aiokafka's too), ~2% of the worker's CPU recomputed on every send. The
    partition is still taken from the partition list passed, so a topic that grows partitions
    is followed. A record without a key goes to a random available partition, as aiokafka's
    does."""

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
