"""Benchmark of the stream stage: scrapes/s one `kpp stream` worker sustains on 1.28-like
scrapes (~150 selected samples each), against a bare aiokafka consumer that only decodes
the same messages (ScrapeRecord.decode). Needs the local broker (`kpp stack up`).

    .venv/bin/python bench/bench_streams.py [--nodes 50] [--minutes 60] [--out FILE]

Prints a markdown report (machine, date, table); --out also writes it to FILE. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from aiokafka import AIOKafkaConsumer  # noqa: E402
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402

from bench.machine import describe, emit  # noqa: E402
from contracts.kafka import KafkaConnection  # noqa: E402
from contracts.records import ScrapeRecord  # noqa: E402
from tests.streams.simdata import scrape_records  # noqa: E402


def produce(conn: KafkaConnection, topic: str, values: list[tuple[bytes, bytes, int]]) -> None:
    producer = KafkaProducer(**conn.kafka_python_kwargs(), batch_size=1 << 20, linger_ms=20, acks=1)
    for key, value, ts in values:
        producer.send(topic, key=key, value=value, timestamp_ms=ts)
    producer.flush(120)
    producer.close()


async def bare_consumer(conn: KafkaConnection, topic: str, total: int) -> float:
    consumer = AIOKafkaConsumer(topic, **conn.aiokafka_kwargs(), auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    seen = 0
    t0 = None
    try:
        while seen < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for msgs in batches.values():
                if t0 is None:
                    t0 = time.perf_counter()
                for m in msgs:
                    ScrapeRecord.decode(m.value)
                    seen += 1
    finally:
        await consumer.stop()
    return seen / (time.perf_counter() - t0)


def committed(reader: KafkaConsumer, topic: str, partitions: int) -> int:
    """Sum of the worker group's committed offsets (never joins the group)."""
    total = 0
    for p in range(partitions):
        try:
            offset = reader.committed(TopicPartition(topic, p))
        except Exception:  # noqa: BLE001 - group not there yet
            offset = None
        total += offset or 0
    return total


def stream_worker(conn: KafkaConnection, prefix: str, partitions: int, total: int) -> tuple[float, float]:
    data_dir = tempfile.mkdtemp(prefix="kpp-bench-")
    log = open(os.path.join(data_dir, "worker.log"), "wb")
    proc = subprocess.Popen([sys.executable, "-m", "kpp", "stream", "--kafka-bootstrap", conn.bootstrap,
                             "--topic-prefix", prefix, "--partitions", str(partitions), "--data-dir", data_dir,
                             "--idle-timeout", "600"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    group, topic = f"kpp-streams.{prefix}", f"{prefix}.samples"
    reader = KafkaConsumer(**conn.kafka_python_kwargs(), group_id=group, enable_auto_commit=False)
    try:
        first = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            done = committed(reader, topic, partitions)
            if os.environ.get("BENCH_DEBUG"):
                print("committed", done, "of", total, file=sys.stderr)
            now = time.perf_counter()
            if done and first is None:
                first = (now, done)
            if done >= total:
                break
            if proc.poll() is not None:
                raise RuntimeError("worker exited; see " + log.name)
            time.sleep(0.2)
        else:
            raise RuntimeError("worker did not finish in time")
        t1, n1 = first
        rate = (total - n1) / (now - t1) if now > t1 else float("nan")
        return rate, (now - t1)
    finally:
        proc.terminate()
        proc.wait(30)
        reader.close()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--minutes", type=int, default=120)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--out", metavar="FILE", help="also write the markdown report to FILE")
    args = parser.parse_args()
    machine = describe()  # load average before the benchmark's own work
    conn = KafkaConnection(bootstrap=args.bootstrap)
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    records = scrape_records(nodes=args.nodes, minutes=args.minutes, version="1.28")
    values = [(r.key, r.encode(), r.scrape_ts_ms) for r in records]
    samples = sum(len(r.samples) for r in records) / len(records)
    admin = KafkaAdminClient(**conn.kafka_python_kwargs())
    # simulated scrapes are stamped in 2023: unlimited retention, or Kafka may delete them mid-run
    admin.create_topics([NewTopic(f"{prefix}.samples", args.partitions, 1, topic_configs={"retention.ms": "-1"})])
    admin.close()
    produce(conn, f"{prefix}.samples", values)
    bare = asyncio.run(bare_consumer(conn, f"{prefix}.samples", len(values)))
    rate, seconds = stream_worker(conn, prefix, args.partitions, len(values))
    lines = [
        "# `kpp stream` throughput", "",
        *machine,
        f"- command: `bench/bench_streams.py --nodes {args.nodes} --minutes {args.minutes} "
        f"--partitions {args.partitions}`",
        "",
        "| measurement | scrapes/s |",
        "|---|---:|",
        f"| bare aiokafka consumer, decode only | {bare:,.0f} |",
        f"| `kpp stream`, one worker ({args.partitions} partition(s)) | {rate:,.0f} |",
        f"| ratio worker / bare | {rate / bare:.2f} |",
        "",
        f"{len(values):,} scrapes of {args.nodes} nodes, {samples:.0f} selected samples per scrape "
        f"(simulator 1.28); worker timed over {seconds:.1f} s between its first and last offset commit; "
        f"target >= 1,000 scrapes/s.",
    ]
    report = "\n".join(lines) + "\n"
    emit(report, args.out)

if __name__ == "__main__":
    main()
