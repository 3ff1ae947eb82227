"""Crash safety of the stages at every possible crash point (model in crashsim.py): the union
of what a crashed-and-restarted run emits equals an uncrashed run, and a record is emitted
again only with identical bytes."""

from __future__ import annotations

import json

import pytest

from streams.config import StreamSettings
from tests.streams.crashsim import run_with_crash
from tests.streams.simdata import scrape_records


def identity(topic: str, value: bytes) -> tuple:
    obj = json.loads(value)
    if "window" not in obj:  # late / dlq records: the whole record is its identity
        return (topic, value)
    return (topic, obj["scope"], obj["node"], obj["window"]["start_ms"], obj["window"]["end_ms"], obj["metric"],
            json.dumps(obj["labels"], sort_keys=True))


def check(got: list, expected: list) -> None:
    first: dict = {}
    for topic, _key, value in got:
        assert first.setdefault(identity(topic, value), value) == value, f"conflicting re-emission on {topic}"
    assert set(got) == set(expected)


@pytest.mark.parametrize("partitions,batch", [(1, 1), (2, 1), (2, 7), (1, 50)])
def test_every_crash_point_recovers_to_the_uncrashed_output(partitions, batch):
    """batch 1: a flush per event; 7 and 50: the agents' batching (a flush per n events)."""
    # node-002 stops after 2 minutes and is forgotten (node_gone_after) while others go on
    stop = {"node-002": 1_700_000_000 + 120}
    records = scrape_records(nodes=4, minutes=9, seed=5, stop=stop)
    messages = [(r.key, r.encode()) for r in records]
    settings = StreamSettings(topic_prefix="u", partitions=partitions, idle_timeout_s=6.0, node_gone_after_s=180)
    expected, writes = run_with_crash(settings, messages, None, seed=1, batch=batch)
    assert any(t == "u.quantiles" for t, _k, _v in expected)
    assert writes > 10
    # ~80 crash points spread over the run (every one of them passed when last run over all)
    for crash_at in range(partitions, writes, max(1, writes // 80)):
        got, _ = run_with_crash(settings, messages, crash_at, seed=crash_at, batch=batch)
        try:
            check(got, expected)
        except AssertionError as exc:
            raise AssertionError(f"crash at table write {crash_at} of {writes}: {exc}") from None
