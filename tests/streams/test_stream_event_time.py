"""A real `kpp stream` worker given scrape times it cannot believe (+2 h, 2^63-1, 0, -2^63):
it keeps running, puts them on `.late` with their reasons, and publishes for the good scrapes
exactly what the in-process reference publishes."""

from __future__ import annotations

import json
import time

import pytest

from tests.streams.harness import Collector, Worker, create_topics, produce, unique_prefix
from tests.streams.reference import run_reference
from tests.streams.simdata import scrape_records
from tests.streams.test_stages import record
from tests.streams.test_stream_kafka import IDLE, KINDS, assert_same_output, derived, normalise, settings_for

pytestmark = pytest.mark.integration


def test_unbelievable_scrape_times_go_to_late_and_the_worker_keeps_going(kafka, tmp_path):
    prefix, partitions = unique_prefix(), 2
    create_topics(kafka, prefix, partitions)
    start = 1_700_000_100
    records = scrape_records(nodes=3, minutes=6, start_s=start)
    now_ms = int(time.time() * 1000)
    bad = [record(node="node-001", ts=now_ms + 2 * 3600_000, cluster_name="sim"),  # a clock 2 h ahead
           record(node="node-002", ts=2**63 - 1, cluster_name="sim"),
           record(node="node-000", ts=0, cluster_name="sim"),
           record(node="node-001", ts=-2**63, cluster_name="sim")]
    messages = [(r.key, r.encode(), r.scrape_ts_ms) for r in records]
    for i, r in enumerate(bad):  # the broker stamps them: their Kafka timestamp is valid
        messages.insert(10 + 15 * i, (r.key, r.encode(), None))
    produce(kafka, f"{prefix}.samples", messages)
    settings = settings_for(prefix, partitions)
    expected = normalise(run_reference(settings, [(k, v) for k, v, _ in messages]), prefix)

    collector = Collector(kafka, [f"{prefix}.{k}" for k in (*KINDS, "late", "dlq")])
    worker = Worker(kafka, prefix, partitions, tmp_path, "--idle-timeout", IDLE)
    try:
        out = collector.settle(8, 120, until=lambda m: len(derived(m, prefix)) >= len(set(expected))
                               and sum(t == f"{prefix}.late" for t, *_ in m) >= len(bad))
        assert worker.proc.poll() is None, worker.log_path.read_text()[-3000:]
    finally:
        worker.stop()
        collector.close()
    assert_same_output(derived(out, prefix), expected)
    lates = [json.loads(v) for t, _k, v, _ts in out if t == f"{prefix}.late"]
    assert sorted((x["node"], x["scrape_ts_ms"], x["reason"]) for x in lates) == sorted(
        (r.node, r.scrape_ts_ms, "clock_skew" if r.scrape_ts_ms > 0 else "too_old") for r in bad)
    assert not [t for t, *_ in out if t == f"{prefix}.dlq"]
