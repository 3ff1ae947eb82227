"""kafka_io.publish builds every kafka-python producer: the connection's settings, the
sender-fix client class, the caller's settings; and a keyed record lands where partition_for
says (what co-partitioning with the stream workers rests on)."""

from __future__ import annotations

import uuid

import pytest

from kafka_io.connection import KafkaConnection, sender_client_class
from kafka_io.partitioner import partition_for
from kafka_io.publish import kafka_python_producer


def test_the_producer_gets_the_connection_the_sender_client_and_the_callers_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import kafka

    built: list[dict] = []
    monkeypatch.setattr(kafka, "KafkaProducer", lambda **kwargs: built.append(kwargs) or "producer")
    connection = KafkaConnection(bootstrap="b1:9092,b2:9092")
    assert kafka_python_producer(connection, client_id="kpp-x", linger_ms=7, acks="all") == "producer"
    assert built == [{**connection.kafka_python_kwargs(), "kafka_client": sender_client_class(),
                      "client_id": "kpp-x", "linger_ms": 7, "acks": "all"}]


@pytest.mark.integration
def test_keyed_records_land_on_the_partition_partition_for_names(kafka: KafkaConnection) -> None:
    from kafka_io.admin import TopicSpec, ensure_topics

    topic = f"test.publish.{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka, [TopicSpec(topic, 5)])
    producer = kafka_python_producer(kafka, client_id="kpp-test-publish", acks="all")
    try:
        keys = [f"node-{i:03d}".encode() for i in range(40)]
        futures = {key: producer.send(topic, key=key, value=b"v") for key in keys}
        landed = {key: future.get(timeout=30).partition for key, future in futures.items()}
    finally:
        producer.close(10)
    assert landed == {key: partition_for(key, 5) for key in keys}
    assert len(set(landed.values())) > 1  # the keys spread: the check says something


def test_the_producers_exceptions_and_compression_check_are_kafka_pythons() -> None:
    import kafka.codec
    import kafka.errors

    import kafka_io.publish as publish

    assert publish.MessageSizeTooLargeError is kafka.errors.MessageSizeTooLargeError
    assert publish.KafkaTimeoutError is kafka.errors.KafkaTimeoutError
    with pytest.raises(AttributeError):
        publish.NoSuchError  # noqa: B018
    assert publish.compression_available("lz4") == kafka.codec.has_lz4()
    assert publish.compression_available("zstd") == kafka.codec.has_zstd()
    assert publish.compression_available("gzip") and publish.compression_available("none")


def test_importing_the_publisher_module_loads_no_client() -> None:
    import subprocess
    import sys

    code = "import sys, kafka_io.publish; print(sorted(m for m in ('kafka', 'aiokafka') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
