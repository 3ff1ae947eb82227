"""`kpp stream` against the real broker, with real worker processes.

Every test compares the derived topics with the in-process reference run of the same pure
stages (tests/streams/reference.py), byte for byte, and some with numbers computed
independently from the raw scrapes."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import jsonschema
import pytest

from contracts.derived import DerivedRecord
from streams.config import StreamSettings
from tests.streams.harness import Collector, Worker, create_topics, produce, unique_prefix
from tests.streams.reference import run_reference
from tests.streams.simdata import reference_bucket_deltas, reference_quantile, scrape_records

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
KINDS = ("rates", "quantiles", "gauges", "health", "slo")
IDLE = "6"  # seconds: closes the last windows once the (finite) test data has been consumed


def derived(messages, prefix: str) -> list[tuple[str, bytes, bytes]]:
    names = {f"{prefix}.{k}": k for k in KINDS}
    return [(names[t], k, v) for t, k, v, _ts in messages if t in names]


def normalise(sent, prefix: str) -> list[tuple[str, bytes, bytes]]:
    names = {f"{prefix}.{k}": k for k in KINDS}
    return [(names[t], k, v) for t, k, v in sent if t in names]


def identity(kind: str, value: bytes) -> tuple:
    obj = json.loads(value)
    return (kind, obj["scope"], obj["node"], obj["window"]["start_ms"], obj["window"]["end_ms"], obj["metric"],
            tuple(sorted(obj["labels"].items())))


def assert_same_output(got, expected) -> None:
    """Equal as sets of bytes; duplicates (at-least-once) only as identical re-emissions."""
    by_id = defaultdict(set)
    for kind, _key, value in got:
        by_id[identity(kind, value)].add(value)
    conflicting = {k: v for k, v in by_id.items() if len(v) > 1}
    assert not conflicting, f"{len(conflicting)} records emitted with different content"
    missing = set(expected) - set(got)
    extra = set(got) - set(expected)
    if missing or extra:
        got_by_id = {identity(kind, value): value for kind, _key, value in extra}
        examples = []
        for kind, _key, value in sorted(missing)[:5]:
            other = got_by_id.get(identity(kind, value))
            examples.append(f"  expected {value.decode()}\n  got      {other.decode() if other else None}")
        raise AssertionError(f"{len(missing)} missing, {len(extra)} unexpected records; e.g.\n" + "\n".join(examples))


def settings_for(prefix: str, partitions: int, **kw) -> StreamSettings:
    return StreamSettings(topic_prefix=prefix, partitions=partitions, idle_timeout_s=float(IDLE), **kw)


def expected_count(settings, messages) -> int:
    return len(set(normalise(run_reference(settings, messages), settings.topic_prefix)))


def test_end_to_end_accuracy_dlq_late_and_a_node_that_stops(kafka, tmp_path):
    """2 partitions, 4 nodes; node-003 (sharing partition 0) stops after 3 minutes and leaves
    after 3 more; a malformed message, an unknown schema version and a late scrape."""
    prefix, partitions = unique_prefix(), 2
    create_topics(kafka, prefix, partitions)
    start = 1_700_000_100  # aligned to 300 s
    records = scrape_records(nodes=4, minutes=10, start_s=start, stop={"node-003": start + 180})
    late = scrape_records(nodes=4, minutes=1, start_s=start)[1]  # node-001 at +15 s, long closed
    messages = [(r.key, r.encode(), r.scrape_ts_ms) for r in records]
    messages.insert(20, (b"node-000", b"{not json", None))
    messages.insert(30, (b"node-001", json.dumps({"schema": "kube-proxy.samples/v9", "node": "x"}).encode(), None))
    messages.append((late.key, late.encode(), late.scrape_ts_ms))
    produce(kafka, f"{prefix}.samples", messages)
    extra = ("--node-gone-after", "180")
    settings = settings_for(prefix, partitions, node_gone_after_s=180)
    expected = normalise(run_reference(settings, [(k, v) for k, v, _ in messages]), prefix)

    collector = Collector(kafka, [f"{prefix}.{k}" for k in (*KINDS, "late", "dlq")])
    worker = Worker(kafka, prefix, partitions, tmp_path, "--idle-timeout", IDLE, *extra)
    try:
        t0 = time.monotonic()
        out = collector.settle(8, 80, until=lambda m: len(derived(m, prefix)) >= len(set(expected)))
        elapsed = time.monotonic() - t0
    finally:
        worker.stop()
        collector.close()
    got = derived(out, prefix)
    assert_same_output(got, expected)
    print(f"end-to-end: {len(set(got))} derived records in {elapsed:.1f} s")

    # every record follows its contract
    for kind, _key, value in set(got):
        jsonschema.validate(json.loads(value), json.loads((SCHEMAS / f"kube-proxy.{kind}.v1.json").read_text()))

    # accuracy: node p99/p50 equal a reference histogram_quantile of independently computed deltas
    for family in ("network_programming_duration_seconds", "sync_proxy_rules_duration_seconds"):
        ref = reference_bucket_deltas(records, "kubeproxy_" + family, 60)
        checked = 0
        for kind, _key, value in set(got):
            obj = json.loads(value)
            if kind != "quantiles" or obj["scope"] != "node" or obj["metric"] != family \
                    or obj["window"]["size_s"] != 60:
                continue
            buckets = ref.get((obj["node"], obj["window"]["start_ms"]))
            if buckets is None:
                continue
            for q, name in ((0.5, "p50"), (0.99, "p99")):
                want = reference_quantile(q, buckets)
                assert obj["values"][name] == pytest.approx(want, rel=1e-12, abs=1e-12), (family, obj)
            assert obj["values"]["count"] == buckets[float("inf")]
            checked += 1
        assert checked >= 20

    # bad input went to the DLQ with a reason; the worker kept going
    dlq = [json.loads(v) for t, _k, v, _ts in out if t == f"{prefix}.dlq"]
    reasons = sorted(d["error"] for d in dlq)
    assert len({(d["source"]["partition"], d["source"]["offset"]) for d in dlq}) == 2, reasons
    assert any("not valid JSON" in r for r in reasons) and any("unknown schema" in r for r in reasons)
    assert {(d["stage"], d["reason"], d["source"]["topic"]) for d in dlq} == {("node", "malformed", f"{prefix}.samples")}
    lates = [json.loads(v) for t, _k, v, _ts in out if t == f"{prefix}.late"]
    assert {(x["node"], x["scrape_ts_ms"]) for x in lates} == {("node-001", late.scrape_ts_ms)}
    assert lates[0]["reason"] == "window_closed" and "already closed" in lates[0]["detail"]

    # the node that stopped: missing, then left; cluster windows kept closing without it
    health = [DerivedRecord.decode(v) for kind, _k, v in set(got) if kind == "health"]
    stopped = sorted((h.window_start_ms, h.values["missing"], h.values["left"]) for h in health
                     if h.node == "node-003" and h.window_size_s == 60)
    assert stopped[-1][1:] == (1, 1) and any(m == 1 and left == 0 for _s, m, left in stopped)
    cluster60 = sorted(h.window_start_ms for h in health if h.scope == "cluster" and h.window_size_s == 60)
    node60 = sorted({h.window_start_ms for h in health if h.node == "node-000" and h.window_size_s == 60})
    assert cluster60 == node60 and len(cluster60) == 11  # scrapes at +15 s ... +600 s
    last = max((h for h in health if h.scope == "cluster" and h.window_size_s == 60), key=lambda h: h.window_start_ms)
    assert last.values["nodes"] == 3 and last.contributors["nodes"] == 3


def test_determinism_one_vs_two_workers_and_batch_sizes(kafka, tmp_path):
    """The same input produced with tiny and with large batches, consumed by 1 worker and by 2
    workers: byte-identical derived records, equal to the in-process reference."""
    partitions = 2
    records = scrape_records(nodes=5, minutes=8, seed=11)
    messages = [(r.key, r.encode(), r.scrape_ts_ms) for r in records]
    runs = {}
    for label, batch, linger in (("one", 1, 0), ("two", 1 << 20, 50)):
        prefix = unique_prefix()
        create_topics(kafka, prefix, partitions)
        produce(kafka, f"{prefix}.samples", messages, batch_size=batch, linger_ms=linger)
        runs[label] = prefix
    expected = normalise(run_reference(settings_for("p", partitions), [(k, v) for k, v, _ in messages]), "p")

    collectors = {label: Collector(kafka, [f"{p}.{k}" for k in KINDS]) for label, p in runs.items()}
    workers = [Worker(kafka, runs["one"], partitions, tmp_path, "--idle-timeout", IDLE, name="single"),
               Worker(kafka, runs["two"], partitions, tmp_path, "--idle-timeout", IDLE, name="a"),
               Worker(kafka, runs["two"], partitions, tmp_path, "--idle-timeout", IDLE, name="b")]
    try:
        outs = {label: derived(c.settle(8, 85, until=lambda m, p=runs[label]: len(set(derived(m, p)))
                                        >= len(set(expected))), runs[label])
                for label, c in collectors.items()}
    finally:
        for w in workers:
            w.stop()
        for c in collectors.values():
            c.close()
    assert_same_output(outs["one"], expected)
    assert_same_output(outs["two"], expected)
    assert sorted(set(outs["one"])) == sorted(set(outs["two"]))
