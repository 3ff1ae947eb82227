"""`kpp produce` as users run it: real processes scraping the simulator over HTTP and
publishing to the real broker. Faults of the targets are counted and contained; a Kafka
outage and a kill -9 of the producer lose no scrape."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from kafka_io.connection import KafkaConnection
from contracts.records import ScrapeRecord
from producers.spool import Spool
from simulator import Cluster
from simulator.server import make_server
from tests.conftest import consume, free_port, wait_until

pytestmark = pytest.mark.integration
KPP = [sys.executable, "-m", "kpp"]
INTERVAL = 1.0


@pytest.fixture
def simulator():
    cluster = Cluster(nodes=10, seed=7, start=time.time())
    server = make_server(cluster, port=0, slow_seconds=3.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def start_producer(node: str, sim_port: int, bootstrap: str, topic_prefix: str, spool: Path,
                   log: Path, *extra: str) -> subprocess.Popen:
    argv = KPP + ["produce", "--node", node, "--cluster", "e2e", "--interval", str(INTERVAL), "--timeout", "1",
                  "--target", f"http://127.0.0.1:{sim_port}/nodes/{node}/metrics", "--topic-prefix", topic_prefix,
                  "--spool-dir", str(spool / node), "--kafka-bootstrap", bootstrap, *extra]
    return subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(timeout=30) == 0, f"producer exited {proc.returncode}"


def records_by_node(kafka: KafkaConnection, topic: str, expected: int) -> dict[str, list[ScrapeRecord]]:
    out: dict[str, list[ScrapeRecord]] = defaultdict(list)
    for key, value in consume(kafka, topic, expected, timeout=60):
        record = ScrapeRecord.decode(value)
        assert key == record.node.encode()
        out[record.node].append(record)
    return out


def test_target_faults_are_counted_and_contained(simulator, kafka: KafkaConnection, tmp_path: Path) -> None:
    faults = {"node-001": "http500", "node-002": "malformed", "node-003": "slow", "node-004": "gone",
              "node-005": "missing-families"}
    for node, mode in faults.items():
        simulator.cluster.set_fault(node, mode, time.time())
    prefix = f"t{os.getpid()}{int(time.time())}"
    nodes = ["node-000", *faults]
    metrics_port = free_port()
    procs = []
    for node in nodes:
        extra = ("--listen", f"127.0.0.1:{metrics_port}") if node == "node-001" else ("--listen", "")
        if node == "node-003":  # the slow node: time out well within the interval, so no tick is skipped
            extra += ("--timeout", "0.5")
        procs.append(start_producer(node, simulator.port, kafka.bootstrap, prefix, tmp_path / "spool",
                                    tmp_path / f"{node}.log", *extra))
    try:
        assert wait_until(lambda: _metric(metrics_port, 'reason="http_status"') >= 3, timeout=40)
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        assert 'kpp_producer_up{target=' in text and "kpp_producer_spool_depth" in text
        health = httpx.get(f"http://127.0.0.1:{metrics_port}/healthz")
        assert health.status_code == 200
        time.sleep(2)
    finally:
        stop(procs)
    got = records_by_node(kafka, f"{prefix}.samples", expected=len(nodes) * 4)
    assert set(got) == set(nodes)
    for node, records in got.items():
        assert len(records) >= 3, node
        stamps = [r.scrape_ts_ms for r in records]
        assert stamps == sorted(set(stamps)), f"{node}: not in order or duplicated"
        # Stamped with the real start of the scrape, which is at or just after its tick: one per tick.
        ticks = [tick_of(ts) for ts in stamps]
        assert ticks == sorted(set(ticks)), f"{node}: two scrapes in one interval"
    ok = got["node-000"]
    assert all(r.up == 1 and r.kube_proxy_metrics and len(r.samples) > 100 for r in ok)
    assert all(r.up == 0 and r.error.startswith("HTTP 500") for r in got["node-001"])
    assert all(r.up == 0 and "parse error: line" in r.error for r in got["node-002"])
    assert all(r.up == 0 and "no complete answer within 0.5 s" in r.error for r in got["node-003"])
    assert all(r.up == 0 and r.error for r in got["node-004"])
    assert all(r.up == 1 and not r.kube_proxy_metrics and r.samples == () for r in got["node-005"])
    # One warning per change of reason, not one per scrape.
    for node in faults:
        log = (tmp_path / f"{node}.log").read_text()
        assert 1 <= log.count("failed (") + log.count("serves no kubeproxy_* metrics") <= 2, log
        assert "Traceback" not in log


def tick_of(scrape_ts_ms: int) -> int:
    """The tick a scrape belongs to: it starts at its tick or later, within the interval."""
    step = int(INTERVAL * 1000)
    return scrape_ts_ms // step * step


def _metric(port: int, needle: str) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("kpp_producer_scrapes_total") and needle in line)


def test_kafka_outage_and_kill9_lose_no_scrape(simulator, private_kafka, tmp_path: Path) -> None:
    """10 nodes scraped every second; the broker is stopped for 30 s; meanwhile node-000's
    producer is killed with SIGKILL and restarted on its spool. Every scrape taken arrives
    exactly once, in order per node."""
    bootstrap = private_kafka.address
    kafka = KafkaConnection(bootstrap=bootstrap)
    prefix = "outage"
    nodes = [f"node-{i:03d}" for i in range(10)]
    procs = {node: start_producer(node, simulator.port, bootstrap, prefix, tmp_path / "spool",
                                  tmp_path / f"{node}.log", "--listen", "") for node in nodes}
    time.sleep(6)
    private_kafka.down()
    outage_started = time.monotonic()
    time.sleep(8)
    procs["node-000"].send_signal(signal.SIGKILL)
    procs["node-000"].wait()
    # What the killed producer had taken but not delivered is on disk...
    with Spool(tmp_path / "spool" / "node-000") as spool:
        spooled = [ScrapeRecord.decode(e.value).scrape_ts_ms for e in spool.peek(10_000)]
    assert len(spooled) >= 2  # about 8 on an idle machine; fewer when scrapes are slowed by load
    # ... and its successor picks it up.
    procs["node-000"] = start_producer("node-000", simulator.port, bootstrap, prefix, tmp_path / "spool",
                                       tmp_path / "node-000.log", "--listen", "")
    time.sleep(max(0.0, 30 - (time.monotonic() - outage_started)))
    private_kafka.up()
    time.sleep(8)
    stop(list(procs.values()))

    got = records_by_node(kafka, f"{prefix}.samples", expected=10 * 40)
    assert set(got) == set(nodes)
    for node, records in got.items():
        stamps = [r.scrape_ts_ms for r in records]
        assert stamps == sorted(set(stamps)), f"{node}: duplicated or out of order"
        # A scrape may time out on a loaded machine; it is delivered all the same (up=0).
        assert sum(r.up for r in records) >= 0.8 * len(records), [r.error for r in records if not r.up]
        if node != "node-000":
            # No gap through the outage: one scrape per interval from the first to the last,
            # except ticks the producer itself reported skipped (a scrape overran on a loaded machine).
            scraped = [tick_of(ts) for ts in stamps]
            ticks = list(range(scraped[0], scraped[-1] + 1, int(INTERVAL * 1000)))
            log = (tmp_path / f"{node}.log").read_text()
            skipped = sum(int(n) for n in re.findall(r"(\d+) tick\(s\) skipped", log))
            assert len(set(scraped)) == len(scraped) and len(ticks) - len(scraped) == skipped, (node, skipped)
            assert len(stamps) >= 35
    assert set(spooled) <= {r.scrape_ts_ms for r in got["node-000"]}, "a spooled scrape of the killed producer was lost"
