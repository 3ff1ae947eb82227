"""The whole pipeline as real processes, and the golden run it must equal.

* `ScheduledCluster`: the simulator with node faults switched at planned instants instead
  of by HTTP calls, so the faulty run and the golden run see the same fault history. A
  scheduled switch is applied lazily, before the first look at the node at or after its
  time, which is what `Cluster.set_fault(node, mode, at=t)` called at t would have done.
* `tick_clock`: the simulator's clock cut down to the scrape interval: a request is answered
  as of the tick it arrives in.
* `ServedLog`: what each request was answered as of. Producers stamp a scrape with the real
  start of its request, and on a loaded machine a request can arrive in the next tick; the
  golden run renders each published scrape as of the tick it was really served at, so it
  never depends on timing (a golden run that guessed the tick was off by a byte once).
* `golden_record`: what a producer publishes for (node, stamp), computed WITHOUT Kafka or
  HTTP: the simulator rendered as of the served tick, through the producer's own `build_record`.
* `Procs`: the child processes (producers, stream workers, sink), each with a log file.
"""

from __future__ import annotations

import math
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
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

import kafka_io.admin
from kafka_io.connection import KafkaConnection
from contracts.records import ScrapeRecord
from producers.node import NodeSettings, build_record
from producers.scrape import ScrapeOutcome
from producers.select import Selector
from simulator import Cluster
from sinks.series import derived_points
from contracts.derived import DerivedRecord
from tests.conftest import REPO

KPP = [sys.executable, "-m", "kpp"]


def tick_clock(interval_s: float):
    """The tick a request arrives in (producers never ask before their tick)."""
    def clock() -> float:
        return math.floor(time.time() / interval_s) * interval_s
    return clock


class ServedLog:
    """`on_served` hook of the simulator's server: per node, (arrival, answered as of)."""

    def __init__(self) -> None:
        self.served: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._lock = threading.Lock()

    def record(self, node: str, at: float, arrived: float) -> None:
        with self._lock:
            self.served[node].append((arrived, at))

    def answered_as_of(self, node: str, stamp_ms: int, next_stamp_ms: int | None) -> float | None:
        """What the request of the scrape stamped `stamp_ms` (its start) was answered as of:
        the first request of `node` that arrived from its start on and before the next
        scrape's start. None when no request of it reached the server."""
        low, high = stamp_ms / 1000 - 0.005, math.inf if next_stamp_ms is None else next_stamp_ms / 1000 - 0.005
        with self._lock:
            for arrived, at in self.served.get(node, ()):
                if low <= arrived < high:
                    return at
        return None


