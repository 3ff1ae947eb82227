"""The publisher against a real Kafka: order, exactly once, Kafka away, a broker restart."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from contracts.errors import ConfigError
from kafka_io.connection import KafkaConnection
from producers.publish import Publisher
from producers.spool import Spool
from stack.kafka import KafkaService
from tests.conftest import consume, free_port, wait_until

log = logging.getLogger(__name__)


def assert_exactly_once_in_order(received: list[tuple[bytes, bytes]], expected: dict[bytes, int]) -> None:
    """Values are b"<key>:<seq>"; every key's sequence 0..n-1 arrived once, in order."""
    per_key: dict[bytes, list[int]] = defaultdict(list)
    for key, value in received:
        value_key, _, seq = value.rpartition(b":")
        assert value_key == key
        per_key[key].append(int(seq))
    assert set(per_key) == set(expected)
    for key, n in expected.items():
        assert per_key[key] == list(range(n)), f"key {key!r}: {len(per_key[key])} received of {n}"


def test_500_records_for_10_keys_exactly_once_in_order(kafka: KafkaConnection, topic_name: str,
                                                        tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    publisher = Publisher(kafka, topic_name, spool, batch_records=100)
    publisher.start()
    keys = [f"node-{k}".encode() for k in range(10)]
    for i in range(500):
        key = keys[i % 10]
        publisher.submit(key, key + b":%d" % (i // 10), timestamp_ms=int(time.time() * 1000))
    assert wait_until(lambda: publisher.stats.spool_depth == 0, 30)
    stats = publisher.stats
    publisher.stop()
    spool.close()
    assert stats.sent_records == 500 and stats.connected and stats.send_errors == 0
    assert stats.latency_count == 500 and stats.avg_latency_s is not None and stats.last_latency_s is not None
    received = consume(kafka, topic_name, 500)
    assert_exactly_once_in_order(received, {k: 50 for k in keys})


def test_kafka_away_submit_does_not_block_and_loses_nothing(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    dead = KafkaConnection(bootstrap=f"127.0.0.1:{free_port()}")
    spool = Spool(tmp_path / "spool")
    publisher = Publisher(dead, "test.kafka-away", spool)
    with caplog.at_level(logging.INFO, logger="producers.publish"):
        publisher.start()
        started = time.monotonic()
        for i in range(100):
            publisher.submit(b"node-a", b"node-a:%d" % i)
        submit_time = time.monotonic() - started
        assert submit_time < 2.0
        assert wait_until(lambda: publisher.stats.send_errors >= 2, 15)
        stats = publisher.stats
        publisher.stop(timeout=1)
    assert stats.spool_depth == 100 and stats.sent_records == 0 and not stats.connected
    assert stats.last_error and "connect" in stats.last_error
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "unreachable" in r.getMessage()]
    assert len(warnings) == 1, "one warning per outage, not one per retry"
    assert spool.depth == 100
    spool.close()
    assert Spool(tmp_path / "spool").depth == 100


def test_stop_flushes_what_was_submitted(kafka: KafkaConnection, topic_name: str, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    publisher = Publisher(kafka, topic_name, spool, linger_ms=200)
    publisher.start()
    for i in range(50):
        publisher.submit(b"node-a", b"node-a:%d" % i)
    publisher.stop(timeout=20)  # straight away: stop() must send them
    assert spool.depth == 0 and publisher.stats.sent_records == 50
    spool.close()
    assert_exactly_once_in_order(consume(kafka, topic_name, 50), {b"node-a": 50})


def test_records_spooled_while_kafka_was_away_are_sent_on_next_start(
        kafka: KafkaConnection, topic_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool_dir = tmp_path / "spool"
    # First life: the broker is away; records are spooled, then the process "dies".
    spool = Spool(spool_dir)
    dead = Publisher(KafkaConnection(bootstrap=f"127.0.0.1:{free_port()}"), topic_name, spool)
    dead.start()
    for i in range(30):
        dead.submit(b"node-b", b"node-b:%d" % i)
    dead.stop(timeout=0.5)
    spool.close()
    # Second life: same spool folder, Kafka there.
    spool = Spool(spool_dir)
    assert spool.depth == 30
    publisher = Publisher(kafka, topic_name, spool)
    started = time.monotonic()
    publisher.start()
    assert wait_until(lambda: spool.depth == 0, 30)
    log.info("30 spooled records drained in %.2f s after the restart", time.monotonic() - started)
    stats = publisher.stats
    publisher.stop()
    spool.close()
    assert stats.sent_records == 30
    # latency counts from the append in the first life
    assert stats.last_latency_s is not None and stats.last_latency_s >= 0.5
    assert_exactly_once_in_order(consume(kafka, topic_name, 30), {b"node-b": 30})


def test_missing_codec_library_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kafka import codec

    monkeypatch.setattr(codec, "has_lz4", lambda: False)
    monkeypatch.setattr(codec, "has_zstd", lambda: False)
    with Spool(tmp_path) as spool:
        for name in ("lz4", "zstd"):
            with pytest.raises(ConfigError, match=rf"pip install 'kube-proxy-pipeline\[{name}\]'"):
                Publisher(KafkaConnection(), "t", spool, compression_type=name)
        with pytest.raises(ConfigError):
            Publisher(KafkaConnection(), "t", spool, compression_type="brotli")


# -- the failure path, with a scripted producer ---------------------------------------------


class ScriptedFuture:
    def __init__(self, error: Exception | None) -> None:
        self.is_done = True
        self.error = error

    def get(self, timeout: float | None = None) -> object:
        if self.error is not None:
            raise self.error
        return object()


class ScriptedProducer:
    """Fails the first send of the values in `fail_once`; refuses `too_large` on send()."""

    def __init__(self, fail_once: set[bytes], too_large: set[bytes]) -> None:
        self.fail_once, self.too_large = fail_once, too_large
        self.sent: list[bytes] = []

    def send(self, topic: str, key: bytes, value: bytes, timestamp_ms: int | None = None) -> ScriptedFuture:
        from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

        if value in self.too_large:
            raise MessageSizeTooLargeError("too large")
        self.sent.append(value)
        if value in self.fail_once:
            self.fail_once.discard(value)
            return ScriptedFuture(KafkaTimeoutError("Expiring 1 record(s): delivery timeout"))
        return ScriptedFuture(None)

    def close(self, timeout: float | None = None) -> None:
        pass


def test_failure_resends_from_the_first_failed_record_in_order(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    producer = ScriptedProducer(fail_once={b"5"}, too_large={b"3"})
    monkeypatch.setattr(Publisher, "_create_producer", lambda self: producer)
    spool = Spool(tmp_path / "spool")
    for i in range(10):  # records 5 and 8 share a key; the others have one each
        spool.append(b"k5" if i == 8 else b"k%d" % i, b"%d" % i)
    publisher = Publisher(KafkaConnection(), "t", spool, batch_records=10)
    publisher.start()
    assert wait_until(lambda: spool.depth == 0, 10)
    stats = publisher.stats
    publisher.stop()
    spool.close()
    # first pass: all but the refused one; 5 failed, so it is sent again, and 8 after it (same
    # key: its order must hold); 6, 7 and 9 reached Kafka and are not sent twice
    assert producer.sent == [b"0", b"1", b"2", b"4", b"5", b"6", b"7", b"8", b"9", b"5", b"8"]
    assert stats.rejected_records == 1 and stats.send_errors == 1 and stats.connected
    assert stats.sent_records == 10 and stats.latency_count == 10  # 8 was acknowledged twice
    assert stats.last_error and "delivery timeout" in stats.last_error


class RefusingBroker:
    """Refuses values in `too_large` as a broker does (in the future), after which — like
    kafka-python's idempotent producer — every later record of that producer fails the same way."""

    def __init__(self, too_large: set[bytes]) -> None:
        self.too_large = too_large
        self.sent: list[bytes] = []
        self.producers = 0

    def create(self) -> "RefusingBroker":
        self.producers += 1
        self.poisoned = False
        return self

    def send(self, topic: str, key: bytes, value: bytes, timestamp_ms: int | None = None) -> ScriptedFuture:
        from kafka.errors import MessageSizeTooLargeError

        if self.poisoned or value in self.too_large:
            self.poisoned = True
            return ScriptedFuture(MessageSizeTooLargeError())
        self.sent.append(value)
        return ScriptedFuture(None)

    def close(self, timeout: float | None = None) -> None:
        pass


def test_a_record_the_broker_refuses_is_replaced_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = RefusingBroker(too_large={b"2"})
    monkeypatch.setattr(Publisher, "_create_producer", lambda self: broker.create())
    spool = Spool(tmp_path / "spool")
    for i in range(5):
        spool.append(b"k", b"%d" % i)
    publisher = Publisher(KafkaConnection(), "t", spool, batch_records=10,
                          replace_too_large=lambda value, why: b"stand-in for " + value)
    publisher.start()
    assert wait_until(lambda: spool.depth == 0, 10)
    stats = publisher.stats
    publisher.stop()
    spool.close()
    # 3 and 4 failed only because the producer was poisoned: sent again, after the stand-in
    assert broker.sent == [b"0", b"1", b"stand-in for 2", b"3", b"4"]
    assert broker.producers == 2 and stats.rejected_records == 0 and stats.send_errors == 0


# -- a real broker restart ------------------------------------------------------------------


@pytest.mark.integration
def test_broker_restart_loses_nothing_and_keeps_order(private_kafka: KafkaService, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    connection = KafkaConnection(bootstrap=private_kafka.address)
    topic = "test.broker-restart"
    spool = Spool(tmp_path / "spool")
    publisher = Publisher(connection, topic, spool)
    keys = [f"node-{k}".encode() for k in range(10)]
    sent = {k: 0 for k in keys}
    running = threading.Event()
    running.set()

    def scrape_loop() -> None:  # ~20 records/s from 10 keys
        i = 0
        while running.is_set():
            key = keys[i % 10]
            publisher.submit(key, key + b":%d" % sent[key], timestamp_ms=int(time.time() * 1000))
            sent[key] += 1
            i += 1
            time.sleep(0.05)

    with caplog.at_level(logging.INFO, logger="producers.publish"):
        publisher.start()
        feeder = threading.Thread(target=scrape_loop)
        feeder.start()
        try:
            time.sleep(4)
            assert publisher.stats.connected and publisher.stats.sent_records > 0
            down_at = time.monotonic()
            private_kafka.down()
            down_took = time.monotonic() - down_at
            time.sleep(20)
            depth_in_outage = publisher.stats.spool_depth
            assert not publisher.stats.connected
            up_at = time.monotonic()
            private_kafka.up()
            up_took = time.monotonic() - up_at
            outage = time.monotonic() - down_at
            back_at = time.monotonic()
            reconnected = wait_until(lambda: publisher.stats.connected and publisher.stats.spool_depth < 5, 45)
            drain_time = time.monotonic() - back_at
            time.sleep(3)
        finally:
            running.clear()
            feeder.join()
        publisher.stop(timeout=20)
    stats = publisher.stats
    spool.close()
    total = sum(sent.values())
    log.warning("broker restart: outage %.1f s (down() %.1f s, up() %.1f s), %d records spooled during it, "
                "drained %.1f s after up() returned; %d records submitted, %d sent, %d send errors",
                outage, down_took, up_took, depth_in_outage, drain_time, total, stats.sent_records,
                stats.send_errors)
    assert reconnected, f"not drained within 45 s of the broker's return: {stats}"
    assert stats.spool_depth == 0
    assert depth_in_outage > 100
    received = consume(connection, topic, total, timeout=30)
    assert_exactly_once_in_order(received, sent)
    messages = [r.getMessage() for r in caplog.records if r.name == "producers.publish"]
    assert sum("unreachable" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1
