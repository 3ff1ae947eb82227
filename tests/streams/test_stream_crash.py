"""Crash safety of the stream worker: kill -9 after the first window closed, restart, and the
derived output equals an uncrashed run.
"""

from __future__ import annotations

import time

from tests.streams.harness import Collector, Worker, create_topics, produce, unique_prefix
from tests.streams.reference import run_reference
from tests.streams.simdata import scrape_records
from tests.streams.test_stream_kafka import IDLE, KINDS, assert_same_output, derived, normalise, settings_for


def test_crash_kill9_and_restart_equals_uncrashed_run(kafka, tmp_path):
    """kill -9 the worker right after its first window closed (uncommitted work in flight),
    produce the rest, restart: the derived records equal the uncrashed reference."""
    prefix, partitions = unique_prefix(), 2
    create_topics(kafka, prefix, partitions)
    records = scrape_records(nodes=4, minutes=9, seed=5)
    messages = [(r.key, r.encode(), r.scrape_ts_ms) for r in records]
    half = len(messages) // 2
    produce(kafka, f"{prefix}.samples", messages[:half])
    expected = normalise(run_reference(settings_for(prefix, partitions), [(k, v) for k, v, _ in messages]), prefix)

    collector = Collector(kafka, [f"{prefix}.{k}" for k in KINDS])
    worker = Worker(kafka, prefix, partitions, tmp_path, "--idle-timeout", "30", name="first")
    try:
        deadline = time.monotonic() + 60
        while not collector.messages and time.monotonic() < deadline:
            collector.poll()
        assert collector.messages, worker.output()[-2000:]
        worker.kill9()
        produce(kafka, f"{prefix}.samples", messages[half:])
        worker = Worker(kafka, prefix, partitions, tmp_path, "--idle-timeout", IDLE, name="second")
        out = collector.settle(8, 240, until=lambda m: len(set(derived(m, prefix))) >= len(set(expected)))
    finally:
        worker.stop()
        collector.close()
    assert_same_output(derived(out, prefix), expected)
