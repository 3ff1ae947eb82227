"""Benchmark: what the stages' own metrics cost on prometheus_client, against the hand-written
counters they replaced, as a share of each stage's CPU per unit of work.

    python bench/bench_selfmetrics.py [--out FILE]

Per stage, the metric updates one unit of work makes, timed with both implementations in the
same run (the hand-written `Counters` is kept below, verbatim, as the baseline):
- producer, per scrape: the 6 updates of NodeProducer._account (the scrape duration a
  histogram now, a gauge before) plus the publish-latency histogram (none before); the
  stage's CPU per scrape is measured in the same run (parse + select + encode of the v1.28
  capture, as bench/bench_producer.py does);
- sink, per batch of 20,000 points: its 7 flush updates (+ the write-duration histogram now)
  and one buffered-points gauge per poll (~14 polls of 500 records of 3 points); the stage's
  CPU per batch is taken from bench/RESULTS.md's sink throughput (143,118 points/s);
- stream, per scrape: the node stage driven in-process over dict tables (no Kafka: a lower
  bound of the worker's CPU, so the share is overstated) in batches of 2,000 with and
  without the worker's StreamMetrics, and the per-batch update alone (the stream worker had
  no metrics before: its baseline is none);
- /metrics rendering, per request, with the process collector (new) and without.
The issue's rule: use the library unless it costs a stage more than 2 % CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
import timeit
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import describe, emit  # noqa: E402
from runtime.selfmetrics import Counters  # noqa: E402
from producers.node import NodeProducer, NodeSettings, build_record  # noqa: E402
from producers.scrape import ScrapeOutcome  # noqa: E402
from producers.select import Selector  # noqa: E402
from sinks.loop import describe_metrics  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CAPTURE = REPO / "tests" / "fixtures" / "kube-proxy" / "v1.28.0-iptables.txt"
SINK_POINTS_PER_S = 143_118  # bench/RESULTS.md, sink benchmark, victoriametrics writer
SINK_BATCH_POINTS = 20_000
PRODUCER_CPU_PER_SCRAPE = 1.00e-3  # bench/RESULTS.md, producer benchmark (a quieter machine)
SINK_POLLS_PER_BATCH = 14  # 20,000 points / (500 records x 3 points) per poll
LIMIT = 0.02


class HandWrittenCounters:
    """The hand-written counters the stages used before prometheus_client (the baseline)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple, float]] = defaultdict(dict)
        self._meta: dict[str, tuple[str, str]] = {}

    def describe(self, name: str, kind: str, help_text: str, *_: object) -> None:
        self._meta[name] = (kind, help_text)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._values[name]
            series[key] = series.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[name][tuple(sorted(labels.items()))] = value

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name in sorted(self._values):
                kind, help_text = self._meta.get(name, ("untyped", ""))
                lines.append(f"# HELP {name} {help_text}")
                lines.append(f"# TYPE {name} {kind}")
                for key, value in sorted(self._values[name].items()):
                    labels = ",".join(f'{k}="{v}"' for k, v in key)
                    lines.append(f"{name}{{{labels}}} {value!r}" if labels else f"{name} {value!r}")
        return "\n".join(lines) + "\n"


def per_call(fn: Callable[[], None], number: int) -> float:
    """Seconds per call: the best of 5 repeats (the least disturbed by other load)."""
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


# -- producer -----------------------------------------------------------------------------

def producer_updates_old(c: HandWrittenCounters, target: str) -> Callable[[], None]:
    def run() -> None:
        c.inc("kpp_producer_scrapes_total", target=target, outcome="ok", reason="ok")
        c.inc("kpp_producer_scrape_bytes_total", 40_000, target=target)
        c.set("kpp_producer_scrape_duration_seconds", 0.012, target=target)
        c.set("kpp_producer_up", 1, target=target)
        c.inc("kpp_producer_samples_published_total", 154, target=target)
        c.set("kpp_producer_kube_proxy_metrics", 1, target=target)
    return run


def producer_updates_new(c: Counters, target: str) -> Callable[[], None]:
    def run() -> None:
        c.inc("kpp_producer_scrapes_total", target=target, outcome="ok", reason="ok")
        c.inc("kpp_producer_scrape_bytes_total", 40_000, target=target)
        c.observe("kpp_producer_scrape_duration_seconds", 0.012, target=target)
        c.set("kpp_producer_up", 1, target=target)
        c.inc("kpp_producer_samples_published_total", 154, target=target)
        c.set("kpp_producer_kube_proxy_metrics", 1, target=target)
        c.observe("kpp_producer_publish_latency_seconds", 0.02)
    return run


