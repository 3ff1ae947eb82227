"""kafka_io.reader: the range planning and end condition (pure), and the reader against the
real broker (time range, end offsets captured at open, following, resuming from commits, a
missing topic, an unreachable broker)."""

from __future__ import annotations

import time
import uuid
from collections import namedtuple

import pytest

from kafka_io.connection import KafkaConnection, KafkaTopicMissingError, KafkaUnavailableError
from kafka_io.reader import (BEGINNING, COMMITTED, END, FOLLOW, At, PartitionRange, SyncRangeReader, finished,
                             plan_range, take)
from tests.conftest import free_port, wait_until

# -- pure: where a range starts and stops ------------------------------------------------------


def test_start_positions() -> None:
    def start(kind, **found) -> int:  # noqa: ANN001
        return plan_range("t", 0, kind, END, begin=100, end=500, **found).start

    assert start(BEGINNING) == 100
    assert start(END) == 500
    assert start(At(1_000), start_found=250) == 250
    assert start(At(1_000), start_found=None) == 500  # nothing stamped that late: only what comes next
    assert start(At(1_000), start_found=40) == 100  # never before the oldest retained
    assert start(COMMITTED, committed=300) == 300
    assert start(COMMITTED, committed=None) == 100  # nothing committed yet: from the beginning
    assert start(COMMITTED, committed=20) == 100  # committed, then deleted by retention


def test_stop_positions() -> None:
    def stop(kind, **found) -> int | None:  # noqa: ANN001
        return plan_range("t", 0, BEGINNING, kind, begin=100, end=500, **found).stop

    assert stop(END) == 500  # the end captured at open: later records are not read
    assert stop(At(2_000), stop_found=420) == 420  # before the first record stamped at or after
    assert stop(At(2_000), stop_found=None) == 500  # no record that late yet: the end at open
    assert stop(FOLLOW) is None


def test_empty_ranges() -> None:
    assert plan_range("t", 0, At(5), At(5), begin=0, end=10, start_found=7, stop_found=7).empty
    assert plan_range("t", 0, END, END, begin=0, end=10).empty
    assert plan_range("t", 0, BEGINNING, END, begin=10, end=10).empty  # an empty partition
    assert not plan_range("t", 0, BEGINNING, END, begin=0, end=10).empty
    assert not PartitionRange("t", 0, 10, None).empty  # following: never empty


def test_unknown_positions_are_refused() -> None:
    with pytest.raises(ValueError):
        plan_range("t", 0, "latest", END, begin=0, end=1)
    with pytest.raises(ValueError):
        plan_range("t", 0, BEGINNING, "later", begin=0, end=1)
    with pytest.raises(ValueError):
        SyncRangeReader(KafkaConnection(), "t", start=COMMITTED)  # resuming needs a group


Fetched = namedtuple("Fetched", "offset")


def test_a_batch_is_cut_at_the_stop() -> None:
    batch = [Fetched(o) for o in (5, 6, 7, 8)]
    assert take(batch, 100) == (batch, False)
    assert take(batch, None) == (batch, False)
    assert take(batch, 7) == (batch[:2], True)
    assert take(batch, 9) == (batch, False)
    assert take(batch, 8) == (batch[:3], True)
    assert take(batch, 5) == ([], True)
    assert take([], 5) == ([], False)


def test_a_partition_is_finished_at_its_stop_even_without_a_record_there() -> None:
    # a transaction marker or compaction can leave no record at stop - 1
    assert finished(10, 10) and finished(11, 10)
    assert not finished(9, 10)
    assert not finished(10**9, None)  # following never finishes


# -- against the broker ------------------------------------------------------------------------

PARTITIONS = 3
BASE_MS = (int(time.time()) - 3600) * 1000  # recent: retention never deletes the records mid-test


