"""A worker stopped (SIGTERM) while it flushes a batch must not commit that batch: the next
owner of the partition processes it again, and the derived records equal an uninterrupted
run. Faust's `take_events` acknowledged the batch in a `finally` when the stopping worker
closed the agent, so those scrapes were counted in no window (streams/agents.py)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from tests.streams.harness import Collector, Worker, create_topics, produce, unique_prefix
from tests.streams.reference import run_reference
from tests.streams.simdata import scrape_records
from tests.streams.test_stream_kafka import IDLE, KINDS, assert_same_output, derived, normalise, settings_for

pytestmark = pytest.mark.integration

HELD = [sys.executable, str(Path(__file__).with_name("held_flush_worker.py"))]


def test_sigterm_during_a_flush_commits_nothing_of_that_batch(kafka, tmp_path):
    prefix, partitions = unique_prefix(), 2
    create_topics(kafka, prefix, partitions)
    records = scrape_records(nodes=20, minutes=20, seed=11)
    messages = [(r.key, r.encode(), r.scrape_ts_ms) for r in records]
    produce(kafka, f"{prefix}.samples", messages)
    expected = normalise(run_reference(settings_for(prefix, partitions), [(k, v) for k, v, _ in messages]), prefix)

    collector = Collector(kafka, [f"{prefix}.{k}" for k in KINDS])
    worker = Worker(kafka, prefix, partitions, tmp_path, "--idle-timeout", IDLE, "--trace-scrapes",
                    name="held", entry=HELD, env={"KPP_TEST_HOLD_S": "1.5"})
    try:
        deadline = time.monotonic() + 120
        while "HOLDING FLUSH" not in worker.output():
            assert time.monotonic() < deadline and worker.proc.poll() is None, worker.output()[-3000:]
            time.sleep(0.2)
        worker.proc.send_signal(signal.SIGTERM)
        worker.proc.wait(60)
        held_log = worker.output()
        worker = Worker(kafka, prefix, partitions, tmp_path, "--idle-timeout", IDLE, "--trace-scrapes",
                        name="next")
        out = collector.settle(8, 240, until=lambda m: len(set(derived(m, prefix))) >= len(set(expected)))
    finally:
        worker.stop()
        collector.close()
    assert "HOLDING FLUSH" in held_log
    assert_same_output(derived(out, prefix), expected)
