"""`kpp demo`: the main job in one command — simulated kube-proxy nodes, one producer per
node, and every later stage that exists (stream worker, sink), with a live summary.

The stack (Kafka, VictoriaMetrics) must be up: `make demo` runs `kpp stack up` first.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

from contracts.codec import DecodeError
from contracts.derived import DerivedRecord
from contracts.errors import KppError
from kafka_io.connection import (KafkaAuthenticationError, KafkaConnection, KafkaTopicMissingError,
                                 KafkaUnavailableError)
from contracts.records import ScrapeRecord
from contracts.topics import Topics
from kafka_io.reader import quiet_reader_logs
from stack.settings import StackSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run simulator, producers and every pipeline stage with a live summary",
        description="Start N simulated kube-proxy nodes, one `kpp produce` per node, and the stream worker "
                    "and sink when those stages are installed; print a live summary until Ctrl-C or "
                    "--duration, then the VictoriaMetrics UI address and a PromQL query to paste.",
    )
    parser.add_argument("--nodes", type=int, default=20, help="simulated nodes (default 20)")
    parser.add_argument("--seed", type=int, default=1, help="simulator seed (default 1)")
    parser.add_argument("--interval", type=float, default=5.0, help="scrape interval in seconds (default 5)")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop after this many seconds (default 0: until Ctrl-C)")
    parser.add_argument("--sim-port", type=int, default=18080, help="simulator port (default 18080)")
    parser.add_argument("--cluster", default="demo", help="cluster name (default demo)")
    KafkaConnection.add_cli_arguments(parser)
    parser.set_defaults(func=run)


class Children:
    """The demo's child processes; all of them are stopped on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.procs.append((name, proc))
        return proc

    def dead(self) -> list[tuple[str, int]]:
        return [(name, proc.returncode) for name, proc in self.procs if proc.poll() is not None]

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Tally:
    """What the live summary shows: scrapes per node from the samples topic, the latest
    per-node sync p99 and the cluster SLI from the derived topics."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.scrapes: dict[str, int] = defaultdict(int)
        self.down: dict[str, int] = defaultdict(int)
        self.samples = 0
        self.last_ts_ms = 0
        self.sync_p99: dict[str, tuple[int, float | None]] = {}  # node -> (window end, p99 seconds)
        self.sli: tuple[int, dict] | None = None  # (window end, values) of the cluster SLO record

    def add_derived(self, record: DerivedRecord) -> None:
        with self.lock:
            if (record.kind == "quantiles" and record.scope == "node" and record.window_size_s == 60
                    and record.metric == "sync_proxy_rules_duration_seconds" and not record.labels.get("mode")):
                if record.window_end_ms >= self.sync_p99.get(record.node, (0, None))[0]:
                    self.sync_p99[record.node] = (record.window_end_ms, record.values.get("p99"))
            elif record.kind == "slo" and record.scope == "cluster":
                if self.sli is None or record.window_end_ms >= self.sli[0]:
                    self.sli = (record.window_end_ms, dict(record.values))

    def add(self, record: ScrapeRecord) -> None:
        with self.lock:
            self.scrapes[record.node] += 1
            if not record.up:
                self.down[record.node] += 1
            self.samples += len(record.samples)
            self.last_ts_ms = max(self.last_ts_ms, record.scrape_ts_ms)


def summary_topics(topics: Topics, with_stream_stage: bool) -> list[str]:
    """What the live summary reads: the samples, and the derived topics when the stream stage
    runs (without it they never appear)."""
    return [topics.samples, topics.quantiles, topics.slo] if with_stream_stage else [topics.samples]


def follow(connection: KafkaConnection, topics: Topics, tally: Tally, stop: threading.Event) -> None:
    from kafka_io.reader import END, FOLLOW, SyncRangeReader

    names = summary_topics(topics, stage_available("streams.cli"))
    reader = None
    try:
        while not stop.is_set():
            if reader is None:
                candidate = SyncRangeReader(connection, names, start=END, stop=FOLLOW, client_id="kpp-demo")
                try:
                    candidate.open()
                except KafkaTopicMissingError:  # the stream worker creates them as it starts
                    stop.wait(1.0)
                    continue
                except KppError as exc:  # the summary stops; the stages keep running and logging
                    print(f"demo: the live summary cannot read Kafka: {exc}", file=sys.stderr, flush=True)
                    return
                reader = candidate
            for message in reader.read(1.0):
                try:
                    if message.topic == topics.samples:
                        tally.add(ScrapeRecord.decode(message.value))
                    else:
                        tally.add_derived(DerivedRecord.decode(message.value))
                except DecodeError:
                    pass  # the stream stage and the sink account for bad messages; the summary only shows
                if stop.is_set():
                    break
    finally:
        if reader is not None:
            reader.close()


DEMO_PARTITIONS = 4


def stage_available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def run(args: argparse.Namespace) -> int:
    # Unless told otherwise, the demo talks to the stack `kpp stack up` started (KPP_*_PORT aware).
    stack = StackSettings.from_env()
    connection = KafkaConnection.from_sources(args, os.environ | {"KAFKA_BOOTSTRAP": stack.kafka_bootstrap})
    vm_url = stack.vm_url
    quiet_reader_logs(args)
    try:  # before any child starts: nothing to clean up when Kafka is not there
        connection.check()
    except KafkaAuthenticationError:
        raise
    except KafkaUnavailableError as exc:
        raise KafkaUnavailableError(f"{exc} (the local stack: `kpp stack up`)") from None
    kpp = [sys.executable, "-m", "kpp"]
    state = Path(os.environ.get("KPP_STATE_DIR", ".kpp")) / "demo"
    children = Children(state / "logs")
    topics = Topics.from_env()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    kafka_flags = ["--kafka-bootstrap", connection.bootstrap]
    try:
        children.start("simulator", kpp + ["simulate", "--nodes", str(args.nodes), "--seed", str(args.seed),
                                           "--port", str(args.sim_port), "--healthz-probe-interval", "10"])
        stages = ["simulator", f"{args.nodes} producers"]
        if stage_available("streams.cli"):
            # Started first: it creates the topics with the partition count it needs.
            children.start("stream", kpp + ["stream", "--partitions", str(DEMO_PARTITIONS), *kafka_flags])
            stages.append("stream worker")
            time.sleep(3)
        for i in range(args.nodes):
            node = f"node-{i:03d}"
            children.start(f"produce-{node}", kpp + [
                "produce", "--node", node, "--cluster", args.cluster, "--interval", str(args.interval),
                "--target", f"http://127.0.0.1:{args.sim_port}/nodes/{node}/metrics",
                "--spool-dir", str(state / "spool" / node), "--listen", "", *kafka_flags])
        if stage_available("sinks.cli"):
            children.start("sink", kpp + ["sink", "--to", "victoriametrics", "--url", vm_url, "--raw", "--listen", "",
                                          *kafka_flags])
            stages.append("sink")
        print(f"demo: running {', '.join(stages)} (logs in {children.log_dir}); Ctrl-C to stop", flush=True)
        tally = Tally()
        threading.Thread(target=follow, args=(connection, topics, tally, stop), daemon=True).start()
        summarize(args, tally, children, stop)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        print("demo: stopping ...", flush=True)
        children.stop()
    print_finale(vm_url, tally if "tally" in locals() else Tally())
    return 0


def summarize(args: argparse.Namespace, tally: Tally, children: Children, stop: threading.Event) -> None:
    started = time.monotonic()
    previous = 0
    while not stop.wait(args.interval):
        dead = children.dead()
        if dead:
            names = ", ".join(f"{name} (exit {code})" for name, code in dead)
            raise KppError(f"demo: {names} stopped unexpectedly; see {children.log_dir}")
        with tally.lock:
            total = sum(tally.scrapes.values())
            reporting = len(tally.scrapes)
            down = sum(tally.down.values())
            samples = tally.samples
        rate = (total - previous) / args.interval
        previous = total
        elapsed = time.monotonic() - started
        print(f"[{elapsed:5.0f}s] nodes reporting {reporting}/{args.nodes} · scrapes {total} "
              f"({rate:.1f}/s) · failed scrapes {down} · samples {samples}", flush=True)
        derived = derived_summary(tally)
        if derived:
            print(f"        {derived}", flush=True)
        if args.duration and elapsed >= args.duration:
            return


def derived_summary(tally: Tally) -> str:
    """Per-node sync p99 of the latest 60 s windows and the cluster SLI, once the stream
    stage has closed its first windows."""
    with tally.lock:
        p99s = sorted((v, node) for node, (_, v) in tally.sync_p99.items() if v is not None)
        sli = tally.sli
    parts = []
    if p99s:
        median = p99s[len(p99s) // 2][0]
        parts.append(f"sync p99 (60s) over {len(p99s)} nodes: median {median * 1000:.1f} ms, "
                     f"slowest {p99s[-1][1]} {p99s[-1][0] * 1000:.1f} ms")
    if sli is not None:
        values = sli[1]
        if values.get("p99") is None:
            parts.append("network-programming SLI: no observations yet")
        else:
            verdict = "within" if values.get("within") == 1 else "ABOVE"
            parts.append(f"network-programming SLI p99 (5m, cluster) {values['p99']:.2f} s, {verdict} "
                         f"threshold {values.get('threshold_s', float('nan')):g} s")
    return " · ".join(parts)


def print_finale(url: str, tally: Tally) -> None:
    print(f"demo: {sum(tally.scrapes.values())} scrapes from {len(tally.scrapes)} nodes went through Kafka.")
    print(f"VictoriaMetrics UI: {url}/vmui")
    if stage_available("sinks.cli"):
        print("PromQL to paste (sync p99 per node, computed in flight by the pipeline):")
        print("  kubeproxy:sync_proxy_rules_duration_seconds:p99{window=\"60s\"}")
        print("and the same from the raw samples, as Prometheus would compute it:")
    else:
        print("The sink stage is not installed yet, so nothing was written to VictoriaMetrics by this run.")
        print("Once it is, this PromQL shows the per-node sync p99:")
    print("  histogram_quantile(0.99, sum by (node, le) "
          "(rate(kubeproxy_sync_proxy_rules_duration_seconds_bucket[1m])))")