@pytest.fixture
def stamped_topic(kafka: KafkaConnection):
    """60 records, 20 per partition, stamped BASE_MS + i seconds."""
    from kafka_io.admin import TopicSpec, ensure_topics
    from kafka_io.publish import kafka_python_producer

    topic = f"test.reader.{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka, [TopicSpec(topic, PARTITIONS, {"retention.ms": "-1"})])
    producer = kafka_python_producer(kafka, client_id="kpp-test-reader", acks="all")
    for i in range(60):
        producer.send(topic, partition=i % PARTITIONS, key=b"k%d" % i, value=b"v%d" % i,
                      timestamp_ms=BASE_MS + i * 1000)
    producer.flush(30)
    return topic, producer


def read_until_done(reader: SyncRangeReader, timeout_s: float = 30.0) -> list:
    out: list = []
    deadline = time.monotonic() + timeout_s
    while not reader.done:
        assert time.monotonic() < deadline, "the range did not finish"
        out.extend(reader.read(0.2))
    return out


@pytest.mark.integration
def test_reads_a_time_range_and_stops_at_the_end_captured_at_open(kafka: KafkaConnection, stamped_topic) -> None:
    topic, producer = stamped_topic
    with SyncRangeReader(kafka, topic, start=At(BASE_MS + 10_000), stop=At(BASE_MS + 40_000)) as reader:
        got = read_until_done(reader)
    assert sorted(int(r.value[1:]) for r in got) == list(range(10, 40))
    for p in range(PARTITIONS):
        offsets = [r.offset for r in got if r.partition == p]
        assert offsets == sorted(offsets) and len(offsets) == 10
    assert all(r.timestamp_ms == BASE_MS + int(r.value[1:]) * 1000 and r.topic == topic for r in got)

    with SyncRangeReader(kafka, topic, start=BEGINNING, stop=END, partitions=[1]) as reader:
        producer.send(topic, partition=1, key=b"late", value=b"v999", timestamp_ms=BASE_MS).get(30)
        got = read_until_done(reader)
    assert [int(r.value[1:]) for r in got] == list(range(1, 60, 3))  # partition 1 only, not the later record
    producer.close(10)


@pytest.mark.integration
def test_follows_live_and_resumes_from_its_commits(kafka: KafkaConnection, stamped_topic) -> None:
    topic, producer = stamped_topic
    group = f"test-reader-{uuid.uuid4().hex[:6]}"
    seen: list = []
    with SyncRangeReader(kafka, topic, start=END, stop=FOLLOW, group_id=group) as reader:
        assert all(r.start == 20 for r in reader.ranges.values())
        producer.send(topic, partition=2, key=b"new", value=b"v100").get(30)
        assert wait_until(lambda: seen.extend(reader.read(0.2)) or seen, 30)
        assert not reader.done
        reader.commit({(topic, 2): 21, (topic, 0): 5})
    assert [(r.partition, r.offset, r.value) for r in seen] == [(2, 20, b"v100")]
    with SyncRangeReader(kafka, topic, start=COMMITTED, stop=END, group_id=group) as reader:
        assert {p: reader.ranges[(topic, p)].start for p in range(PARTITIONS)} == {0: 5, 1: 0, 2: 21}
        got = read_until_done(reader)
    assert len(got) == 15 + 20 + 0
    producer.close(10)


@pytest.mark.integration
def test_a_missing_topic_is_the_one_line_error_and_is_not_created(kafka: KafkaConnection) -> None:
    from kafka import KafkaAdminClient

    topic = f"test.reader.missing.{uuid.uuid4().hex[:8]}"
    with pytest.raises(KafkaTopicMissingError, match=f"'{topic}' does not exist"):
        SyncRangeReader(kafka, topic).open()
    admin = KafkaAdminClient(**kafka.kafka_python_kwargs())
    try:
        assert topic not in admin.list_topics()  # the broker auto-creates topics a metadata request names
    finally:
        admin.close()


def test_an_unreachable_broker_is_the_one_line_error_within_the_timeout() -> None:
    connection = KafkaConnection(bootstrap=f"127.0.0.1:{free_port()}", timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(KafkaUnavailableError, match="no broker answered") as raised:
        SyncRangeReader(connection, "any").open()
    assert time.monotonic() - started < 2.0 + 5.0
    assert "connection refused" in str(raised.value) and "--kafka-bootstrap" in str(raised.value)
