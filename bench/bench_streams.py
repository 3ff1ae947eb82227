"""Benchmark of the stream stage on one input topic, in one run: one `kpp stream` worker, a
quixstreams peer doing the core of the same job (bench/peer_quixstreams.py, which says what it
does not do), and a bare aiokafka consumer that only decodes (ScrapeRecord.decode). Needs the
local broker (`kpp stack up`) and the `bench` extra (quixstreams).

    .venv/bin/python bench/bench_streams.py [--nodes 50] [--minutes 120] [--out FILE]

For each: scrapes/s and CPU ms per scrape. A worker's figures are taken between its first
offset commit and the end of the whole job (start-up excluded), CPU from /proc/<pid>/stat
(utime + stime of the child). The end of the job:
- `kpp stream`: its group's lag is 0 on EVERY topic it reads: the samples, the stream-ticks
  and the cluster-partials topics (the cluster stage has taken every node partial);
- the peer: its group's lag is 0 on the samples topic (the only topic it reads).
Then the p99s (and p50/p90) of the two histogram families are compared node-window by
node-window: `kpp stream`'s node-scope 60 s records of the quantiles topic against the peer's
output. Comparable windows are the (node, window start, metric, labels) that BOTH emitted a
closed-window result for; a value that differs there (beyond float rounding, 1e-9 relative)
fails the bench. Prints a markdown report (machine, date, load average, table); --out also
writes it to FILE. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer  # noqa: E402
from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402

from bench.machine import describe, emit  # noqa: E402
from contracts.derived import DerivedRecord  # noqa: E402
from kafka_io.admin import GroupLagReader, TopicSpec, ensure_topics  # noqa: E402
from kafka_io.connection import KafkaConnection  # noqa: E402
from contracts.records import ScrapeRecord  # noqa: E402
from streams.config import StreamSettings  # noqa: E402
from tests.streams.simdata import scrape_records  # noqa: E402

RESULTS = REPO / "bench" / "RESULTS.md"
TITLE = "# `kpp stream` throughput"
FAMILIES = ("sync_proxy_rules_duration_seconds", "network_programming_duration_seconds")
QUANTILES = ("p50", "p90", "p99")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def produce(conn: KafkaConnection, topic: str, values: list[tuple[bytes, bytes, int]]) -> None:
    producer = KafkaProducer(**conn.kafka_python_kwargs(), batch_size=1 << 20, linger_ms=20, acks=1)
    for key, value, ts in values:
        producer.send(topic, key=key, value=value, timestamp_ms=ts)
    producer.flush(120)
    producer.close()


async def bare_consumer(conn: KafkaConnection, topic: str, total: int) -> tuple[float, float]:
    """(scrapes/s, CPU ms per scrape) of decoding every record, timed from the first batch."""
    consumer = AIOKafkaConsumer(topic, **conn.aiokafka_kwargs(), auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    seen = 0
    t0 = cpu0 = None
    try:
        while seen < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for msgs in batches.values():
                if t0 is None:
                    t0, cpu0 = time.perf_counter(), time.process_time()
                for m in msgs:
                    ScrapeRecord.decode(m.value)
                    seen += 1
    finally:
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        await consumer.stop()
    return seen / wall, cpu * 1000 / seen


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (its own threads; it has no children)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def progress(reader: GroupLagReader, topics: list[str], total: int) -> tuple[int, int]:
    """(records of topics[0] committed, total lag over every partition of `topics`), the
    `total` records of topics[0] being all it holds."""
    try:
        lag = reader.read()
    except Exception:  # noqa: BLE001 - the group is not known to the coordinator yet
        return 0, total
    known = {topic for topic, _ in lag}
    done = total - sum(n for (topic, _), n in lag.items() if topic == topics[0]) if topics[0] in known else 0
    missing = sum(1 for topic in topics if topic not in known)
    return done, sum(lag.values()) + missing  # a topic not (yet) known to the reader is not done


def run_worker(conn: KafkaConnection, argv: list[str], log_path: str, group: str, topics: list[str],
               total: int) -> dict:
    """Runs a worker until its group has committed `total` records of topics[0] and its lag is
    0 on every topic of `topics`; returns scrapes/s and CPU ms per scrape from its first commit."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    reader = GroupLagReader(conn, group, topics, client_id="kpp-bench-lag")
    try:
        first = None
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            done, lag = progress(reader, topics, total)
            now, cpu = time.perf_counter(), cpu_seconds(proc.pid)
            if os.environ.get("BENCH_DEBUG"):
                print(f"{group}: committed {done} of {total}, lag {lag}", file=sys.stderr)
            if done and first is None:
                first = (now, done, cpu)
            if done >= total and lag == 0:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited; see {log_path}")
            time.sleep(0.2)
        else:
            raise RuntimeError(f"worker did not finish in time; see {log_path}")
        t1, n1, cpu1 = first
        scrapes = total - n1
        return {"rate": scrapes / (now - t1) if now > t1 else math.nan,
                "cpu_ms": (cpu - cpu1) * 1000 / scrapes if scrapes else math.nan,
                "seconds": now - t1, "total_cpu_s": cpu}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.close()
        log.close()


