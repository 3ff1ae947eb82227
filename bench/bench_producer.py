"""Benchmark: the producer's per-scrape CPU, its resident memory, and publish throughput.

    python bench/bench_producer.py [--out FILE] [--kafka-bootstrap HOST:PORT]

1. CPU per scrape of the v1.28 capture, end to end in-process (parse + select + encode),
   against prometheus_client parsing the same body (the baseline), in the same run.
2. RSS of a real `kpp produce` process scraping the capture once a second for 20 s and
   publishing to the local Kafka (peak VmHWM and final VmRSS from /proc).
3. Publish throughput through Publisher (acks=all, gzip) against a bare kafka-python
   KafkaProducer sending the same records, in the same run, as the median of interleaved
   rounds: sending a filled spool (what the publisher adds to a bare producer: reading the
   spool, ordering, acknowledging), and submit → acknowledged, where each record is first
   appended to the spool with an fsync (the durability a bare producer does not give).
Needs the local stack (`kpp stack up`).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bench.machine import describe, emit  # noqa: E402
from kafka_io.connection import KafkaConnection  # noqa: E402
from producers.node import NodeSettings, build_record  # noqa: E402
from producers.scrape import ScrapeOutcome  # noqa: E402
from producers.select import Selector  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PUBLISH_ROUNDS = 3
CAPTURE = REPO / "tests" / "fixtures" / "kube-proxy" / "v1.28.0-iptables.txt"


def cpu_per_scrape(text: str, iterations: int = 2000) -> tuple[float, float]:
    node = NodeSettings(node="node-000", cluster="bench")
    selector = Selector()
    outcome = ScrapeOutcome(text, 0.01, len(text), "ok")
    build_record(node, "t", 0, outcome, selector)[0].encode()  # warm caches, as a running producer has
    start = time.process_time()
    for i in range(iterations):
        build_record(node, "t", i, outcome, selector)[0].encode()
    ours = (time.process_time() - start) / iterations
    start = time.process_time()
    for _ in range(iterations // 4):
        for family in text_string_to_metric_families(text):
            for _sample in family.samples:
                pass
    baseline = (time.process_time() - start) / (iterations // 4)
    return ours, baseline


def serve_capture(body: bytes) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def producer_rss(bootstrap: str, seconds: float = 20.0) -> tuple[float, float, int]:
    server = serve_capture(CAPTURE.read_bytes())
    spool = Path(tempfile.mkdtemp(prefix="kpp-bench-spool-"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "kpp", "produce", "--node", "bench-node", "--interval", "1", "--listen", "",
         "--target", f"http://127.0.0.1:{server.server_address[1]}/metrics", "--spool-dir", str(spool),
         "--topic-prefix", f"bench-{uuid.uuid4().hex[:6]}", "--kafka-bootstrap", bootstrap],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(seconds)
    status = Path(f"/proc/{proc.pid}/status").read_text()
    fields = {line.split(":")[0]: line.split(":")[1].strip() for line in status.splitlines() if ":" in line}
    proc.terminate()
    proc.wait(timeout=30)
    server.shutdown()
    shutil.rmtree(spool, ignore_errors=True)
    return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024, int(seconds)


@dataclass
class Throughput:
    rate: float  # records acknowledged per second (wall clock)
    cpu_ms: float  # this process's CPU per record, all threads


def _measure(run: Callable[[], None], count: int) -> Throughput:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return Throughput(count / (time.perf_counter() - wall), (time.process_time() - cpu) / count * 1e3)


def publish_throughput(bootstrap: str, count: int = 3000, rounds: int = PUBLISH_ROUNDS
                       ) -> tuple[dict[str, Throughput], int]:
    """The median of `rounds` interleaved rounds of three ways to get `count` scrape records
    acknowledged (acks=all, gzip), so that load that changes during the run hits all three:
    - bare: a kafka-python KafkaProducer sending them and waiting for every future;
    - drain: our Publisher sending them from a filled spool (a backlog after an outage);
    - submit: Publisher.submit() of each record (spool append with fsync) while it sends."""
    from kafka import KafkaProducer

    from producers.publish import Publisher
    from producers.spool import Spool

    text = CAPTURE.read_text()
    value = build_record(NodeSettings(node="n", cluster="c"), "t", 0, ScrapeOutcome(text, 0.01, len(text), "ok"),
                         Selector())[0].encode()
    connection = KafkaConnection(bootstrap=bootstrap)
    keys = [f"node-{i % 50:03d}".encode() for i in range(count)]

    def wait_empty(publisher: Publisher) -> None:
        while publisher.stats.spool_depth:
            time.sleep(0.002)

    def bare() -> Throughput:
        # the baseline is kafka-python as it comes, so it is built here, not by kafka_io
        producer = KafkaProducer(**connection.kafka_python_kwargs(), client_id="bench-bare", acks="all",
                                 compression_type="gzip", linger_ms=50)
        topic = f"bench-bare-{uuid.uuid4().hex[:6]}"
        producer.send(topic, key=b"warm", value=value).get(timeout=30)

        def send_all() -> None:
            for future in [producer.send(topic, key=k, value=value) for k in keys]:
                future.get(timeout=60)
        result = _measure(send_all, count)
        producer.close()
        return result

    def ours(mode: str) -> Throughput:
        folder = Path(tempfile.mkdtemp(prefix="kpp-bench-pub-"))
        spool = Spool(folder)
        topic = f"bench-{mode}-{uuid.uuid4().hex[:6]}"
        publisher = Publisher(connection, topic, spool)
        publisher.start()
        publisher.submit(b"warm", value)  # connected, topic metadata known
        wait_empty(publisher)
        if mode == "drain":
            publisher.stop()
            for k in keys:
                spool.append(k, value)
            publisher = Publisher(connection, topic, spool)

            def run() -> None:
                publisher.start()
                wait_empty(publisher)
        else:
            def run() -> None:
                for k in keys:
                    publisher.submit(k, value)
                wait_empty(publisher)
        result = _measure(run, count)
        publisher.stop()
        spool.close()
        shutil.rmtree(folder, ignore_errors=True)
        return result

    results: dict[str, list[Throughput]] = {"bare": [], "drain": [], "submit": []}
    for _ in range(rounds):
        results["bare"].append(bare())
        results["drain"].append(ours("drain"))
        results["submit"].append(ours("submit"))
    medians = {name: Throughput(statistics.median(r.rate for r in runs), statistics.median(r.cpu_ms for r in runs))
               for name, runs in results.items()}
    return medians, len(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the markdown report to FILE")
    parser.add_argument("--kafka-bootstrap", default="127.0.0.1:9092")
    args = parser.parse_args(argv)
    text = CAPTURE.read_text()
    ours, baseline = cpu_per_scrape(text)
    print("  cpu per scrape: done", file=sys.stderr)
    peak, final, seconds = producer_rss(args.kafka_bootstrap)
    print("  producer rss: done", file=sys.stderr)
    publish, size = publish_throughput(args.kafka_bootstrap)
    bare, drain, submit = publish["bare"], publish["drain"], publish["submit"]
    print("  publish throughput: done", file=sys.stderr)
    report = [
        "# Producer benchmark",
        "",
        *describe(),
        "",
        "| measure | ours | baseline (same run) | ratio | target |",
        "|---|---:|---:|---:|---|",
        f"| CPU per scrape, v1.28 capture (parse + select + encode) | {ours * 1e3:.2f} ms | "
        f"{baseline * 1e3:.2f} ms (prometheus_client parse only) | {baseline / ours:.1f}x faster | ≤ 3 ms |",
        f"| producer RSS, `kpp produce` after {seconds} s of 1 s scrapes | peak {peak:.1f} MB, now {final:.1f} MB "
        "| – | – | ≤ 60 MB |",
        f"| publish throughput ({size} B scrape records, gzip, acks=all): a filled spool sent | "
        f"{drain.rate:,.0f} rec/s, {drain.cpu_ms:.2f} ms CPU/rec | {bare.rate:,.0f} rec/s, {bare.cpu_ms:.2f} ms CPU/rec "
        f"(bare KafkaProducer) | {drain.rate / bare.rate:.2f} | ≥ 0.9 |",
        f"| publish throughput, submit → acknowledged (each record spooled with fsync first) | "
        f"{submit.rate:,.0f} rec/s, {submit.cpu_ms:.2f} ms CPU/rec | {bare.rate:,.0f} rec/s (bare KafkaProducer) | "
        f"{submit.rate / bare.rate:.2f} | ≫ 1 node's 1/15 s |",
    ]
    text_report = "\n".join(report) + "\n"
    emit(text_report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
