"""Soak run: N simulated nodes through the whole pipeline for D minutes, watching memory and
lag. Not a test (and not part of `make test`): `make soak`, or

    .venv/bin/python bench/soak.py [--nodes 200] [--minutes 15] [--interval 15] [--out bench/out]

Needs the local stack (`kpp stack up`). Starts `kpp simulate`, one `kpp produce` per node,
`--workers` stream workers and one sink (to the stack's VictoriaMetrics), all on a fresh
topic prefix; every `--sample-every` seconds records the RSS (/proc/<pid>/status VmRSS) and
CPU time of every process (the stack's Kafka and VictoriaMetrics too) and the consumer lag
of the stream workers (on <prefix>.samples) and of the sink (on the derived topics).

End-to-end lag: a background thread of this process reads <prefix>.health from the start
(kafka-python, no consumer group) and, for every node-scope record of the smallest window
size, takes

    e2e lag = wall-clock time the record was received here - window.end_ms / 1000

i.e. the delay from the end of the window (the newest scrape time the record can contain:
scrape times are the producers' wall clock) to the derived record being readable by a
consumer. It includes the stream's allowed lateness (a deliberate wait for late scrapes:
a window closes only once a scrape newer than its end + lateness arrives), so it is also
reported minus that lateness as "processing lag" (which still includes up to one scrape
interval of waiting for that scrape, the producers' publishing, the stream's work and the
fetch). The lateness and window sizes are read from the stream worker's start-up log line.
Records of windows that ended before the warm-up ended are left out (backfill effects).
Percentiles are nearest-rank on the sorted list (the smallest value with at least p% of
the records at or below it), not interpolated.

Writes <out>/soak.csv (long format: t_s, what, process, value; `what` is rss_mb, cpu_s,
lag, or e2e_lag_s with process "health": one row per health record, t_s = when received),
<out>/soak.png (lag, RSS of the pipeline processes, RSS of the producers, end-to-end lag
per window), <out>/soak.md (a summary to paste into bench/RESULTS.md), and prints the
growth of every process's RSS from the end of the warm-up to the end, the CPU it used, the
largest lag and the end-to-end lag percentiles.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import describe  # noqa: E402
from bench.png import Panel, Series, chart  # noqa: E402
from kafka_io.connection import KafkaConnection  # noqa: E402
from contracts.topics import Topics  # noqa: E402
from stack.kafka import KafkaService, broker_answers_metadata  # noqa: E402
from stack.settings import StackSettings  # noqa: E402
from stack.victoriametrics import VictoriaMetricsService  # noqa: E402

KPP = [sys.executable, "-m", "kpp"]
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError):
        return None


class Lag:
    """Committed-offset lag of consumer groups (one admin client and consumer, reused)."""

    def __init__(self, connection: KafkaConnection) -> None:
        from kafka import KafkaConsumer
        from kafka.admin import KafkaAdminClient

        # 200 producers starting at once keep a small machine busy for a minute: give the
        # bootstrap time instead of failing the soak on the first slow answer
        kwargs = dict(connection.kafka_python_kwargs(), bootstrap_timeout_ms=120_000)
        self.admin = KafkaAdminClient(**kwargs)
        self.consumer = KafkaConsumer(**kwargs, group_id=None)

    def of(self, group: str, topics: list[str]) -> int:
        """The group's lag in records, or -1 when Kafka could not tell this time (a group
        still forming answers NotCoordinator for a while): the sample is skipped."""
        from kafka.errors import KafkaError

        try:
            return self._of(group, topics)
        except KafkaError as exc:
            print(f"soak: lag of {group} not available this time: {exc}", flush=True)
            return -1

    def _of(self, group: str, topics: list[str]) -> int:
        from kafka.structs import TopicPartition

        committed = {(tp.topic, tp.partition): m.offset
                     for tp, m in self.admin.list_group_offsets({group: None}).get(group, {}).items()}
        tps = [TopicPartition(t, p) for t in topics for p in (self.consumer.partitions_for_topic(t) or ())]
        ends = self.consumer.end_offsets(tps) if tps else {}
        return sum(max(0, end - max(0, committed.get((tp.topic, tp.partition), 0))) for tp, end in ends.items())

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


class HealthLag(threading.Thread):
    """Reads <prefix>.health from the earliest offset (no consumer group) and keeps, for every
    node-scope record, (wall-clock time received, window end ms, window size s, node)."""

    def __init__(self, connection: KafkaConnection, topic: str) -> None:
        super().__init__(name="health-lag", daemon=True)
        self.connection, self.topic = connection, topic
        self.stopping = threading.Event()
        self.records: list[tuple[float, int, int, str]] = []
        self.undecodable = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        from kafka import KafkaConsumer
        from kafka.structs import TopicPartition

        try:
            consumer = KafkaConsumer(**self.connection.kafka_python_kwargs(), group_id=None,
                                     auto_offset_reset="earliest", enable_auto_commit=False)
        except Exception as exc:  # noqa: BLE001 - reported at the end, the soak goes on
            self.error = exc
            return
        try:
            partitions = None
            while not partitions and not self.stopping.is_set():
                partitions = consumer.partitions_for_topic(self.topic)
                if not partitions:
                    self.stopping.wait(1.0)
            if partitions:
                consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
            while not self.stopping.is_set() and partitions:
                batches = consumer.poll(timeout_ms=500)
                received = time.time()
                for messages in batches.values():
                    for message in messages:
                        try:
                            obj = json.loads(message.value)
                            if obj["scope"] != "node":
                                continue
                            window = obj["window"]
                            self.records.append((received, int(window["end_ms"]), int(window["size_s"]),
                                                 str(obj["node"])))
                        except (ValueError, KeyError, TypeError):
                            self.undecodable += 1
        except Exception as exc:  # noqa: BLE001 - reported at the end, the soak goes on
            self.error = exc
        finally:
            consumer.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)


def stream_started_with(log_text: str) -> tuple[list[int], float] | None:
    """Window sizes and allowed lateness from the stream worker's "streaming ..." log line."""
    found = re.search(r"windows \[([0-9, ]*)\] s, lateness ([0-9.eE+-]+) s", log_text)
    if not found:
        return None
    return [int(w) for w in found.group(1).split(",") if w.strip()], float(found.group(2))


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def least_squares_slope(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--interval", type=float, default=15.0, help="scrape interval, seconds (default 15)")
    parser.add_argument("--workers", type=int, default=1, help="stream worker processes (default 1)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--window", action="append", default=None,
                        help="stream window seconds, repeatable (default the stream's: 60 and 300)")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds excluded from the growth figures, and windows ending before it from the "
                             "end-to-end lag (default: 20%% of the run, at most 120)")
    parser.add_argument("--out", default=str(REPO / "bench" / "out"))
    args = parser.parse_args()
    machine = describe()  # before the run: its load average is the one at the start

    stack = StackSettings.from_env()
    connection = KafkaConnection(bootstrap=stack.kafka_bootstrap)
    if not broker_answers_metadata(connection.bootstrap, timeout=10):
        print(f"no Kafka broker at {connection.bootstrap}: run `kpp stack up` (or `make stack-up`) first")
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kpp-soak-"))
    logs = work / "logs"
    logs.mkdir()
    prefix = f"soak{uuid.uuid4().hex[:8]}"
    cluster = prefix
    topics = Topics(prefix)
    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else min(120.0, 0.2 * duration)
    kafka_flags = ["--kafka-bootstrap", connection.bootstrap]
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str, argv: list[str]) -> None:
        with open(logs / f"{name}.log", "ab") as log:
            procs[name] = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)

    sim_port = free_port()
    windows = [w for win in (args.window or []) for w in ("--window", win)]
    print(f"soak: {args.nodes} nodes every {args.interval:g} s for {args.minutes:g} min, {args.workers} stream "
          f"worker(s), {args.partitions} partitions, prefix {prefix}; logs in {logs}", flush=True)
    rows: list[tuple[float, str, str, float]] = []
    lag = None
    health: HealthLag | None = None
    started_with: tuple[list[int], float] | None = None
    try:
        start("simulator", KPP + ["simulate", "--nodes", str(args.nodes), "--seed", "1", "--port", str(sim_port)])
        start("stream-0", KPP + ["stream", "--topic-prefix", prefix, "--partitions", str(args.partitions),
                                 "--data-dir", str(work / "stream-0"), *windows, *kafka_flags])
        deadline = time.monotonic() + 120
        while "streaming" not in (logs / "stream-0.log").read_text(errors="replace"):
            if time.monotonic() > deadline or procs["stream-0"].poll() is not None:
                raise SystemExit("the stream worker did not start; see " + str(logs / "stream-0.log"))
            time.sleep(0.5)
        started_with = stream_started_with((logs / "stream-0.log").read_text(errors="replace"))
        # Faust assigns nothing for topics its consumer's metadata does not show yet (it logs
        # "Ignoring missing topic") and waits for the next rebalance: on a machine too busy at
        # that moment the worker would idle for the whole soak. Do not start the load before
        # the worker holds the samples partitions.
        while f"topic='{topics.samples}'" not in "\n".join(
                line for line in (logs / "stream-0.log").read_text(errors="replace").splitlines()
                if "Setting newly assigned partitions" in line):
            if time.monotonic() > deadline or procs["stream-0"].poll() is not None:
                raise SystemExit("the stream worker got no partitions of the samples topic; see "
                                 + str(logs / "stream-0.log"))
            time.sleep(0.5)
        health = HealthLag(connection, topics.health)
        health.start()
        for w in range(1, args.workers):
            start(f"stream-{w}", KPP + ["stream", "--topic-prefix", prefix, "--partitions", str(args.partitions),
                                        "--data-dir", str(work / f"stream-{w}"), *windows, *kafka_flags])
        start("sink", KPP + ["sink", "--to", "victoriametrics", "--url", stack.vm_url, "--topic-prefix", prefix,
                             "--group", f"{prefix}-sink", "--listen", "", *kafka_flags])
        t_start = time.monotonic()
        for i in range(args.nodes):
            node = f"node-{i:03d}"
            start(f"produce-{node}", KPP + [
                "produce", "--node", node, "--cluster", cluster, "--interval", str(args.interval),
                "--target", f"http://127.0.0.1:{sim_port}/nodes/{node}/metrics", "--topic-prefix", prefix,
                "--spool-dir", str(work / "spool" / node), "--listen", "", *kafka_flags])
            if i % 10 == 9:
                # spread the start-up (~1 s of CPU each for imports and first connections): 200
                # producers started at once keep a 2-core machine, broker included, saturated
                # for minutes, long enough for the broker's controller to fence it
                time.sleep(5)
        print(f"soak: all processes started in {time.monotonic() - t_start:.0f} s", flush=True)

        watched = {name: proc.pid for name, proc in procs.items()}
        kafka_pid = KafkaService(stack).process.pid()
        vm_pid = VictoriaMetricsService(stack).process.pid()
        if kafka_pid:
            watched["kafka"] = kafka_pid
        if vm_pid:
            watched["victoriametrics"] = vm_pid
        lag = Lag(connection)
        began = time.monotonic()
        began_wall = time.time()
        next_sample = began
        seen = 0
        while True:
            t = time.monotonic() - began
            for name, pid in watched.items():
                rss, cpu = rss_mb(pid), cpu_s(pid)
                if rss is not None:
                    rows.append((t, "rss_mb", name, rss))
                if cpu is not None:
                    rows.append((t, "cpu_s", name, cpu))
            stream_lag = lag.of(f"kpp-streams.{prefix}", [topics.samples])
            sink_lag = lag.of(f"{prefix}-sink", list(topics.derived()))
            for name, value in (("stream", stream_lag), ("sink", sink_lag)):
                if value >= 0:
                    rows.append((t, "lag", name, value))
            dead = [(n, p.returncode) for n, p in procs.items() if p.poll() is not None]
            producers_rss = [v for tt, w, n, v in rows if tt == t and w == "rss_mb" and n.startswith("produce-")]
            fresh = health.records[seen:]
            seen += len(fresh)
            newest = max(fresh, key=lambda r: r[1]) if fresh else None
            print(f"[{t:6.0f} s] lag stream {stream_lag:6d} sink {sink_lag:6d} · RSS stream "
                  f"{rss_mb(watched['stream-0']) or 0:.0f} MB, sink {rss_mb(watched['sink']) or 0:.0f} MB, "
                  f"producers median {statistics.median(producers_rss) if producers_rss else 0:.1f} MB · "
                  f"health records +{len(fresh)}"
                  + (f" (newest window lag {newest[0] - newest[1] / 1000:.0f} s)" if newest else "")
                  + (f" · DEAD: {dead}" if dead else ""), flush=True)
            if t >= duration:
                break
            next_sample += args.sample_every
            time.sleep(max(0.0, next_sample - time.monotonic()))
    finally:
        if health is not None:
            health.stop()  # before the pipeline stops: what a shutdown flushes is not counted
        if lag is not None:
            lag.close()
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # End-to-end lag of node health records of the smallest window size, windows ending after the warm-up.
    lateness = started_with[1] if started_with else None
    sizes = started_with[0] if started_with and started_with[0] else sorted({r[2] for r in health.records})
    smallest = min(sizes) if sizes else None
    warmup_end_ms = (began_wall + warmup) * 1000
    kept = [r for r in health.records if r[2] == smallest and r[1] >= warmup_end_ms]
    excluded = sum(1 for r in health.records if r[2] == smallest) - len(kept)
    e2e = sorted(received - end_ms / 1000 for received, end_ms, _, _ in kept)
    for received, end_ms, _, _ in sorted(kept):
        rows.append((received - began_wall, "e2e_lag_s", "health", received - end_ms / 1000))

    with open(out / "soak.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["t_s", "what", "process", "value"])
        for t, what, name, value in rows:
            writer.writerow([f"{t:.1f}", what, name, f"{value:.3f}" if isinstance(value, float) else value])

    series: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for t, what, name, value in rows:
        series[what, name].append((t, float(value)))
    producers = sorted(n for w, n in series if w == "rss_mb" and n.startswith("produce-"))
    by_time: dict[float, list[float]] = defaultdict(list)
    for name in producers:
        for t, v in series["rss_mb", name]:
            by_time[t].append(v)
    others = sorted(n for w, n in series if w == "rss_mb" and not n.startswith("produce-"))
    panels = [
        Panel("consumer lag", "records", [Series(f"{n} lag", series["lag", n]) for n in ("stream", "sink")]),
        Panel("RSS of the pipeline processes", "MB", [Series(n, series["rss_mb", n]) for n in others]),
        Panel(f"RSS of the {len(producers)} producers", "MB", [
            Series("median", [(t, statistics.median(v)) for t, v in sorted(by_time.items())]),
            Series("max", [(t, max(v)) for t, v in sorted(by_time.items())]),
            Series("min", [(t, min(v)) for t, v in sorted(by_time.items())]),
        ]),
    ]
    if kept:
        by_window: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for received, end_ms, _, _ in kept:
            by_window[end_ms].append((received - began_wall, received - end_ms / 1000))
        per_window = [(statistics.median(t for t, _ in v), sorted(x for _, x in v)) for _, v in sorted(by_window.items())]
        lag_series = [Series("max per window", [(t, v[-1]) for t, v in per_window]),
                      Series("median per window", [(t, statistics.median(v)) for t, v in per_window]),
                      Series("min per window", [(t, v[0]) for t, v in per_window])]
        if lateness is not None:
            span = [t for t, _ in per_window]
            lag_series.append(Series(f"allowed lateness {lateness:g} s",
                                     [(min(span), lateness), (max(span), lateness)], (127, 127, 127)))
        panels.append(Panel("end-to-end lag", "s", lag_series))
    (out / "soak.png").write_bytes(chart(panels, "seconds since start"))

    print(f"\nRSS growth after the {warmup:.0f} s warm-up (MB at warm-up end -> end; slope MB/h) and CPU used")
    print(f"{'process':<22} {'RSS start':>10} {'RSS end':>9} {'growth':>8} {'MB/h':>8} {'CPU s':>8}")
    growth: dict[str, tuple[float, float, float, float]] = {}
    for name in others + producers:
        pts = [(t, v) for t, v in series["rss_mb", name] if t >= warmup]
        if len(pts) < 2:
            continue
        cpu = series.get(("cpu_s", name), [])
        used = cpu[-1][1] - cpu[0][1] if len(cpu) >= 2 else 0.0
        growth[name] = (pts[0][1], pts[-1][1], least_squares_slope(pts) * 3600, used)
    # (process, RSS start or None, RSS end, growth, MB/h, CPU s)
    table: list[tuple[str, float | None, float, float, float, float]] = []
    for name in others:
        if name in growth:
            a, b, slope, used = growth[name]
            table.append((name, a, b, b - a, slope, used))
    if producers:
        deltas = sorted(growth[n][1] - growth[n][0] for n in producers if n in growth)
        slopes = sorted(growth[n][2] for n in producers if n in growth)
        cpus = sorted(growth[n][3] for n in producers if n in growth)
        ends = sorted(growth[n][1] for n in producers if n in growth)
        if deltas:
            table.append(("producers (median)", None, statistics.median(ends), statistics.median(deltas),
                          statistics.median(slopes), statistics.median(cpus)))
            worst = max((n for n in producers if n in growth), key=lambda n: growth[n][1] - growth[n][0])
            a, b, slope, used = growth[worst]
            table.append(("producers (max) " + worst[-8:], a, b, b - a, slope, used))
    for name, a, b, delta, slope, used in table:
        start_text = f"{a:10.1f}" if a is not None else f"{'':>10}"
        print(f"{name:<22} {start_text} {b:9.1f} {delta:+8.1f} {slope:+8.1f} {used:8.1f}")
    lags = {n: max(v for _, v in series["lag", n]) for n in ("stream", "sink")}
    finals = {n: series["lag", n][-1][1] for n in ("stream", "sink")}
    print(f"lag: stream max {lags['stream']:.0f}, last {finals['stream']:.0f}; "
          f"sink max {lags['sink']:.0f}, last {finals['sink']:.0f} (records)")
    try:
        import httpx

        answer = httpx.get(f"{stack.vm_url}/api/v1/series/count", timeout=10)
        exported = httpx.post(f"{stack.vm_url}/api/v1/export", data={"match[]": f'{{cluster="{cluster}"}}'}, timeout=60)
        print(f"VictoriaMetrics holds {len(exported.text.splitlines())} series of cluster {cluster} "
              f"({answer.json().get('data', [0])[0] if answer.status_code == 200 else '?'} series in all)")
    except Exception as exc:  # noqa: BLE001 - a summary line, not a check
        print(f"could not ask VictoriaMetrics: {exc}")

    quantiles = [("p50", 50), ("p90", 90), ("p99", 99)]
    lag_rows: list[tuple[str, list[float]]] = []
    if e2e:
        lag_rows.append(("end-to-end lag (receive - window end)", e2e))
        if lateness is not None:
            lag_rows.append((f"processing lag (end-to-end - {lateness:g} s lateness)", [x - lateness for x in e2e]))
    print(f"\nend-to-end lag of node health records, {smallest} s windows ending after the warm-up "
          f"(nearest-rank percentiles; {excluded} earlier record(s) left out"
          + (f"; allowed lateness {lateness:g} s" if lateness is not None else "; allowed lateness unknown")
          + (f"; {health.undecodable} undecodable" if health.undecodable else "") + ")")
    if health.error is not None:
        print(f"the health consumer failed: {health.error!r}")
    for label, values in lag_rows:
        print(f"{label:<44} " + " ".join(f"{q} {percentile(values, p):6.1f} s" for q, p in quantiles)
              + f" max {values[-1]:6.1f} s, {len(values)} records")
    if not e2e:
        print(f"no health record of a window ending after the warm-up (of {len(health.records)} node records)")

    command = (f"bench/soak.py --nodes {args.nodes} --minutes {args.minutes:g} --interval {args.interval:g} "
               f"--workers {args.workers} --partitions {args.partitions}"
               + "".join(f" --window {w}" for w in args.window or [])
               + (f" --warmup {args.warmup:g}" if args.warmup is not None else "")
               + (f" --sample-every {args.sample_every:g}" if args.sample_every != 10.0 else ""))
    md = [f"# Soak: {args.nodes} nodes for {args.minutes:g} min", "", *machine, f"- command: `{command}`",
          f"- setup: {args.nodes} simulated nodes scraped every {args.interval:g} s, {args.workers} stream "
          f"worker(s), {args.partitions} partitions, windows "
          + (", ".join(f"{w} s" for w in sizes) if sizes else "?") + ", allowed lateness "
          + (f"{lateness:g} s" if lateness is not None else "unknown")
          + f"; warm-up {warmup:.0f} s excluded; sampled every {args.sample_every:g} s", "",
          "RSS from the end of the warm-up to the end, and CPU used over the run:", "",
          "| process | RSS at warm-up end MB | RSS at end MB | growth MB | slope MB/h | CPU s |",
          "|---|---:|---:|---:|---:|---:|"]
    for name, a, b, delta, slope, used in table:
        md.append(f"| {name} | {'' if a is None else f'{a:.1f}'} | {b:.1f} | {delta:+.1f} | {slope:+.1f} | {used:.1f} |")
    md += ["", f"Consumer lag (records): stream max {lags['stream']:.0f}, last {finals['stream']:.0f}; "
           f"sink max {lags['sink']:.0f}, last {finals['sink']:.0f}.", ""]
    if e2e:
        md += [f"End-to-end lag of the node health records of the {smallest} s windows that ended after the "
               f"warm-up: wall-clock time a consumer received the record minus the window end (the newest "
               f"scrape time it can contain). It includes the allowed lateness, a deliberate wait for late "
               f"scrapes; processing lag is that minus the lateness. Nearest-rank percentiles.", "",
               "| measure | p50 s | p90 s | p99 s | max s | records |", "|---|---:|---:|---:|---:|---:|"]
        for label, values in lag_rows:
            md.append(f"| {label} | " + " | ".join(f"{percentile(values, p):.1f}" for _, p in quantiles)
                      + f" | {values[-1]:.1f} | {len(values)} |")
    else:
        md.append("End-to-end lag: no health record of a window ending after the warm-up was received.")
    (out / "soak.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print(f"wrote {out / 'soak.csv'}, {out / 'soak.png'} and {out / 'soak.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
