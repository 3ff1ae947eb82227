"""`kpp replay`: the same stage logic in one process, against the real broker, compared byte
for byte with what a real `kpp stream` worker published."""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections import defaultdict

import pytest

from streams.cli_replay import parse_time, register
from streams.config import StreamSettings
from streams.replay import Message, Replayer, _partition_of, merge_by_time
from tests.streams.harness import Collector, Worker, produce, unique_prefix
from tests.streams.reference import run_reference
from tests.streams.harness import create_topics
from tests.streams.replay_helpers import KINDS, derived, identity, inside, rfc3339, run_kpp, validate_all
from tests.streams.simdata import scrape_records

START = 1_700_002_500  # a multiple of 300 s
IDLE = "6"


def _normalise(sent, prefix):
    names = {f"{prefix}.{k}": k for k in KINDS}
    return [(names[t], k, v) for t, k, v in sent if t in names]


# -- without Kafka ----------------------------------------------------------------------------

def test_replayer_equals_reference_and_filters_windows():
    records = scrape_records(nodes=5, minutes=10, seed=3, start_s=START)
    settings = StreamSettings(topic_prefix="p", partitions=2)
    expected = set(_normalise(run_reference(settings, [(r.key, r.encode()) for r in records]), "p"))

    def replay(from_ms=None, to_ms=None):
        per = defaultdict(list)
        for r in records:
            p = _partition_of(r.key, 2)
            per[p].append(Message(p, len(per[p]), r.scrape_ts_ms, r.key, r.encode()))
        out = []
        replayer = Replayer(settings, lambda t, k, v, ts: out.append((t, k, v)), from_ms=from_ms, to_ms=to_ms,
                            output_prefix="ns.p")
        stats = asyncio.run(replayer.run(merge_by_time({p: iter(m) for p, m in per.items()})))
        return set(_normalise(out, "ns.p")), stats

    got, stats = replay()
    assert got == expected
    assert stats.records_in == len(records) and stats.records_out == len(expected)
    assert {size for size, _start in stats.windows} == {60, 300}

    lo, hi = (START + 240) * 1000, (START + 480) * 1000
    got, stats = replay(lo, hi)
    want = inside(expected, lo, hi)
    assert got == want and len(want) > 0
    assert stats.outside_range == len(expected) - len(want)


class ChunkedReader:
    """Stands in for kafka_io's RangeReader: hands out each partition's records a few at a
    time, and only for the partitions asked for."""

    def __init__(self, topic, per_partition, chunk):
        self.topic, self.left, self.chunk = topic, {p: list(m) for p, m in per_partition.items()}, chunk
        self.reads = 0

    def finished_partitions(self):
        return {(self.topic, p) for p, left in self.left.items() if not left}

    async def read(self, timeout_s, only):
        self.reads += 1
        out = []
        for _topic, p in sorted(only):
            out.extend(self.left[p][:self.chunk])
            del self.left[p][:self.chunk]
        return out


def test_the_kafka_source_merges_partitions_as_merge_by_time():
    from streams.replay import KafkaSource
    import random

    rng = random.Random(5)
    per = {p: [] for p in range(4)}
    for offset in range(300):
        p = rng.randrange(3)  # partition 3 holds nothing in the range
        per[p].append(Message(p, len(per[p]), 1_000 + rng.randrange(0, 5000), b"k", b"v%d" % offset))
    for msgs in per.values():
        msgs.sort(key=lambda m: m.offset)
    source = KafkaSource.__new__(KafkaSource)  # its Kafka part replaced by the stand-in reader
    source.topic, source.stall_timeout_s = "t", 5.0
    source.reader = ChunkedReader("t", per, chunk=7)
    source.start = {p: 0 for p in per}
    source.stop = {p: len(m) for p, m in per.items()}

    async def collect():
        return [m async for m in source.messages()]

    assert asyncio.run(collect()) == list(merge_by_time({p: iter(m) for p, m in per.items()}))
    assert source.empty_partitions == [3]


