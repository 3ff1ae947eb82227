"""Four simulated datasets run through the stream stages in-process, and a SHA-256 over all
their derived (and late / dead-letter) records: the check that a change to the stages keeps
every output byte-identical (tests/streams/test_golden.py).

    .venv/bin/python -m tests.streams.golden   # prints the hashes
"""

from __future__ import annotations

import hashlib

from streams.config import StreamSettings
from tests.streams.crashsim import run_with_crash
from tests.streams.reference import run_reference
from tests.streams.simdata import START_S, scrape_records


def _msgs(records):
    return [(r.key, r.encode()) for r in records]


def digest(sent: list[tuple[str, bytes | None, bytes]]) -> str:
    """SHA-256 over the sorted (topic, key, value) of everything sent."""
    h = hashlib.sha256()
    for topic, key, value in sorted(sent, key=lambda m: (m[0], m[1] or b"", m[2])):
        h.update(topic.encode() + b"\0" + (key or b"") + b"\0" + value + b"\n")
    return h.hexdigest()


def bench_like() -> list:
    """The benchmark's input, shorter: 50 nodes of 1.28, one partition, one event per flush."""
    settings = StreamSettings(topic_prefix="g", partitions=1)
    return run_reference(settings, _msgs(scrape_records(nodes=50, minutes=7, version="1.28")))


def batched() -> list:
    """Two partitions, random interleaving, a flush per 7 events, a node that stops and
    leaves, a broken record and a late one."""
    settings = StreamSettings(topic_prefix="g", partitions=2, node_gone_after_s=180)
    records = scrape_records(nodes=5, minutes=12, seed=3, stop={"node-002": START_S + 240})
    data = _msgs(records)
    data.insert(17, (b"node-001", b"{broken"))
    data.append(_msgs(records[2:3])[0])
    return run_reference(settings, data, seed=4, batch=7)


def crashed() -> list:
    """The crash model: a kill at a table write half way, restart from the changelog prefix."""
    settings = StreamSettings(topic_prefix="g", partitions=2, idle_timeout_s=6.0, node_gone_after_s=180)
    records = scrape_records(nodes=4, minutes=9, seed=5, stop={"node-002": START_S + 120})
    messages = _msgs(records)
    _sent, writes = run_with_crash(settings, messages, None, seed=1, batch=7)
    got, _ = run_with_crash(settings, messages, writes // 2, seed=writes // 2, batch=7)
    return sorted(set(got))


def versions() -> list:
    """The other kube-proxy versions (1.25, 1.33) on three partitions, one node silent
    after two minutes, a flush per 3 events."""
    settings = StreamSettings(topic_prefix="g", partitions=3)
    old = scrape_records(nodes=4, minutes=8, seed=11, version="1.25", stop={"node-001": START_S + 120})
    new = scrape_records(nodes=4, minutes=8, seed=12, version="1.33")
    return (run_reference(settings, _msgs(old), seed=2, batch=3)
            + run_reference(settings, _msgs(new), seed=3, batch=3))


DATASETS = {"bench_like": bench_like, "batched": batched, "crashed": crashed, "versions": versions}


if __name__ == "__main__":
    for name, run in DATASETS.items():
        sent = run()
        print(f"{name}: {len(sent)} records {digest(sent)}")
