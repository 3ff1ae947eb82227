"""A real `kpp stream` worker fed a node serving 10,000 series of one family: its node state
(~3.7 MB as plain JSON, over the broker's default 1 MiB per record) is written compressed, so
the worker keeps running (no exit 75 on a refused changelog record) and its derived records
equal the in-process reference byte for byte."""

from __future__ import annotations

import json

import pytest

from tests.streams.harness import Collector, Worker, create_topics, produce, unique_prefix
from tests.streams.reference import run_reference
from tests.streams.simdata import scrape_records
from tests.streams.test_state_size import wide
from tests.streams.test_stream_kafka import IDLE, KINDS, assert_same_output, derived, normalise, settings_for

pytestmark = pytest.mark.integration


def test_a_worker_fed_a_10000_series_family_keeps_running_and_matches_the_reference(kafka, tmp_path):
    prefix, partitions = unique_prefix(), 1
    create_topics(kafka, prefix, partitions)
    records = [wide(r, step=i) if r.node == "node-000" else r
               for i, r in enumerate(scrape_records(nodes=2, minutes=3))]
    messages = [(r.key, r.encode(), r.scrape_ts_ms) for r in records]
    assert max(len(v) for _k, v, _ts in messages) < 1_000_000  # the samples topic takes it
    produce(kafka, f"{prefix}.samples", messages)
    settings = settings_for(prefix, partitions)
    expected = normalise(run_reference(settings, [(k, v) for k, v, _ in messages]), prefix)

    collector = Collector(kafka, [f"{prefix}.{k}" for k in (*KINDS, "dlq")])
    worker = Worker(kafka, prefix, partitions, tmp_path, "--idle-timeout", IDLE)
    try:
        out = collector.settle(8, 180, until=lambda m: worker.proc.poll() is not None
                               or len(set(derived(m, prefix))) >= len(set(expected)))
        exit_code = worker.proc.poll()
    finally:
        worker.stop()
        collector.close()
    assert exit_code is None, f"the worker exited with {exit_code}:\n{worker.output()[-4000:]}"
    assert_same_output(derived(out, prefix), expected)
    assert not [json.loads(v) for t, _k, v, _ts in out if t == f"{prefix}.dlq"]
    assert "MessageSizeTooLarge" not in worker.output()
