"""Soak run: N simulated nodes through the whole pipeline for D minutes, watching memory and
lag. Not a test (and not part of `make test`): `make soak`, or

    .venv/bin/python bench/soak.py [--nodes 200] [--minutes 15] [--interval 15] [--out bench/out]

Needs the local stack (`kpp stack up`). Starts `kpp simulate`, one `kpp produce` per node,
`--workers` stream workers and one sink (to the stack's VictoriaMetrics), all on a fresh
topic prefix; every `--sample-every` seconds records the RSS (/proc/<pid>/status VmRSS) and
CPU time of every process (the stack's Kafka and VictoriaMetrics too) and the consumer lag
of the stream workers (on <prefix>.samples) and of the sink (on the derived topics).

Writes <out>/soak.csv (long format: t_s, what, process, value; `what` is rss_mb, cpu_s or
lag), <out>/soak.png (lag, RSS of the pipeline processes, RSS of the producers), and prints
the growth of every process's RSS from the end of the warm-up to the end, the CPU it used
and the largest lag.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.png import Panel, Series, chart  # noqa: E402
from contracts.kafka import KafkaConnection  # noqa: E402
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

        self.admin = KafkaAdminClient(**connection.kafka_python_kwargs())
        self.consumer = KafkaConsumer(**connection.kafka_python_kwargs(), group_id=None)

    def of(self, group: str, topics: list[str]) -> int:
        from kafka.structs import TopicPartition

        committed = {(tp.topic, tp.partition): m.offset
                     for tp, m in self.admin.list_group_offsets({group: None}).get(group, {}).items()}
        tps = [TopicPartition(t, p) for t in topics for p in (self.consumer.partitions_for_topic(t) or ())]
        ends = self.consumer.end_offsets(tps) if tps else {}
        return sum(max(0, end - max(0, committed.get((tp.topic, tp.partition), 0))) for tp, end in ends.items())

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()


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
                        help="seconds excluded from the growth figures (default: 20%% of the run, at most 120)")
    parser.add_argument("--out", default=str(REPO / "bench" / "out"))
    args = parser.parse_args()

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
    try:
        start("simulator", KPP + ["simulate", "--nodes", str(args.nodes), "--seed", "1", "--port", str(sim_port)])
        start("stream-0", KPP + ["stream", "--topic-prefix", prefix, "--partitions", str(args.partitions),
                                 "--data-dir", str(work / "stream-0"), *windows, *kafka_flags])
        deadline = time.monotonic() + 120
        while "streaming" not in (logs / "stream-0.log").read_text(errors="replace"):
            if time.monotonic() > deadline or procs["stream-0"].poll() is not None:
                raise SystemExit("the stream worker did not start; see " + str(logs / "stream-0.log"))
            time.sleep(0.5)
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
        next_sample = began
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
            rows.append((t, "lag", "stream", stream_lag))
            rows.append((t, "lag", "sink", sink_lag))
            dead = [(n, p.returncode) for n, p in procs.items() if p.poll() is not None]
            producers_rss = [v for tt, w, n, v in rows if tt == t and w == "rss_mb" and n.startswith("produce-")]
            print(f"[{t:6.0f} s] lag stream {stream_lag:6d} sink {sink_lag:6d} · RSS stream "
                  f"{rss_mb(watched['stream-0']) or 0:.0f} MB, sink {rss_mb(watched['sink']) or 0:.0f} MB, "
                  f"producers median {statistics.median(producers_rss) if producers_rss else 0:.1f} MB"
                  + (f" · DEAD: {dead}" if dead else ""), flush=True)
            if t >= duration:
                break
            next_sample += args.sample_every
            time.sleep(max(0.0, next_sample - time.monotonic()))
    finally:
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
    for name in others:
        if name in growth:
            a, b, slope, used = growth[name]
            print(f"{name:<22} {a:10.1f} {b:9.1f} {b - a:+8.1f} {slope:+8.1f} {used:8.1f}")
    if producers:
        deltas = sorted(growth[n][1] - growth[n][0] for n in producers if n in growth)
        slopes = sorted(growth[n][2] for n in producers if n in growth)
        cpus = sorted(growth[n][3] for n in producers if n in growth)
        ends = sorted(growth[n][1] for n in producers if n in growth)
        if deltas:
            print(f"{'producers (median)':<22} {'':>10} {statistics.median(ends):9.1f} "
                  f"{statistics.median(deltas):+8.1f} {statistics.median(slopes):+8.1f} {statistics.median(cpus):8.1f}")
            worst = max((n for n in producers if n in growth), key=lambda n: growth[n][1] - growth[n][0])
            a, b, slope, used = growth[worst]
            print(f"{'producers (max) ' + worst[-8:]:<22} {a:10.1f} {b:9.1f} {b - a:+8.1f} {slope:+8.1f} {used:8.1f}")
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
    print(f"wrote {out / 'soak.csv'} and {out / 'soak.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
