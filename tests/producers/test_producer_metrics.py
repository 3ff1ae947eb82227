"""The producer's own metrics: scrape duration and publish latency are histograms, the
publisher's counts are counters, and the process metrics are there."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kafka_io.connection import KafkaConnection
from runtime.selfmetrics import Counters
from producers.cli_produce import _export_publisher_stats
from producers.node import NodeProducer, NodeSettings
from producers.scrape import ScrapeOutcome
from producers.select import Selector
from tests.conftest import FIXTURES, free_port, wait_until

BODY = (FIXTURES / "v1.28.0-iptables.txt").read_text()
TARGET = "http://t/metrics"


class ListSink:
    def submit(self, key: bytes, value: bytes, timestamp_ms: int | None = None) -> None:
        pass


def families(counters: Counters) -> dict:
    return {f.name: f for f in text_string_to_metric_families(counters.render())}


def test_scrape_duration_is_a_histogram_per_target() -> None:
    producer = NodeProducer(NodeSettings(node="n", cluster="c"), [], Selector(), ListSink(), "t")
    for duration in (0.004, 0.2, 3.0):
        producer.publish(TARGET, 15.0, ScrapeOutcome(BODY, duration, len(BODY), "ok", None, 15_003))
    fam = families(producer.counters)["kpp_producer_scrape_duration_seconds"]
    assert fam.type == "histogram"
    values = {(s.name, s.labels.get("le")): s.value for s in fam.samples if s.labels["target"] == TARGET}
    assert values[("kpp_producer_scrape_duration_seconds_count", None)] == 3
    assert values[("kpp_producer_scrape_duration_seconds_sum", None)] == pytest.approx(3.204)
    assert values[("kpp_producer_scrape_duration_seconds_bucket", "0.005")] == 1
    assert values[("kpp_producer_scrape_duration_seconds_bucket", "0.25")] == 2
    assert values[("kpp_producer_scrape_duration_seconds_bucket", "+Inf")] == 3
    assert "process_cpu_seconds" in families(producer.counters)


@pytest.mark.integration
def test_publish_latency_histogram_and_publisher_counters(kafka: KafkaConnection, topic_name: str,
                                                          tmp_path: Path) -> None:
    from producers.publish import Publisher
    from producers.spool import Spool

    spool = Spool(tmp_path / "spool")
    publisher = Publisher(kafka, topic_name, spool, batch_records=10)
    counters = Counters()
    _export_publisher_stats(counters, publisher)
    publisher.start()
    try:
        for i in range(20):
            publisher.submit(b"node-a", b"%d" % i, timestamp_ms=int(time.time() * 1000))
        assert wait_until(lambda: counters.get("kpp_producer_publish_latency_seconds_count") == 20, 30)
        assert counters.get("kpp_producer_spool_depth") == 0 and counters.get("kpp_producer_kafka_connected") == 1
    finally:
        publisher.stop()
        spool.close()
    fam = families(counters)
    assert fam["kpp_producer_publish_latency_seconds"].type == "histogram"
    assert counters.get("kpp_producer_publish_latency_seconds_sum") > 0
    assert fam["kpp_producer_published"].type == "counter"
    assert counters.get("kpp_producer_published_total") == 20
    assert counters.get("kpp_producer_spool_dropped_total") == 0


class Fixture(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = BODY.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.integration
def test_kpp_produce_serves_histograms_process_metrics_and_readyz(kafka: KafkaConnection, tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Fixture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    listen = f"127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", "kpp", "produce", "--node", "node-m", "--cluster", "m", "--interval", "1",
            "--target", target, "--topic-prefix", f"m{uuid.uuid4().hex[:10]}", "--listen", listen,
            "--spool-dir", str(tmp_path / "spool"), "--kafka-bootstrap", kafka.bootstrap]
    log = tmp_path / "produce.log"
    proc = subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT)

    def scraped() -> dict:
        try:
            text = httpx.get(f"http://{listen}/metrics", timeout=2).text
        except httpx.HTTPError:
            return {}
        return {(s.name, s.labels.get("target")): s.value for f in text_string_to_metric_families(text)
                for s in f.samples}

    try:
        assert wait_until(lambda: scraped().get(("kpp_producer_publish_latency_seconds_count", None), 0) >= 2
                          and scraped().get(("kpp_producer_scrape_duration_seconds_count", target), 0) >= 2, 30), \
            log.read_text()[-3000:]
        got = scraped()
        # the +Inf bucket comes last among a target's buckets: it holds every scrape
        assert got[("kpp_producer_scrape_duration_seconds_bucket", target)] == \
            got[("kpp_producer_scrape_duration_seconds_count", target)]
        assert got[("kpp_producer_published_total", None)] >= 2
        assert ("process_cpu_seconds_total", None) in got and ("process_resident_memory_bytes", None) in got
        for path in ("/healthz", "/readyz"):
            assert httpx.get(f"http://{listen}{path}", timeout=2).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        server.shutdown()