def test_time_arguments():
    now = 1_800_000_000.0
    assert parse_time("6h", "--from", now) == parse_time("-6h", "--from", now) == int((now - 6 * 3600) * 1000)
    assert parse_time("now", "--to", now) == int(now * 1000)
    assert parse_time("2026-01-02T15:04:05Z", "--from", now) == 1767366245000
    with pytest.raises(Exception, match="--from"):
        parse_time("yesterday", "--from", now)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["replay", "--from=-6h", "--to", "2h", "--namespace", "x", "--speed", "10"])
    assert (args.from_time, args.to_time, args.namespace, args.speed) == ("-6h", "2h", "x", 10.0)


# -- real Kafka, real worker -----------------------------------------------------------------

@pytest.mark.integration
def test_replay_is_byte_identical_to_the_live_worker(kafka, tmp_path):
    prefix, partitions = unique_prefix(), 2
    create_topics(kafka, prefix, partitions)
    records = scrape_records(nodes=4, minutes=10, seed=13, start_s=START)
    produce(kafka, f"{prefix}.samples", [(r.key, r.encode(), r.scrape_ts_ms) for r in records])
    settings = StreamSettings(topic_prefix=prefix, partitions=partitions, idle_timeout_s=float(IDLE))
    want = len(set(_normalise(run_reference(settings, [(r.key, r.encode()) for r in records]), prefix)))

    collector = Collector(kafka, [f"{prefix}.{k}" for k in KINDS])
    worker = Worker(kafka, prefix, partitions, tmp_path, "--idle-timeout", IDLE)
    try:
        collector.settle(6, 80, until=lambda m: len({(t, v) for t, _k, v, _ts in m}) >= want)
    finally:
        worker.stop()
        collector.close()
    live = derived(kafka, prefix)
    live_set = set(live)
    assert len(live_set) == want
    validate_all(live)

    # 1. the whole range into a namespace: every record byte-identical, none missing, none extra
    common = ("--topic-prefix", prefix, "--kafka-bootstrap", kafka.bootstrap, "--progress", "lines")
    proc, elapsed = run_kpp("replay", "--from", rfc3339(START * 1000), "--to", rfc3339((START + 900) * 1000),
                            "--namespace", "ns", *common)
    replayed = derived(kafka, f"ns.{prefix}")
    assert len(replayed) == len(set(replayed)), "a replay publishes every record once"
    assert set(replayed) == live_set
    assert validate_all(replayed) == len(live_set)
    summary = proc.stderr.strip().splitlines()[-1]
    assert f"{len(records)} records in, {len(live_set)} derived records out" in summary, summary
    rate = re.search(r"([\d,]+) records/s", summary).group(1)
    print(f"replay: {len(records)} scrapes -> {len(live_set)} derived records, byte-identical to the live "
          f"worker; {elapsed:.1f} s wall (process), {rate} records/s in the replay loop")

    # 2. a middle range (warm-up from the data before it): exactly the live records of its windows
    lo, hi = (START + 240) * 1000, (START + 480) * 1000
    run_kpp("replay", f"--from={rfc3339(lo)}", "--to", rfc3339(hi), "--namespace", "mid", *common)
    mid = derived(kafka, f"mid.{prefix}")
    want = inside(live_set, lo, hi)
    assert set(mid) == want and {r[0] for r in want} == set(KINDS)

    # 3. into the live topics: idempotent, only identical duplicates appear
    t0 = time.monotonic()
    run_kpp("replay", "--from", rfc3339(lo), "--to", rfc3339(hi), *common)
    after = derived(kafka, prefix)
    assert len(after) == len(live) + len(want)
    by_id = defaultdict(set)
    for kind, _key, value in after:
        by_id[identity(kind, value)].add(value)
    assert all(len(v) == 1 for v in by_id.values()) and set(after) == live_set
    print(f"replay into the live topics: {len(want)} identical re-emissions in {time.monotonic() - t0:.1f} s")
