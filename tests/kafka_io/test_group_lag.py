"""A consumer group's lag (kafka_io.admin): the arithmetic, and a read against the real broker
that follows the group's commits."""

from __future__ import annotations

import uuid

import pytest

from contracts.errors import KppError
from kafka_io.admin import TopicSpec, ensure_topics, group_lag, lag_from_offsets
from kafka_io.connection import KafkaConnection


def test_lag_counts_from_the_beginning_where_nothing_is_committed() -> None:
    lag = lag_from_offsets(committed={"a": 10, "b": None, "d": -1}, beginning={"b": 5, "d": 2},
                           end={"a": 12, "b": 9, "c": 3, "d": 7})
    assert lag == {"a": 2, "b": 4, "c": 3, "d": 5}


def test_lag_is_never_negative() -> None:
    # a commit read just after the end offsets (the group moved in between)
    assert lag_from_offsets(committed={"a": 15}, beginning={}, end={"a": 12}) == {"a": 0}


def test_an_unreachable_broker_is_one_kafka_error_not_a_traceback() -> None:
    conn = KafkaConnection(bootstrap="127.0.0.1:1")
    with pytest.raises(KppError) as caught:
        group_lag(conn, "g", ["t"])
    assert caught.value.exit_code == 3 and "127.0.0.1:1" in str(caught.value)


def test_group_lag_follows_the_groups_commits(kafka: KafkaConnection) -> None:
    from kafka.structs import OffsetAndMetadata, TopicPartition
    from kafka import KafkaConsumer, KafkaProducer

    topic, other, group = f"lag-{uuid.uuid4().hex[:8]}", f"lag-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka, [TopicSpec(topic, 2), TopicSpec(other, 1)])
    producer = KafkaProducer(**kafka.kafka_python_kwargs())
    for i in range(10):
        producer.send(topic, value=b"x", partition=i % 2)
    for _ in range(3):
        producer.send(other, value=b"y", partition=0)
    producer.flush(30)
    producer.close()

    # nothing committed: everything from the beginning
    assert group_lag(kafka, group, [topic, other]) == {(topic, 0): 5, (topic, 1): 5, (other, 0): 3}

    committer = KafkaConsumer(**kafka.kafka_python_kwargs(), group_id=group, enable_auto_commit=False)
    try:
        committer.commit({TopicPartition(topic, 0): OffsetAndMetadata(4, "", -1),
                          TopicPartition(topic, 1): OffsetAndMetadata(5, "", -1)})
    finally:
        committer.close()
    assert group_lag(kafka, group, [topic, other]) == {(topic, 0): 1, (topic, 1): 0, (other, 0): 3}
    # a topic the broker does not know has no entry
    assert group_lag(kafka, group, [f"absent-{uuid.uuid4().hex[:8]}"]) == {}