class ScheduledCluster(Cluster):
    """A `Cluster` whose node faults follow `schedule` ({node: [(epoch_s, mode), ...]}), and
    whose nodes in `bursts` ({node: (from_s, to_s, n)}) also serve a counter family of `n`
    series from `from_s` until `to_s` (a family far larger than kube-proxy's own)."""

    def __init__(self, *args, schedule: dict[str, list[tuple[float, str]]],
                 bursts: dict[str, tuple[float, float, int]] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.schedule = {node: sorted(events) for node, events in schedule.items()}
        self.applied = {node: 0 for node in self.schedule}
        self.bursts = dict(bursts or {})
        self._schedule_lock = threading.Lock()

    def apply_until(self, node: str, t: float) -> None:
        with self._schedule_lock:
            events = self.schedule.get(node, ())
            i = self.applied.get(node, 0)
            while i < len(events) and events[i][0] <= t + 1e-6:
                super().set_fault(node, events[i][1], at=events[i][0])
                i += 1
            if events:
                self.applied[node] = i

    # the server asks for the mode (serving-level faults) as of the request's instant
    def fault_at(self, node: str, at: float) -> str:
        self.apply_until(node, at)
        return super().fault(node)

    def render(self, node: str, at: float) -> str:
        self.apply_until(node, at)
        body = super().render(node, at)
        burst = self.bursts.get(node)
        if burst is not None and burst[0] <= at < burst[1]:
            body += burst_family(burst[2], at - burst[0])
        return body

    def mode_at(self, node: str, t: float) -> str:
        self.apply_until(node, t)
        return super().fault(node)


BURST_FAMILY = "kubeproxy_fault_suite_burst_total"


def burst_family(series: int, since_s: float) -> str:
    """A counter family of `series` series, increasing with the time since the burst began."""
    step = int(since_s) + 1
    lines = [f"# HELP {BURST_FAMILY} A family far larger than kube-proxy's own (fault suite).",
             f"# TYPE {BURST_FAMILY} counter"]
    lines.extend(f'{BURST_FAMILY}{{series="{i:05d}"}} {(i % 13 + 1) * step}' for i in range(series))
    return "\n".join(lines) + "\n"


def golden_record(sim: ScheduledCluster, node: str, ts_ms: int, *, cluster: str, target: str,
                  interval_s: float, selector: Selector, at: float | None = None) -> ScrapeRecord:
    """The record `kpp produce` publishes for `node` stamped `ts_ms`, answered as of `at`
    (default: the stamp) (duration 0; a dropped connection's error text is the transport's,
    so it is only "some error" here)."""
    t = ts_ms / 1000 if at is None else at
    mode = sim.mode_at(node, t)
    if mode == "gone":
        outcome = ScrapeOutcome(None, 0.0, 0, "transport", "connection closed without a response")
    elif mode == "http500":
        outcome = ScrapeOutcome(None, 0.0, 0, "http_status", "HTTP 500 Internal Server Error")
    elif mode == "slow":
        raise AssertionError("`slow` depends on timing: not part of the golden run")
    else:
        body = sim.render(node, t)
        outcome = ScrapeOutcome(body, 0.0, len(body.encode()), "ok")
    record, _ = build_record(NodeSettings(node=node, cluster=cluster, interval_s=interval_s), target, ts_ms,
                             outcome, selector)
    return record


def same_scrape(got: ScrapeRecord, want: ScrapeRecord, mode: str) -> str | None:
    """Why the published record differs from the golden one (None when equal); the scrape
    duration is the only field that may differ, and a dropped connection's error text."""
    for name in ("node", "cluster", "target", "scrape_ts_ms", "up", "body_bytes", "kube_proxy_metrics",
                 "samples", "families", "labels"):
        if getattr(got, name) != getattr(want, name):
            return f"{name}: {str(getattr(got, name))[:200]} != {str(getattr(want, name))[:200]}"
    if mode == "gone":
        return None if got.error else "a dropped connection without an error"
    if got.error != want.error:
        return f"error: {got.error!r} != {want.error!r}"
    return None


class SkewedNode(threading.Thread):
    """A node whose clock runs `skew_s` ahead: every interval it publishes a scrape of its
    own simulated kube-proxy stamped that far in the future, as `kpp produce` on such a host
    would (the same record builder). The stream stage must reject each one (`.late`, reason
    `clock_skew`) without moving its partition's watermark: the other nodes of that
    partition must see no difference."""

    def __init__(self, connection: KafkaConnection, topic: str, *, node: str, cluster: str, skew_s: float,
                 interval_s: float, until: float, seed: int) -> None:
        super().__init__(daemon=True, name=f"skewed-{node}")
        self.connection, self.topic, self.node, self.cluster = connection, topic, node, cluster
        self.skew_s, self.interval_s, self.until = skew_s, interval_s, until
        self.sim = Cluster(1, seed=seed, start=time.time() + skew_s - 600)
        self.sent: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        from kafka import KafkaProducer

        try:
            producer = KafkaProducer(**self.connection.kafka_python_kwargs(), acks="all", linger_ms=5,
                                     delivery_timeout_ms=300_000, request_timeout_ms=30_000)
            selector = Selector()
            settings = NodeSettings(node=self.node, cluster=self.cluster, interval_s=self.interval_s)
            tick = math.floor(time.time() / self.interval_s + 1) * self.interval_s
            while tick < self.until:
                time.sleep(max(0.0, tick - time.time()))
                their_now = time.time() + self.skew_s
                body = self.sim.render("node-000", their_now)
                record, _ = build_record(settings, f"http://{self.node}:10249/metrics", int(their_now * 1000),
                                         ScrapeOutcome(body, 0.0, len(body.encode()), "ok"), selector)
                producer.send(self.topic, key=record.key, value=record.encode())
                self.sent.append(record.scrape_ts_ms)
                tick += self.interval_s
            producer.flush(300)
            producer.close()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


# -- processes ---------------------------------------------------------------------------


class Procs:
    """Child processes by name, each logging to <logs>/<name>.log."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self, names: list[str], timeout: float = 30) -> dict[str, int]:
        for name in names:
            if self.procs[name].poll() is None:
                self.procs[name].send_signal(signal.SIGTERM)
        codes = {}
        deadline = time.monotonic() + timeout
        for name in names:
            proc = self.procs[name]
            try:
                codes[name] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        return codes

    def stop_all(self) -> None:
        self.stop([n for n, p in self.procs.items() if p.poll() is None], timeout=20)

    def dead(self, names: list[str] | None = None) -> list[tuple[str, int]]:
        return [(n, p.returncode) for n, p in self.procs.items()
                if (names is None or n in names) and p.poll() is not None]

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")


def scrape_metric(port: int, name: str, **labels: str) -> float:
    """Sum of a metric's samples on a process's /metrics whose labels include `labels`."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if not (line.startswith(name + " ") or line.startswith(name + "{")):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def skipped_ticks(log: str) -> int:
    return sum(int(n) for n in re.findall(r"(\d+) tick\(s\) skipped", log))


# -- Kafka read-back ---------------------------------------------------------------------


def read_all(connection: KafkaConnection, topic: str, timeout: float = 60) -> list:
    """Every message of `topic` up to its end offsets at call time."""
    consumer = KafkaConsumer(**connection.kafka_python_kwargs(), group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        out = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end within {timeout} s")
            for records in consumer.poll(timeout_ms=500, max_records=5000).values():
                out.extend(records)
        return out
    finally:
        consumer.close()


def group_lag(connection: KafkaConnection, group: str, topics: list[str]) -> int:
    """Records of `topics` the consumer group has not committed yet."""
    return sum(kafka_io.admin.group_lag(connection, group, topics).values())


# -- derived series ----------------------------------------------------------------------


def golden_points(records: list[DerivedRecord]) -> dict[tuple, dict[int, float]]:
    """{(series name, labels): {timestamp_ms: value}} as the sink writes them to
    VictoriaMetrics (which drops NaN on ingestion)."""
    out: dict[tuple, dict[int, float]] = defaultdict(dict)
    for record in records:
        for point in derived_points(record):
            if point.value != point.value:  # NaN
                continue
            key = (point.name, tuple(sorted(point.labels)))
            previous = out[key].get(point.timestamp_ms)
            assert previous is None or previous == point.value, f"golden run conflicts with itself at {key}"
            out[key][point.timestamp_ms] = point.value
    return dict(out)


def compare_points(got: dict[tuple, list[tuple[int, float]]], want: dict[tuple, dict[int, float]],
                   rel: float) -> list[str]:
    """Differences between the store's series and the golden ones (empty when equal)."""
    problems = []
    for key in sorted(set(got) | set(want), key=str):
        have = got.get(key, [])
        stamps = [t for t, _ in have]
        if len(stamps) != len(set(stamps)):
            problems.append(f"{key}: duplicated timestamps in the store")
        have_map = dict(have)
        expect = want.get(key, {})
        missing = sorted(set(expect) - set(have_map))
        extra = sorted(set(have_map) - set(expect))
        if missing:
            problems.append(f"{key}: {len(missing)} point(s) missing, e.g. {missing[:3]}")
        if extra:
            problems.append(f"{key}: {len(extra)} unexpected point(s), e.g. {extra[:3]}")
        for ts in set(expect) & set(have_map):
            a, b = have_map[ts], expect[ts]
            if a != b and not abs(a - b) <= rel * max(abs(a), abs(b)):
                problems.append(f"{key}@{ts}: {a!r} != golden {b!r}")
    return problems


def missing_scrapes_report(got: dict[tuple, list[tuple[int, float]]], want: dict[tuple, dict[int, float]],
                           golden_in: list[ScrapeRecord], worker_logs: list[Path]) -> list[str]:
    """For every node window whose scrape count differs from the golden run: the golden
    scrapes of that window and what the workers' scrape traces (`--trace-scrapes`) say of
    each, so that a missing scrape points at its cause (never processed, processed by a
    worker whose state was lost, ...)."""
    traces: dict[str, list[str]] = defaultdict(list)
    for path in worker_logs:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            match = re.search(r"kpp\.stream\.trace: scrape (\S+@\d+) (.*)$", line)
            if match:
                traces[match[1]].append(f"{path.stem}: {match[2]}")
    by_node: dict[str, list[int]] = defaultdict(list)
    for record in golden_in:
        by_node[record.node].append(record.scrape_ts_ms)
    lines = []
    for key in sorted(set(got) | set(want), key=str):
        name, labels = key[0], dict(key[1])
        if not name.endswith(":scrapes") or labels.get("scope") != "node" or "window" not in labels:
            continue
        size_ms = int(labels["window"].rstrip("s")) * 1000
        have = dict(got.get(key, []))
        for end, count in sorted(want.get(key, {}).items()):
            if have.get(end) == count:
                continue
            node = labels["node"]
            lines.append(f"{node} window {labels['window']} ending {end}: store {have.get(end)}, golden {count}")
            for stamp in sorted(t for t in by_node[node] if end - size_ms <= t < end):
                seen = traces.get(f"{node}@{stamp}") or ["in no worker's scrape trace"]
                lines.append(f"    {node}@{stamp}: " + " | ".join(seen))
    return lines
