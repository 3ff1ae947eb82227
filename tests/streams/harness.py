"""Real Kafka, real `kpp stream` worker processes: helpers for the integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer

from kafka_io.admin import ensure_topics
from kafka_io.connection import KafkaConnection
from streams.app import topic_specs
from streams.config import StreamSettings
from tests.conftest import REPO, free_port


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def create_topics(kafka: KafkaConnection, prefix: str, partitions: int) -> None:
    """The input and the stage's own topics (the worker's own list, streams/app.py's
    topic_specs), with the partition count the workers expect and unlimited retention: the
    test data is stamped in 2023, and Kafka's retention check (every 5 minutes, 7 days by
    default) would delete records mid-test."""
    settings = StreamSettings(topic_prefix=prefix, partitions=partitions)
    ensure_topics(kafka, topic_specs(settings, {"retention.ms": "-1"}), client_id="kpp-test-topics")


def produce(kafka: KafkaConnection, topic: str, messages: list[tuple[bytes | None, bytes, int | None]],
            batch_size: int = 16384, linger_ms: int = 5) -> None:
    producer = KafkaProducer(**kafka.kafka_python_kwargs(), batch_size=batch_size, linger_ms=linger_ms,
                             max_in_flight_requests_per_connection=1)
    try:
        for key, value, ts in messages:
            producer.send(topic, key=key, value=value, timestamp_ms=ts)
        producer.flush(30)
    finally:
        producer.close()


class Worker:
    """One `kpp stream` process."""

    def __init__(self, kafka: KafkaConnection, prefix: str, partitions: int, tmp: Path, *extra: str,
                 name: str = "w", entry: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.log_path = tmp / f"{prefix}-{name}-{uuid.uuid4().hex[:6]}.log"
        self.data_dir = tmp / f"data-{name}-{uuid.uuid4().hex[:6]}"
        args = [*(entry or [sys.executable, "-m", "kpp"]), "--log-level", "INFO", "stream",
                "--kafka-bootstrap", kafka.bootstrap, "--topic-prefix", prefix,
                "--partitions", str(partitions), "--web-port", str(free_port()),
                "--data-dir", str(self.data_dir), *extra]
        self.log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


class Collector:
    """Reads every message of some topics from the beginning."""

    def __init__(self, kafka: KafkaConnection, topics: list[str]) -> None:
        self.consumer = KafkaConsumer(**kafka.kafka_python_kwargs(), auto_offset_reset="earliest",
                                      enable_auto_commit=False, group_id=None, consumer_timeout_ms=500)
        self.topics = topics
        self.consumer.subscribe(topics)
        self.messages: list[tuple[str, bytes | None, bytes, int]] = []

    def poll(self) -> int:
        got = 0
        for batch in self.consumer.poll(timeout_ms=500, max_records=5000).values():
            for m in batch:
                self.messages.append((m.topic, m.key, m.value, m.timestamp))
                got += 1
        return got

    def settle(self, quiet_s: float, timeout_s: float, until=None) -> list:
        """Poll until `until(messages)` holds (if given) and nothing new came for quiet_s."""
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            if self.poll():
                last_new = time.monotonic()
            elif time.monotonic() - last_new >= quiet_s and (until is None or until(self.messages)):
                return self.messages
        raise AssertionError(f"output did not settle within {timeout_s} s ({len(self.messages)} messages)")

    def close(self) -> None:
        self.consumer.close()