def read_topic(conn: KafkaConnection, topic: str) -> list[bytes]:
    """Every record value of `topic`, from the beginning to its current end."""
    reader = KafkaConsumer(**conn.kafka_python_kwargs(), enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in (reader.partitions_for_topic(topic) or ())]
        reader.assign(parts)
        reader.seek_to_beginning(*parts)
        ends = reader.end_offsets(parts)
        values: list[bytes] = []
        while any(reader.position(tp) < ends[tp] for tp in parts):
            for records in reader.poll(timeout_ms=1000, max_records=5000).values():
                values.extend(r.value for r in records)
        return values
    finally:
        reader.close()


def ours_quantiles(values: list[bytes]) -> dict[tuple, dict]:
    """(node, window start, metric, labels) -> p50/p90/p99 of `kpp stream`'s node-scope 60 s
    quantile records of the two families."""
    out = {}
    for value in values:
        record = DerivedRecord.decode(value)
        if (record.scope == "node" and record.window_size_s == 60 and record.metric in FAMILIES):
            key = (record.node, record.window_start_ms, record.metric, tuple(sorted(record.labels.items())))
            out[key] = {q: record.values.get(q) for q in QUANTILES}
    return out


def peer_quantiles(values: list[bytes]) -> dict[tuple, dict]:
    out = {}
    for value in values:
        record = orjson.loads(value)
        for hist in record["histograms"]:
            key = (record["node"], record["window_start_ms"], hist["metric"], tuple(sorted(hist["labels"].items())))
            out[key] = {q: hist[q] for q in QUANTILES}
    return out


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def compare(ours: dict[tuple, dict], peer: dict[tuple, dict]) -> dict:
    both = sorted(ours.keys() & peer.keys())
    mismatches = [(key, q, ours[key][q], peer[key][q]) for key in both for q in QUANTILES
                  if not same(ours[key][q], peer[key][q])]
    with_p99 = sum(1 for key in both if ours[key]["p99"] is not None)
    exact = sum(1 for key in both if ours[key]["p99"] == peer[key]["p99"])
    return {"both": len(both), "with_p99": with_p99, "exact_p99": exact, "mismatches": mismatches,
            "only_ours": sorted(ours.keys() - peer.keys()), "only_peer": sorted(peer.keys() - ours.keys())}


def previous_figures(path: Path = RESULTS) -> dict[str, str]:
    """The last committed run's figures of this section (row label -> 'scrapes/s, CPU ms'), and its
    date, so the report shows before and after."""
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    start = text.find(TITLE)
    if start < 0:
        return {}
    section = text[start:text.find("\n# ", start + 1) if "\n# " in text[start + 1:] else len(text)]
    out = {}
    date = re.search(r"- date: (.+)", section)
    if date:
        out["date"] = date.group(1).strip()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and cells[1][:1].isdigit():
            figures = " / ".join(cells[1:3]) if len(cells) >= 3 and cells[2][:1].isdigit() else cells[1]
            out[row_id(cells[0])] = figures
    return out