def producer_cpu_per_scrape(text: str) -> float:
    node, selector = NodeSettings(node="node-a", cluster="c"), Selector()
    outcome = ScrapeOutcome(text, 0.01, len(text), "ok")

    def one() -> None:
        record, _ = build_record(node, "http://127.0.0.1:10249/metrics", 1_700_000_000_000, outcome, selector)
        record.encode()
    return per_call(one, 50)


# -- sink ---------------------------------------------------------------------------------

def sink_updates(c, histogram: bool) -> Callable[[], None]:
    def run() -> None:
        for _ in range(SINK_POLLS_PER_BATCH):
            c.set("kpp_sink_buffered_points", 12_345)
        c.set("kpp_sink_store_up", 1)
        c.set("kpp_sink_last_flush_seconds", 0.05)
        if histogram:
            c.observe("kpp_sink_write_duration_seconds", 0.05)
        c.inc("kpp_sink_batches_total", outcome="ok")
        c.inc("kpp_sink_requests_total", 1)
        c.inc("kpp_sink_points_written_total", SINK_BATCH_POINTS)
        c.inc("kpp_sink_records_total", SINK_BATCH_POINTS // 3, outcome="written")
    return run


# -- stream -------------------------------------------------------------------------------

def stream_cpu_per_scrape(with_metrics: bool, records: list) -> float:
    """CPU seconds per scrape of the node and cluster stages in-process, batches of 2,000."""
    from streams.config import StreamSettings
    from streams.selfmetrics import StreamMetrics
    from streams.stages import ClusterStage, NodeStage

    settings = StreamSettings(topic_prefix="b", partitions=1)
    partials: list = []

    async def send(topic, key, value, ts_ms, part):
        if topic == settings.cluster_partials_topic:
            partials.append((key, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    node, cluster = NodeStage(settings, {}, send), ClusterStage(settings, {}, send)
    metrics = StreamMetrics(samples_topic=settings.topics.samples) if with_metrics else None
    if metrics is not None:
        node.metrics = cluster.metrics = metrics
    messages = [(r.key, r.encode()) for r in records]
    events = [SimpleNamespace(message=SimpleNamespace(topic=settings.topics.samples))] * 2000

    async def go() -> None:
        offset = cluster_offset = 0
        for start in range(0, len(messages), 2000):
            started = time.perf_counter()
            for key, value in messages[start:start + 2000]:
                await node.sample(0, offset, key, value)
                offset += 1
            await node.flush()
            if metrics is not None:
                metrics.batch_done("node", events[:len(messages[start:start + 2000])], started)
            batch, partials[:] = list(partials), []
            started = time.perf_counter()
            for key, value in batch:
                await cluster.message(0, cluster_offset, key, value)
                cluster_offset += 1
            await cluster.flush()
            if metrics is not None:
                metrics.batch_done("cluster", events[:len(batch)], started)
                metrics.heartbeat(node, cluster, [SimpleNamespace(topic=settings.topics.samples, partition=0)])

    cpu = time.process_time()
    asyncio.run(go())
    return (time.process_time() - cpu) / len(messages)


def stream_batch_update() -> float:
    from streams.selfmetrics import StreamMetrics

    metrics = StreamMetrics(samples_topic="b.samples")
    events = [SimpleNamespace(message=SimpleNamespace(topic="b.samples"))] * 2000
    return per_call(lambda: metrics.batch_done("node", events, time.perf_counter()), 200) / len(events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the markdown report to FILE")
    args = parser.parse_args(argv)
    target = "http://127.0.0.1:10249/metrics"

    old_p, new_p = HandWrittenCounters(), Counters()
    NodeProducer(NodeSettings(node="n", cluster="c"), [], Selector(), SimpleNamespace(submit=None), "t", new_p)
    new_p.describe("kpp_producer_publish_latency_seconds", "histogram", "x")
    producer_old = per_call(producer_updates_old(old_p, target), 20_000)
    producer_new = per_call(producer_updates_new(new_p, target), 20_000)
    scrape_cpu = producer_cpu_per_scrape(CAPTURE.read_text())
    print("  producer: done", file=sys.stderr)

    old_s, new_s = HandWrittenCounters(), Counters()
    describe_metrics(new_s)
    sink_old = per_call(sink_updates(old_s, False), 5_000)
    sink_new = per_call(sink_updates(new_s, True), 5_000)
    batch_cpu = SINK_BATCH_POINTS / SINK_POINTS_PER_S
    print("  sink: done", file=sys.stderr)

    from tests.streams.simdata import scrape_records

    records = scrape_records(nodes=50, minutes=30, start_s=1_700_000_100)
    stream_cpu_per_scrape(False, records[:500])  # warm-up
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(3):  # alternated, the best of each: other load on the machine hits both alike
        for with_metrics in (False, True):
            runs[with_metrics].append(stream_cpu_per_scrape(with_metrics, records))
    without, with_m = min(runs[False]), min(runs[True])
    per_scrape_update = stream_batch_update()
    print("  stream: done", file=sys.stderr)

    render_old = per_call(old_p.render, 500)  # the producer's metrics, one target
    render_new = per_call(new_p.render, 500)

    def pct(cost: float, work: float) -> str:
        return f"{100 * cost / work:.3f} %"

    rows = [
        ("producer, per scrape (7 updates)", producer_old, producer_new, scrape_cpu, "parse + select + encode, "
         "measured now"),
        (f"sink, per batch of {SINK_BATCH_POINTS:,} points ({SINK_POLLS_PER_BATCH + 7} updates)", sink_old, sink_new,
         batch_cpu, f"{SINK_BATCH_POINTS:,} / {SINK_POINTS_PER_S:,} points/s (RESULTS.md)"),
        ("stream, per scrape (batch of 2,000: 1 histogram, 1 counter)", 0.0, per_scrape_update, without,
         "node + cluster stage in-process, measured now"),
    ]
    report = [
        "# Self-metrics: prometheus_client vs the hand-written counters",
        "",
        *describe(),
        "",
        "Metric updates per unit of work, timed with both implementations in this run (best of 5), as a share "
        "of the stage's CPU for that unit. The issue's limit: 2 %.",
        "",
        "| stage, unit | hand-written | prometheus_client | stage CPU per unit | share, hand-written | "
        "share, prometheus_client | within 2 % |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    worst = producer_new / PRODUCER_CPU_PER_SCRAPE
    for name, old, new, work, where in rows:
        worst = max(worst, new / work)
        before = f"{old * 1e6:.2f} µs" if old else "none (no metrics)"
        report.append(f"| {name} | {before} | {new * 1e6:.2f} µs | {work * 1e3:.3f} ms ({where}) | "
                      f"{pct(old, work)} | {pct(new, work)} | {'yes' if new / work <= LIMIT else 'NO'} |")
    report += [
        "",
        f"Against bench/RESULTS.md's producer figure ({PRODUCER_CPU_PER_SCRAPE * 1e3:.2f} ms per scrape, measured on a "
        f"quieter machine) the producer's share is {pct(producer_old, PRODUCER_CPU_PER_SCRAPE)} hand-written and "
        f"{pct(producer_new, PRODUCER_CPU_PER_SCRAPE)} prometheus_client.",
        "",
        f"Stream stages end to end, in-process, {len(records):,} scrapes of 50 nodes in batches of 2,000: "
        f"{without * 1e3:.3f} ms CPU per scrape without metrics, {with_m * 1e3:.3f} ms with the worker's "
        f"StreamMetrics (hooks, batch updates and a heartbeat per batch): {100 * (with_m - without) / without:+.1f} % "
        "(run-to-run noise is of the same order).",
        "",
        f"/metrics rendering, per request: {render_old * 1e6:.0f} µs hand-written, {render_new * 1e6:.0f} µs "
        "prometheus_client with histograms and the process collector (reads /proc); at one request per 15 s "
        f"that is {100 * render_new / 15:.4f} % of a core.",
        "",
        f"Largest share: {100 * worst:.3f} % of a stage's CPU: prometheus_client is "
        f"{'within' if worst <= LIMIT else 'OVER'} the 2 % limit.",
    ]
    emit("\n".join(report) + "\n", args.out)
    return 0 if worst <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
