"""Whole-system proof: the pipeline over 50 simulated nodes, with every fault it claims to
survive injected during one run, ends with the same series in the store as a golden run of
the same seed computed without Kafka, workers, sink or store.

Faults of the machinery (compensated, so the result must not change):
  * the Kafka broker killed with SIGKILL and restarted (producers spool, then deliver);
  * a stream worker killed with SIGKILL and restarted (state restored from the changelog);
  * a second stream worker joining and leaving (two rebalances);
  * the sink killed with SIGKILL and restarted (at-least-once + VictoriaMetrics dedup);
  * VictoriaMetrics stopped for 2 minutes;
  * garbage messages on the samples topic and on a derived topic (to the DLQ).
Faults of the nodes (they change the input itself, so the golden run has them too, at the
same ticks): a node restarting twice (counter resets), one restarting once, one stalling,
one serving garbage, one vanishing (connection dropped), one answering 500, one serving no
kubeproxy_* family, one serving a 10,000-series family for two scrapes (its state and
partials far over 1 MB as plain JSON). And one node whose clock runs 50 minutes ahead
(its scrapes published by the test as its producer would): all of them are rejected.

Pass: the raw topic holds every scrape once and each equals the golden scrape, as the
simulator really served it; every bad input is accounted for (up=0 with the reason,
producer counters, DLQ); nothing is late but every scrape of the fast-clock node (reason
clock_skew); the store's derived series equal the golden run's, point for point. On a
difference, every difference and the trace of each scrape missing from a window go to
differences.txt.

Windows of 10 s and 30 s, scrapes every 2 s. Allowed lateness is 90 s: it must exceed the
longest skew between nodes of one partition, and the broker outage makes one (kill,
restart 15-45 s on a loaded machine, producer reconnect backoff ≤ 5 s). Windows close by
watermark only (idle and cluster timeouts are set beyond the run), so the compared windows
are those ending at least 90 s before the last scrape. A scrape that times out because the
machine is overloaded is taken as an input of the run (up=0 in both runs, reported).
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from contracts.codec import DecodeError
from contracts.derived import DerivedRecord
from kafka_io.connection import KafkaConnection
from contracts.records import ScrapeRecord
from producers.node import NodeSettings, build_record
from producers.scrape import ScrapeOutcome
from producers.select import Selector
from simulator.server import make_server
from streams.config import StreamSettings
from tests.conftest import free_port
from tests.faults.pipeline import (
    KPP, Procs, ScheduledCluster, ServedLog, compare_points, golden_points, golden_record, group_lag,
    BURST_FAMILY, SkewedNode, missing_scrapes_report, read_all, same_scrape, scrape_metric, skipped_ticks,
    tick_clock,
)
from tests.sinks import servers
from tests.sinks.helpers import vm_points
from tests.streams.harness import Worker
from tests.streams.reference import run_reference

pytestmark = pytest.mark.integration

# KPP_FAULTS_NODES changes the node count (50 producers processes fit a 2-core machine since
# kafka-python's sender no longer spins while the broker is down: kafka_io/connection.py).
NODES = int(os.environ.get("KPP_FAULTS_NODES", "50"))
SEED = 20240607
INTERVAL = 2.0
PARTITIONS = 4
WINDOWS = (10, 30)
LATENESS = 90.0
RUN_S = 230  # scraping after `base`; node faults end by +130, windows are compared up to ~+140
STREAM_FLAGS = ["--window", "10", "--window", "30", "--allowed-lateness", str(LATENESS),
                "--slo-window", "30", "--stall-threshold", "20",
                "--idle-timeout", "3600", "--cluster-timeout", "3600",
                "--trace-scrapes"]  # a scrape missing from a window is then found in the workers' logs


SKEWED = "node-skewed"  # its clock runs SKEW_S ahead: everything it sends is rejected
SKEW_S = 50 * 60
BURST_NODE, BURST_SERIES = "node-011", 10_000  # serves a 10,000-series family for two scrapes


def bursts(base: float) -> dict[str, tuple[float, float, int]]:
    # two scrapes (+62 s, +64 s) in one 10 s window: the node's state holds 10,000 baselines
    return {BURST_NODE: (base + 62, base + 66, BURST_SERIES)}


def clock_tick(stamp_ms: int) -> float:
    """The tick (epoch seconds) a scrape stamped `stamp_ms` started in."""
    return math.floor(stamp_ms / 1000 / INTERVAL) * INTERVAL


def schedule(base: float) -> dict[str, list[tuple[float, str]]]:
    return {
        "node-001": [(base + 30, "restart")],
        "node-002": [(base + 40, "stalled"), (base + 100, "none")],
        "node-003": [(base + 50, "malformed"), (base + 70, "none")],
        "node-004": [(base + 60, "gone"), (base + 90, "none")],
        "node-005": [(base + 100, "http500"), (base + 110, "none")],
        "node-006": [(base + 110, "missing-families"), (base + 130, "none")],
        "node-007": [(base + 70, "restart"), (base + 124, "restart")],
    }


def quiet_disconnects(server) -> None:
    """A producer that gave up on a scrape (timeout) closes the connection before the answer
    is written: that is counted by the producer, not worth a traceback here."""
    default = server.handle_error

    def handle_error(request, client_address) -> None:  # noqa: ANN001
        import sys
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            default(request, client_address)

    server.handle_error = handle_error


def stream_settings(prefix: str) -> StreamSettings:
    return StreamSettings(topic_prefix=prefix, window_sizes_s=WINDOWS, allowed_lateness_s=LATENESS,
                          slo_window_s=30, stall_threshold_s=20, idle_timeout_s=3600, cluster_timeout_s=3600,
                          partitions=PARTITIONS)


class Timeline:
    def __init__(self, base: float) -> None:
        self.base = base
        self.events: list[str] = []

    def until(self, offset: float) -> None:
        time.sleep(max(0.0, self.base + offset - time.time()))

    def note(self, what: str) -> None:
        line = f"[{time.time() - self.base:+7.1f} s] {what}"
        self.events.append(line)
        print(line, flush=True)


def test_faults_during_one_run_leave_the_store_equal_to_the_golden_run(private_kafka, tmp_path: Path) -> None:
    started = time.monotonic()
    connection = KafkaConnection(bootstrap=private_kafka.address)
    prefix = f"faults{uuid.uuid4().hex[:8]}"
    cluster_name = f"faults-{uuid.uuid4().hex[:8]}"
    nodes = [f"node-{i:03d}" for i in range(NODES)]
    base = (int(time.time() / 10) + 5) * 10.0  # ~40-50 s ahead: everything is up by then
    plan = schedule(base)
    sim_start = base - 120
    clock = tick_clock(INTERVAL)
    live_sim = ScheduledCluster(NODES, seed=SEED, start=sim_start, schedule=plan, bursts=bursts(base))
    served = ServedLog()
    server = make_server(live_sim, port=0, clock=clock, on_served=served.record)
    quiet_disconnects(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    vm = servers.private_victoriametrics(tmp_path / "vm")
    vm.start()
    procs = Procs(tmp_path / "logs")
    timeline = Timeline(base)
    workers: list[Worker] = []
    kafka_flags = ["--kafka-bootstrap", connection.bootstrap]
    sink_group = f"{prefix}-sink"
    sink_port = free_port()
    sink_argv = KPP + ["sink", "--to", "victoriametrics", "--url", vm.url, "--topic-prefix", prefix,
                       "--group", sink_group, "--listen", f"127.0.0.1:{sink_port}", "--batch-interval", "0.5",
                       "--max-backoff", "4", *kafka_flags]
    # Only the producers whose counters are read serve /metrics: a port picked free here can be
    # taken by another process's outgoing connection before the producer binds it (it happened:
    # "cannot listen on 127.0.0.1:60103: Address already in use"), so the fewer the better.
    counted = ("node-003", "node-004", "node-005")
    producer_ports = {node: free_port() for node in counted}
    try:
        # -- start: stream worker first (it creates the topics), sink, then one producer per node
        workers.append(Worker(connection, prefix, PARTITIONS, tmp_path, *STREAM_FLAGS, name="a"))
        deadline = time.monotonic() + 90
        while "streaming" not in workers[0].output():  # logged once its topics exist
            assert time.monotonic() < deadline and workers[0].proc.poll() is None, workers[0].output()[-3000:]
            time.sleep(0.5)
        procs.start("sink", sink_argv)
        for node in nodes:
            procs.start(f"produce-{node}", KPP + [
                "produce", "--node", node, "--cluster", cluster_name, "--interval", str(INTERVAL),
                "--timeout", "1.8", "--target", f"http://127.0.0.1:{server.port}/nodes/{node}/metrics",
                "--topic-prefix", prefix, "--spool-dir", str(tmp_path / "spool" / node),
                "--listen", f"127.0.0.1:{producer_ports[node]}" if node in producer_ports else "", *kafka_flags])
        skewed = SkewedNode(connection, f"{prefix}.samples", node=SKEWED, cluster=cluster_name, skew_s=SKEW_S,
                            interval_s=INTERVAL, until=base + RUN_S - 4, seed=SEED + 1)
        skewed.start()
        timeline.note(f"{NODES} producers, 1 stream worker, 1 sink started, and {SKEWED} whose clock runs "
                      f"{SKEW_S // 60} min ahead ({time.monotonic() - started:.0f} s after the test began)")
        assert time.time() < base + 10, "start-up took too long for the planned timeline"

        # -- faults of the machinery
        timeline.until(20)
        workers[0].kill9()
        timeline.note("stream worker a killed with SIGKILL")
        workers.append(Worker(connection, prefix, PARTITIONS, tmp_path, *STREAM_FLAGS, name="a2"))
        timeline.note("stream worker a2 started")

        timeline.until(45)
        broker_pid = private_kafka.process.pid()
        os.kill(broker_pid, signal.SIGKILL)
        while private_kafka.process.alive(broker_pid):
            try:
                os.waitpid(broker_pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.05)
        killed_at = time.time()
        timeline.note("Kafka broker killed with SIGKILL")
        time.sleep(5)
        private_kafka.up()
        outage = time.time() - killed_at
        timeline.note(f"Kafka broker back (answers metadata): down {outage:.0f} s")

        timeline.until(75)
        workers.append(Worker(connection, prefix, PARTITIONS, tmp_path, *STREAM_FLAGS, name="b"))
        timeline.note("stream worker b joins the group")

        timeline.until(85)
        procs.kill9("sink")
        timeline.note("sink killed with SIGKILL")
        time.sleep(3)
        procs.start("sink", sink_argv)
        timeline.note("sink restarted")

        timeline.until(95)
        garbage = KafkaProducer(**connection.kafka_python_kwargs(), acks="all")
        garbage.send(f"{prefix}.samples", key=b"node-000", value=b"{not json at all")
        garbage.send(f"{prefix}.samples", key=b"node-001",
                     value=b'{"schema": "kube-proxy.samples/v9", "node": "node-001"}')
        garbage.send(f"{prefix}.rates", key=b"node-002", value=b"\xff\xfe not a derived record")
        garbage.flush(30)
        garbage.close()
        timeline.note("3 garbage messages published (2 on .samples, 1 on .rates)")

        timeline.until(100)
        vm.stop()
        timeline.note("VictoriaMetrics stopped")

        timeline.until(115)
        workers[2].stop()
        timeline.note("stream worker b left the group (SIGTERM)")

        timeline.until(220)
        vm.start()
        timeline.note("VictoriaMetrics started again (down 120 s)")

        # -- end of input
        timeline.until(RUN_S)
        producer_names = [f"produce-{n}" for n in nodes]
        assert not procs.dead(producer_names), procs.dead(producer_names)
        counters = {node: {
            "parse": scrape_metric(producer_ports[node], "kpp_producer_parse_errors_total"),
            "http_status": scrape_metric(producer_ports[node], "kpp_producer_scrapes_total", reason="http_status"),
            "transport": scrape_metric(producer_ports[node], "kpp_producer_scrapes_total", reason="transport"),
            "dropped": scrape_metric(producer_ports[node], "kpp_producer_spool_dropped_total"),
        } for node in counted}
        codes = procs.stop(producer_names, timeout=40)
        timeline.note("producers stopped (SIGTERM)")
        assert all(code == 0 for code in codes.values()), {n: c for n, c in codes.items() if c}
        for name in producer_names:
            assert " 0 still spooled, 0 dropped" in procs.log(name), procs.log(name)[-2000:]
        server.shutdown()

        skewed.join(330)
        assert not skewed.is_alive() and skewed.error is None, skewed.error
        timeline.note(f"{SKEWED} published {len(skewed.sent)} scrape(s) stamped {SKEW_S // 60} min ahead")

        # -- the raw topic: every scrape once, each equal to the golden scrape
        raw = read_all(connection, f"{prefix}.samples")
        scrapes, junk, skewed_stamps = [], [], []
        for m in raw:
            try:
                record = ScrapeRecord.decode(m.value)
            except DecodeError:
                junk.append(m.value)
                continue
            if record.node == SKEWED:
                skewed_stamps.append(record.scrape_ts_ms)
            else:
                scrapes.append(record)
        assert sorted(skewed_stamps) == sorted(skewed.sent)
        assert sorted(junk) == sorted(
            [b"{not json at all", b'{"schema": "kube-proxy.samples/v9", "node": "node-001"}'])
        per_scrape = Counter((r.node, r.scrape_ts_ms) for r in scrapes)
        twice = {k: c for k, c in per_scrape.items() if c > 1}
        assert not twice, f"{len(twice)} scrape(s) published more than once, e.g. {list(twice.items())[:5]}"
        ticks: dict[str, list[int]] = defaultdict(list)
        for r in scrapes:
            ticks[r.node].append(r.scrape_ts_ms)
        assert set(ticks) == set(nodes)
        step = int(INTERVAL * 1000)
        for node, stamps in ticks.items():
            stamps.sort()  # each the real start of its request, at or after its tick
            gaps = (stamps[-1] // step - stamps[0] // step) + 1 - len(stamps)
            assert gaps == skipped_ticks(procs.log(f"produce-{node}")), (node, gaps)
            assert stamps[0] <= (base - 5) * 1000 and stamps[-1] >= (base + RUN_S - 4) * 1000, node

        golden_sim = ScheduledCluster(NODES, seed=SEED, start=sim_start, schedule=plan, bursts=bursts(base))
        selector = Selector()
        target = f"http://127.0.0.1:{server.port}/nodes/{{}}/metrics"
        golden_in: list[ScrapeRecord] = []
        modes: dict[tuple[str, int], str] = {}
        unserved = []
        for node in nodes:
            stamps = ticks[node]
            for i, ts in enumerate(stamps):
                # as of the tick the server really answered in (a late request: the next one)
                at = served.answered_as_of(node, ts, stamps[i + 1] if i + 1 < len(stamps) else None)
                if at is None:  # never reached the server (timed out before): the tick of its start
                    unserved.append((node, ts))
                    at = clock_tick(ts)
                modes[node, ts] = golden_sim.mode_at(node, at)
                golden_in.append(golden_record(golden_sim, node, ts, cluster=cluster_name,
                                               target=target.format(node), interval_s=INTERVAL,
                                               selector=selector, at=at))
        by_scrape = {(r.node, r.scrape_ts_ms): r for r in scrapes}
        # A scrape that timed out because this machine was overloaded (the broker starting,
        # other jobs) is a real input of this run, published with up=0 like any failed scrape:
        # it replaces the golden one, and is counted and reported.
        timeouts = []
        for i, g in enumerate(golden_in):
            live = by_scrape[g.node, g.scrape_ts_ms]
            if not live.up and (live.error or "").startswith("no complete answer within") and g.up:
                outcome = ScrapeOutcome(None, 0.0, 0, "timeout", live.error)
                golden_in[i], _ = build_record(NodeSettings(node=g.node, cluster=cluster_name, interval_s=INTERVAL),
                                               g.target, g.scrape_ts_ms, outcome, selector)
                timeouts.append((g.node, g.scrape_ts_ms))
        if unserved:
            timeline.note(f"{len(unserved)} scrape(s) never reached the simulator (timed out first): {unserved[:5]}")
        if timeouts:
            timeline.note(f"{len(timeouts)} scrape(s) timed out on the loaded machine (up=0 in both runs): "
                          f"{timeouts[:5]}")
        assert len(timeouts) <= len(golden_in) // 50, "too many scrapes timed out to call this run meaningful"
        differing = [(g.node, g.scrape_ts_ms, why) for g in golden_in
                     if (why := same_scrape(by_scrape[g.node, g.scrape_ts_ms], g, modes[g.node, g.scrape_ts_ms]))]
        assert not differing, f"{len(differing)} published scrape(s) differ from the golden ones: {differing[:5]}"

        # -- bad input accounted for: up=0 with the reason, in the producers' counters too
        def count(node: str, predicate) -> int:
            return sum(1 for r in scrapes if r.node == node and predicate(r))
        malformed = count("node-003", lambda r: not r.up and r.error.startswith("parse error: line"))
        timed_out = set(timeouts)
        vanished = count("node-004", lambda r: not r.up and (r.node, r.scrape_ts_ms) not in timed_out)
        errors500 = count("node-005", lambda r: not r.up and r.error.startswith("HTTP 500"))
        userspace = count("node-006", lambda r: r.up and not r.kube_proxy_metrics)
        planned = Counter(modes.values())
        assert (malformed, vanished, errors500, userspace) == (
            planned["malformed"], planned["gone"], planned["http500"], planned["missing-families"])
        assert min(malformed, vanished, errors500, userspace) >= 4, (malformed, vanished, errors500, userspace)
        assert counters["node-003"]["parse"] == malformed
        assert counters["node-004"]["transport"] == vanished
        assert counters["node-005"]["http_status"] == errors500
        assert all(c["dropped"] == 0 for c in counters.values())
        down = sum(1 for r in scrapes if not r.up)
        assert down == malformed + vanished + errors500 + len(timeouts), "a scrape failed that no fault explains"

        # -- golden derived records: the in-process reference of the same stages
        settings = stream_settings(prefix)
        golden_in.sort(key=lambda r: (r.scrape_ts_ms, r.node))
        sent = run_reference(settings, [(r.key, r.encode()) for r in golden_in], finish_idle=False)
        derived_topics = {getattr(settings.topics, k) for k in ("rates", "quantiles", "gauges", "health", "slo")}
        golden = sorted({v for t, _k, v in sent if t in derived_topics})
        golden_records = [DerivedRecord.decode(v) for v in golden]
        want = golden_points(golden_records)
        expected_points = sum(len(v) for v in want.values())
        per_window = Counter((r.node, r.window_size_s, r.window_start_ms) for r in golden_records if r.scope == "node")
        timeline.note(f"golden run: {len(golden_in)} scrapes -> {len(golden)} derived records, "
                      f"{expected_points} points; per node and window: "
                      + ", ".join(f"{s} s: {sum(c for (n, sz, _), c in per_window.items() if sz == s) / max(1, sum(1 for (n, sz, _) in per_window if sz == s)):.0f} records"
                                  for s in WINDOWS))
        assert len({r.window_start_ms for r in golden_records if r.window_size_s == 10}) >= 12

        # -- wait for the pipeline to drain into the store
        stream_group = f"kpp-streams.{prefix}"
        deadline = time.monotonic() + 240
        got: dict = {}
        while time.monotonic() < deadline:
            if group_lag(connection, sink_group, sorted(derived_topics)) == 0 \
                    and group_lag(connection, stream_group, [f"{prefix}.samples"]) == 0:
                got = vm_points(vm.url, f'{{cluster="{cluster_name}"}}')
                if sum(len(v) for v in got.values()) >= expected_points:
                    break
            time.sleep(3)
        timeline.note(f"store holds {sum(len(v) for v in got.values())} points of {len(got)} series "
                      f"(golden: {expected_points} of {len(want)})")

        # -- late: exactly the skewed node's scrapes, as clock_skew; the DLQ holds exactly the
        # garbage, each with a reason
        late = [orjson.loads(m.value) for m in read_all(connection, f"{prefix}.late")]
        others = [(d.get("node"), d.get("scrape_ts_ms"), d.get("reason")) for d in late if d.get("node") != SKEWED]
        assert not others, (f"{len(others)} scrape(s) of other nodes went to .late (allowed lateness {LATENESS:g} s, "
                            f"the broker was away {outage:.0f} s): {others[:10]}")
        # each once or more: a rejection re-read after a worker's kill or stop is sent again
        rejected = {(d["scrape_ts_ms"], d["reason"]) for d in late}
        assert rejected == {(ts, "clock_skew") for ts in skewed.sent}, \
            f"{SKEWED}: {len(skewed.sent)} scrape(s) sent, .late holds {sorted(rejected)[:10]}"
        dlq = read_all(connection, f"{prefix}.dlq")
        letters = [orjson.loads(m.value) for m in dlq]
        stream_letters = sorted(d["error"] for d in letters if d["source"]["topic"] == f"{prefix}.samples")
        sink_letters = [d for d in letters if d.get("stage") == "sink"]
        assert len(stream_letters) == 2 and any("JSON" in r for r in stream_letters) \
            and any("unknown schema" in r for r in stream_letters), letters
        assert len(sink_letters) == 1 and sink_letters[0]["reason"] == "malformed", letters
        assert len(letters) == 3, letters

        # -- the store equals the golden run
        # VictoriaMetrics keeps 12 significant decimal digits of a float (1.455731799749998 is
        # stored as 1.455731799749): values are equal to that precision, stamps exactly.
        problems = compare_points(got, want, rel=1e-11)
        if problems:
            report = tmp_path / "differences.txt"
            missing = missing_scrapes_report(got, want, golden_in, [w.log_path for w in workers])
            report.write_text("\n".join(problems) + "\n\n" + "\n".join(missing) + "\n")
            raise AssertionError(f"{len(problems)} difference(s) from the golden run (all of them, and where "
                                 f"each missing scrape went, in {report}):\n" + "\n".join(problems[:30])
                                 + "\n" + "\n".join(missing[:30]))
        sink_written = scrape_metric(sink_port, "kpp_sink_points_written_total")
        timeline.note(f"equal to the golden run; the restarted sink wrote {sink_written:.0f} points; "
                      f"test took {time.monotonic() - started:.0f} s")
    finally:
        server.shutdown()
        for worker in workers:
            worker.stop()
        procs.stop_all()
        vm.stop()
        print("\n".join(timeline.events))
