"""Benchmark: points/s into VictoriaMetrics through the sink against a bare httpx import of
the same points, in the same run.

    python bench/bench_sinks.py [--records N] [--batch-points N] [--writers victoriametrics,...]

Needs the local stack (`kpp stack up`: Kafka and VictoriaMetrics; or KAFKA_BOOTSTRAP/VM_URL).
For every writer:
- sink: derived records (4 values each, one null, so 3 points) are produced to a fresh topic
  first (not timed); then a SinkLoop consumes them in a fresh group, decodes, names, encodes,
  writes in batches and commits. Timed from the partition assignment until every offset is
  committed.
- bare: the same points, already encoded in the writer's protocol, POSTed with httpx in
  batches of the same size: the floor the store itself sets (decode and encode excluded).
- bare+encode: the same, encoding from the decoded DerivedRecord objects included (the
  contract path: derived_points + writer.encode). The target is sink / bare+encode >= 0.7.
- bare+fast: the same, from the records' JSON bytes through the sink's own hot path
  (sinks/fastpath.py: JSON decode and encode): a stricter yardstick, the sink minus Kafka
  and minus the pipelining.
The sink runs with LoopSettings' defaults (what `kpp sink` uses) but the batch limits: an
aiokafka group member (kafka_io.group), record batches decoded in C.
Every run writes under its own cluster label, so nothing is deduplicated away. Prints a
markdown table.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import describe, emit  # noqa: E402
from runtime.config import vm_url  # noqa: E402
from contracts.derived import DerivedRecord  # noqa: E402
from kafka_io.admin import TopicSpec, ensure_topics  # noqa: E402
from kafka_io.connection import KafkaConnection  # noqa: E402
from sinks.fastpath import fast_path_for  # noqa: E402
from sinks.loop import LoopSettings, SinkLoop  # noqa: E402
from sinks.series import derived_points  # noqa: E402
from sinks.sink import Backoff, BatchingSink, BatchLimits  # noqa: E402
from sinks.writers import WRITERS, WriterSettings  # noqa: E402


def make_records(cluster: str, count: int) -> list[DerivedRecord]:
    nodes = 100
    end0 = 1_700_000_040_000
    return [
        DerivedRecord(kind="quantiles", scope="node", cluster=cluster, node=f"node-{i % nodes:03d}",
                      window_start_ms=end0 + (i // nodes - 1) * 60_000, window_end_ms=end0 + (i // nodes) * 60_000,
                      metric="sync_proxy_rules_duration_seconds", labels={"ip_family": "IPv4"},
                      values={"p50": i * 0.001, "p99": i * 0.002 + 0.5, "count": float(i), "mean": None})
        for i in range(count)
    ]


def produce(connection: KafkaConnection, topic: str, records: list[DerivedRecord]) -> None:
    from kafka import KafkaProducer

    ensure_topics(connection, [TopicSpec(topic, 4)], client_id="kpp-bench")
    producer = KafkaProducer(**connection.kafka_python_kwargs(), acks="all", linger_ms=20,
                             batch_size=512 * 1024)
    for r in records:
        producer.send(topic, key=r.key, value=r.encode())
    producer.flush(timeout=120)
    producer.close()


def run_sink(connection: KafkaConnection, to: str, url: str, topic: str, count: int,
             batch_points: int) -> float:
    """Seconds from the assignment until every offset is committed."""
    writer = WRITERS[to](WriterSettings(url=url, timeout_s=30))
    loop = SinkLoop(connection, writer, BatchingSink(writer, BatchLimits(max_points=batch_points, max_age_s=0.5,
                                                                         max_bytes=64 * 1024 * 1024)),
                    LoopSettings(topics=(topic,), group_id=f"bench-{uuid.uuid4().hex[:8]}",
                                 dlq_topic=f"bench-dlq-{uuid.uuid4().hex[:8]}"),
                    backoff=Backoff())
    assigned = threading.Event()
    on_assigned = loop.on_assigned

    async def note_assignment(partitions: set) -> None:
        await on_assigned(partitions)
        if partitions:
            assigned.set()

    loop.on_assigned = note_assignment  # the group calls its hook through the loop
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    # Timed from the group's assignment on (joining the group is a one-off of a few 100 ms).
    deadline = time.monotonic() + 120
    while not assigned.wait(0.001):
        if not thread.is_alive():
            raise SystemExit("the sink loop died before it was assigned partitions")
        if time.monotonic() > deadline:
            raise SystemExit("the sink was not assigned partitions within 120 s (joining the group hung)")
        time.sleep(0.001)
    started = time.perf_counter()
    while sum(loop.committed_offsets().values()) < count:
        if not thread.is_alive():
            raise SystemExit("the sink loop died")
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    stop.set()
    thread.join(30)
    writer.close()
    return elapsed


def run_bare(to: str, url: str, records: list[DerivedRecord], batch_points: int, encode_inside: bool,
             fast: bool = False) -> float:
    writer = WRITERS[to](WriterSettings(url=url))
    client = httpx.Client(timeout=30)
    per_record = 3
    fast_encode = fast_path_for(writer, {})
    if fast:
        records = [r.encode() for r in records]  # JSON bytes, as they come from Kafka

    def bodies_from(chunk: list) -> bytes:
        if fast:
            return writer.body([fast_encode(value)[0] for value in chunk])
        points = [p for r in chunk for p in derived_points(r)]
        return writer.body([writer.encode(points)[0]])

    chunk_records = max(1, batch_points // per_record)
    chunks = [records[i:i + chunk_records] for i in range(0, len(records), chunk_records)]
    prepared = None if encode_inside else [bodies_from(c) for c in chunks]
    headers = writer._headers  # the same Content-Type/-Encoding the writer sends
    started = time.perf_counter()
    for i, chunk in enumerate(chunks):
        body = bodies_from(chunk) if encode_inside else prepared[i]
        response = client.post(writer.url, content=body, headers=headers)
        response.raise_for_status()
    elapsed = time.perf_counter() - started
    client.close()
    writer.close()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="derived records per run (3 points each)")
    parser.add_argument("--batch-points", type=int, default=20_000)
    parser.add_argument("--writers", default="victoriametrics,remote-write,influx")
    parser.add_argument("--out", type=Path, help="also write the markdown report to FILE")
    args = parser.parse_args()
    connection = KafkaConnection.from_env()
    url = vm_url()
    points = args.records * 3
    rows = []
    for to in args.writers.split(","):
        tag = uuid.uuid4().hex[:8]
        records = make_records(f"bench-sink-{tag}", args.records)
        topic = f"bench.sinks.{tag}"
        produce(connection, topic, records)
        sink_s = run_sink(connection, to, url, topic, args.records, args.batch_points)
        bare_s = run_bare(to, url, make_records(f"bench-bare-{tag}", args.records), args.batch_points, False)
        bare_enc_s = run_bare(to, url, make_records(f"bench-bareenc-{tag}", args.records), args.batch_points, True)
        bare_fast_s = run_bare(to, url, make_records(f"bench-barefast-{tag}", args.records), args.batch_points,
                               True, fast=True)
        rows.append((to, points / sink_s, points / bare_enc_s, points / bare_fast_s, points / bare_s))
        print(f"{to}: sink {points / sink_s:,.0f} pts/s, bare+encode {points / bare_enc_s:,.0f}, "
              f"bare+fast {points / bare_fast_s:,.0f}, bare {points / bare_s:,.0f}", file=sys.stderr)
    report = [
        "# Sink benchmark: points/s into VictoriaMetrics through `kpp sink` vs bare httpx",
        "",
        *describe(),
        "",
        f"{args.records:,} derived records = {points:,} points per run, batches of {args.batch_points:,} points; "
        "the sink consumes with aiokafka (record batches decoded in C).",
        "",
        "| writer | sink (Kafka → store, committed) pts/s | bare httpx + encode pts/s "
        "| bare httpx + fast decode/encode pts/s | bare httpx (pre-encoded) pts/s "
        "| sink / bare+encode | sink / bare+fast | sink / bare |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| {to} | {sink:,.0f} | {bare_enc:,.0f} | {bare_fast:,.0f} | {bare:,.0f} | {sink / bare_enc:.2f} "
          f"| {sink / bare_fast:.2f} | {sink / bare:.2f} |"
          for to, sink, bare_enc, bare_fast, bare in rows),
    ]
    text = "\n".join(report) + "\n"
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