def row_id(label: str) -> str:
    """The row a table label is about, stable across wordings of the label."""
    if label.startswith("ratio"):
        return "ratio to peer" if "peer" in label else label
    for word, ident in (("bare", "bare"), ("quixstreams", "peer"), ("kpp stream", "ours")):
        if word in label:
            return ident
    return label


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--minutes", type=int, default=120)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--out", metavar="FILE", help="also write the markdown report to FILE")
    args = parser.parse_args()
    machine = describe()  # load average before the benchmark's own work
    previous = previous_figures()
    conn = KafkaConnection(bootstrap=args.bootstrap)
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    samples_topic = f"{prefix}.samples"
    records = scrape_records(nodes=args.nodes, minutes=args.minutes, version="1.28")
    values = [(r.key, r.encode(), r.scrape_ts_ms) for r in records]
    total = len(values)
    samples = sum(len(r.samples) for r in records) / total
    # simulated scrapes are stamped in 2023: unlimited retention, or Kafka may delete them mid-run
    ensure_topics(conn, [TopicSpec(samples_topic, args.partitions, {"retention.ms": "-1"})])
    produce(conn, samples_topic, values)
    work = tempfile.mkdtemp(prefix="kpp-bench-")
    try:
        bare_rate, bare_cpu = asyncio.run(bare_consumer(conn, samples_topic, total))

        settings = StreamSettings(topic_prefix=prefix, partitions=args.partitions)
        stream_topics = [samples_topic, settings.ticks_topic, settings.cluster_partials_topic]
        ours = run_worker(
            conn, [sys.executable, "-m", "kpp", "stream", "--kafka-bootstrap", conn.bootstrap,
                   "--topic-prefix", prefix, "--partitions", str(args.partitions),
                   "--data-dir", os.path.join(work, "stream"), "--idle-timeout", "600"],
            os.path.join(work, "stream.log"), f"kpp-streams.{prefix}", stream_topics, total)

        peer_out = f"{prefix}.peer-windows"
        peer = run_worker(
            conn, [sys.executable, str(REPO / "bench" / "peer_quixstreams.py"), "--bootstrap", conn.bootstrap,
                   "--input", samples_topic, "--output", peer_out, "--group", f"{prefix}-peer",
                   "--state-dir", os.path.join(work, "peer")],
            os.path.join(work, "peer.log"), f"{prefix}-peer", [samples_topic], total)

        check = compare(ours_quantiles(read_topic(conn, settings.topics.quantiles)),
                        peer_quantiles(read_topic(conn, peer_out)))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def prev(label: str) -> str:
        return previous.get(row_id(label), "–")

    rows = [
        ("bare aiokafka consumer, decode only", bare_rate, bare_cpu),
        (f"`kpp stream`, one worker ({args.partitions} partition(s)), whole job", ours["rate"], ours["cpu_ms"]),
        ("quixstreams 3.28 peer (bench/peer_quixstreams.py), its subset", peer["rate"], peer["cpu_ms"]),
    ]
    lines = [
        TITLE, "",
        *machine,
        f"- load average at end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- command: `bench/bench_streams.py --nodes {args.nodes} --minutes {args.minutes} "
        f"--partitions {args.partitions}`",
        "",
        f"| measurement | scrapes/s | CPU ms per scrape | previous run ({previous.get('date', 'none')}): scrapes/s / CPU ms |",
        "|---|---:|---:|---:|",
        *(f"| {label} | {rate:,.0f} | {cpu:.2f} | {prev(label)} |" for label, rate, cpu in rows),
        f"| ratio `kpp stream` / peer (scrapes/s; CPU: peer / ours) | {ours['rate'] / peer['rate']:.2f} | "
        f"{peer['cpu_ms'] / ours['cpu_ms']:.2f} | {prev('ratio `kpp stream` / peer')} |",
        "",
        f"{total:,} scrapes of {args.nodes} nodes, {samples:.0f} selected samples per scrape (simulator 1.28), "
        "one input topic read by all three in turn. Workers timed from their first offset commit to the "
        f"end of the whole job ({ours['seconds']:.1f} s ours, {peer['seconds']:.1f} s peer; whole-process CPU "
        f"{ours['total_cpu_s']:.1f} s ours, {peer['total_cpu_s']:.1f} s peer, start-up included). End of the job: "
        "`kpp stream`'s group at lag 0 on the samples, stream-ticks and cluster-partials topics; the "
        "peer's at lag 0 on the samples topic. Ratios above 1 are in our favour. "
        "The peer does less (one window size, two histogram families, no gauges, health, SLO, cluster "
        "stage, late or dead-letter topics; one record per node-window): see its docstring.",
        "",
        f"Quantile check: {check['both']:,} node-windows × histogram series computed by both (60 s, node "
        f"scope, two families; {check['with_p99']:,} with observations), p50/p90/p99 equal on all but "
        f"{len(check['mismatches'])} (p99 bit-identical on {check['exact_p99']:,}); windows only ours "
        f"{len(check['only_ours'])}, only the peer's {len(check['only_peer'])}.",
    ]
    report = "\n".join(lines) + "\n"
    emit(report, args.out)
    if check["mismatches"] or not check["both"]:
        for key, q, a, b in check["mismatches"][:10]:
            print(f"MISMATCH {key} {q}: ours {a} peer {b}", file=sys.stderr)
        sys.exit("bench_streams: the peer's quantiles differ from ours (or no window to compare)")


if __name__ == "__main__":
    main()
