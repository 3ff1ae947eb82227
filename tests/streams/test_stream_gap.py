"""A consumer that commits past records it never delivered must not lose them: the stage's
state knows the offset after the last event it holds, and reads a gap straight from Kafka.

Faust can skip events (paused flow control, a generation change, records of a partition it
deactivated) and fills offset gaps when it commits (faust-streaming/faust#606). Here the
group's committed offsets are moved past unprocessed records between two workers, which is
what such a skip leaves behind; the derived records must still equal the reference run."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata, TopicPartition

from kafka_io.admin import group_lag
from streams.app import app_id
from tests.streams.harness import Collector, Worker, create_topics, produce, unique_prefix
from tests.streams.reference import run_reference
from tests.streams.simdata import scrape_records
from tests.streams.test_stream_kafka import IDLE, KINDS, assert_same_output, derived, normalise, settings_for

pytestmark = pytest.mark.integration

SKIPPED = 5  # records per partition the "consumer" commits past without delivering them


def test_records_committed_past_without_processing_are_read_and_counted(kafka, tmp_path):
    prefix, partitions = unique_prefix(), 2
    create_topics(kafka, prefix, partitions)
    records = scrape_records(nodes=6, minutes=12, seed=17)
    messages = [(r.key, r.encode(), r.scrape_ts_ms) for r in records]
    half = len(messages) // 2
    produce(kafka, f"{prefix}.samples", messages[:half])
    expected = normalise(run_reference(settings_for(prefix, partitions), [(k, v) for k, v, _ in messages]), prefix)
    settings = settings_for(prefix, partitions)
    group, samples = app_id(settings), f"{prefix}.samples"

    collector = Collector(kafka, [f"{prefix}.{k}" for k in KINDS])
    worker = Worker(kafka, prefix, partitions, tmp_path, "--idle-timeout", "3600", name="first")
    try:
        deadline = time.monotonic() + 120
        while sum(group_lag(kafka, group, [samples]).values()) != 0:
            assert time.monotonic() < deadline and worker.proc.poll() is None, worker.output()[-3000:]
            time.sleep(0.5)
        worker.stop()
        produce(kafka, samples, messages[half:])

        # commit past SKIPPED unprocessed records of every partition
        mover = KafkaConsumer(**kafka.kafka_python_kwargs(), group_id=group, enable_auto_commit=False)
        try:
            tps = [TopicPartition(samples, p) for p in range(partitions)]
            committed = {tp: mover.committed(tp) for tp in tps}
            ends = mover.end_offsets(tps)
            assert all(ends[tp] - committed[tp] > SKIPPED for tp in tps), (committed, ends)
            mover.assign(tps)
            mover.commit({tp: OffsetAndMetadata(committed[tp] + SKIPPED, "", -1) for tp in tps})
        finally:
            mover.close()

        worker = Worker(kafka, prefix, partitions, tmp_path, "--idle-timeout", IDLE, name="second")
        out = collector.settle(8, 240, until=lambda m: len(set(derived(m, prefix))) >= len(set(expected)))
        log = worker.output()
    finally:
        worker.stop()
        collector.close()
    assert_same_output(derived(out, prefix), expected)
    for p in range(partitions):
        assert f"{samples}[{p}]: the consumer delivered offset" in log, log[-3000:]
