"""`kpp stream`'s own metrics (`--listen`: /metrics, /healthz, /readyz).

The stages report what happened through a `StageMetrics` (`window_closed`, `late`,
`dead_lettered`); the agents report each batch (`batch_done`) and a heartbeat timer refreshes
the state gauges (`heartbeat`). `StageMetrics` itself does nothing, so the stages run without
a registry in unit tests, replays and benches; `StreamMetrics` is the worker's, on its own
prometheus_client registry.

Consumer lag is the consumer group's committed offsets against the end offsets of the topics
it reads, read by a background thread every LAG_REFRESH_S with a client of its own: it shows
the lag that a restart would have to catch up (what an alert wants), keeps growing when the
worker is stuck (a consumer's own positions would freeze with it), and covers partitions no
worker holds. Every worker reports it for the whole group: aggregate with max by (topic,
partition)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from contracts.late import REASONS as LATE_REASONS
from runtime.selfmetrics import new_registry
from streams import statecodec
from streams.windows import window_start

log = logging.getLogger("kpp.stream")

#: Seconds between heartbeats (state gauges refreshed, liveness proven).
HEARTBEAT_S = 5.0
#: /healthz fails when the event loop has not run a heartbeat for this long (a blocked loop).
STALL_AFTER_S = 120.0
#: Seconds between two reads of the group's committed and end offsets.
LAG_REFRESH_S = 15.0

#: Batch processing time buckets (seconds): a batch of up to 2,000 scrapes takes ms to seconds.
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class StageMetrics:
    """What the stream stages report. This one discards it (tests, replays, benches)."""

    def window_closed(self, scope: str, size_ms: int, start_ms: int) -> None:
        """A window closed: scope "node" (once per source partition) or "cluster"."""

    def late(self, reason: str) -> None:
        """A record went to <prefix>.late."""

    def dead_lettered(self, reason: str) -> None:
        """A record went to <prefix>.dlq."""

    def batch_done(self, stage: str, events: Iterable[Any], started: float) -> None:
        """A batch was flushed and acknowledged; `started` is its time.perf_counter() start."""

    def heartbeat(self, node_stage: Any, cluster_stage: Any, assignment: Iterable[Any]) -> None:
        """Called from the event loop every HEARTBEAT_S."""


NO_METRICS = StageMetrics()


def window_label(size_ms: int) -> str:
    return f"{size_ms // 1000}s"


def open_node_windows(pstate: dict | None, sizes_ms: Iterable[int]) -> int:
    """Windows a node-stage partition state holds open: per size, from the oldest not closed
    through the one holding the newest scrape."""
    if not pstate or pstate.get("max") is None:
        return 0
    count = 0
    for size in sizes_ms:
        nxt = pstate["next"].get(str(size))
        if nxt is not None:
            newest = window_start(pstate["max"], size)
            if newest >= nxt:
                count += (newest - nxt) // size + 1
    return count


def open_cluster_windows(index: dict | None) -> int:
    """Cluster windows a cluster-stage index holds open (every cluster and size)."""
    if not index:
        return 0
    return sum(len(starts) for per_size in index.get("open", {}).values() for starts in per_size.values())


def stream_health(now: float, last_beat: float | None, stall_after_s: float = STALL_AFTER_S) -> tuple[bool, str]:
    """Liveness: the event loop ran a heartbeat within `stall_after_s` (idle and polling,
    or riding out a broker outage, is alive); before the first one the worker is starting."""
    if last_beat is None:
        return True, "starting"
    quiet = now - last_beat
    if quiet > stall_after_s:
        return False, f"event loop stalled: no heartbeat for {quiet:.0f} s"
    return True, f"ok: last heartbeat {quiet:.1f} s ago"


def stream_ready(last_beat: float | None) -> tuple[bool, str]:
    """Ready once the app runs (first heartbeat); holding no partition is still ready (more
    workers than partitions is a legitimate set-up)."""
    return (False, "starting") if last_beat is None else (True, "ready")


class StreamMetrics(StageMetrics):
    """The worker's metrics on its own registry (several workers may share a test process)."""

    def __init__(self, registry: CollectorRegistry | None = None, clock: Callable[[], float] = time.time,
                 samples_topic: str | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        self.clock = clock
        self.samples_topic = samples_topic
        r = self.registry
        self.scrapes = Counter("kpp_stream_scrapes", "Scrape records the node stage processed.", registry=r)
        self.windows = Counter("kpp_stream_windows_closed", "Windows closed, by size and scope (node: once "
                               "per source partition; cluster: once per cluster).", ["window", "scope"], registry=r)
        self.late_records = Counter("kpp_stream_late", "Records sent to <prefix>.late, by reason.", ["reason"],
                                    registry=r)
        # every reason from the start, at 0: increase() sees a first burst only from a series
        # that existed before it
        for reason in LATE_REASONS:
            self.late_records.labels(reason=reason)
        self.dlq_records = Counter("kpp_stream_dlq", "Records sent to <prefix>.dlq, by reason.", ["reason"],
                                   registry=r)
        self.batch_seconds = Histogram("kpp_stream_batch_duration_seconds", "Time to process, flush and "
                                       "acknowledge one batch of events, by stage.", ["stage"],
                                       buckets=BATCH_BUCKETS, registry=r)
        self._children: dict[tuple, Any] = {}
        self.newest_end_ms: int | None = None
        self.open_windows = 0
        self.node_states = 0
        self.last_beat: float | None = None
        self._count_failed = False
        self.lag: dict[tuple[str, int], int] = {}
        r.register(_StreamGauges(self))

    # -- from the stages and agents (event loop) ------------------------------------

    def window_closed(self, scope: str, size_ms: int, start_ms: int) -> None:
        key = ("w", scope, size_ms)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.windows.labels(window=window_label(size_ms), scope=scope)
        child.inc()
        end = start_ms + size_ms
        if self.newest_end_ms is None or end > self.newest_end_ms:
            self.newest_end_ms = end

    def late(self, reason: str) -> None:
        self.late_records.labels(reason=reason).inc()

    def dead_lettered(self, reason: str) -> None:
        self.dlq_records.labels(reason=reason).inc()

    def batch_done(self, stage: str, events: Iterable[Any], started: float) -> None:
        self.batch_seconds.labels(stage=stage).observe(time.perf_counter() - started)
        if stage == "node":
            topic = self.samples_topic
            self.scrapes.inc(sum(1 for e in events if e.message.topic == topic))

    def heartbeat(self, node_stage: Any, cluster_stage: Any, assignment: Iterable[Any]) -> None:
        try:
            settings = node_stage.settings
            samples, partials = settings.topics.samples, settings.cluster_partials_topic
            open_windows = nodes = 0
            for tp in assignment:
                if tp.topic == samples:
                    pstate = _decoded(node_stage.table.get(f"partition:{tp.partition}"))
                    open_windows += open_node_windows(pstate, settings.sizes_ms)
                    nodes += len(pstate["nodes"]) if pstate else 0
                elif tp.topic == partials:
                    open_windows += open_cluster_windows(_decoded(cluster_stage.table.get(f"index:{tp.partition}")))
            self.open_windows, self.node_states = open_windows, nodes
        except Exception:  # noqa: BLE001 - a metric must never stop the worker
            if not self._count_failed:  # once, not every 5 s
                log.warning("could not count the open windows and node states for /metrics", exc_info=True)
            self._count_failed = True
        self.last_beat = self.clock()

    # -- from the HTTP thread -------------------------------------------------------

    def health(self) -> tuple[bool, str]:
        return stream_health(self.clock(), self.last_beat)

    def ready(self) -> tuple[bool, str]:
        return stream_ready(self.last_beat)


def _decoded(raw: Any) -> Any:
    return statecodec.decode(raw) if isinstance(raw, (bytes, bytearray)) else raw


class _StreamGauges(Collector):
    """Gauges read at scrape time from what the event loop and the lag reader left."""

    def __init__(self, metrics: StreamMetrics) -> None:
        self.m = metrics

    def collect(self):
        m = self.m
        yield GaugeMetricFamily("kpp_stream_up", "1 while the stream worker runs.", value=1)
        yield GaugeMetricFamily("kpp_stream_open_windows", "Windows held open (node windows of the "
                                "partitions this worker holds, and cluster windows).", value=m.open_windows)
        yield GaugeMetricFamily("kpp_stream_node_states", "Node states held by this worker.", value=m.node_states)
        age = GaugeMetricFamily("kpp_stream_newest_closed_window_age_seconds", "Wall-clock seconds since the "
                                "end of the newest window this worker closed (absent before the first).")
        if m.newest_end_ms is not None:
            age.add_metric([], m.clock() - m.newest_end_ms / 1000)
        yield age
        lag = GaugeMetricFamily("kpp_stream_consumer_lag", "Records of the topics the stream group reads "
                                "that it has not committed (the whole group's, from every worker).",
                                labels=["topic", "partition"])
        for (topic, part), value in sorted(dict(m.lag).items()):
            lag.add_metric([topic, str(part)], value)
        yield lag


class LagReader:
    """Refreshes `metrics.lag` from the group's committed offsets every LAG_REFRESH_S (a
    daemon thread reading through kafka_io.admin.GroupLagReader, with clients of its own).
    While Kafka cannot answer, the lag series are dropped (unknown, not zero) and that is
    logged once per outage."""

    def __init__(self, metrics: StreamMetrics, connection: Any, group_id: str, topics: list[str],
                 every_s: float = LAG_REFRESH_S) -> None:
        self.metrics = metrics
        self.connection = connection
        self.group_id = group_id
        self.topics = topics
        self.every_s = every_s
        self.stopped = threading.Event()
        self.failures = 0  # reads failed in a row

    def start(self) -> "LagReader":
        threading.Thread(target=self._run, name="stream-lag", daemon=True).start()
        return self

    def _run(self) -> None:
        from kafka_io.admin import GroupLagReader

        reader = None
        while not self.stopped.is_set():
            try:
                if reader is None:
                    reader = GroupLagReader(self.connection, self.group_id, self.topics, client_id="kpp-stream-lag")
                self.metrics.lag = reader.read()
                if self.failures >= 2:
                    log.info("consumer lag readable again")
                self.failures = 0
            except Exception as exc:  # noqa: BLE001 - a broker outage the worker rides out
                self.metrics.lag = {}
                self.failures += 1
                # once per outage, from the second failure in a row: a coordinator not ready
                # yet on a fresh broker is not one
                if self.failures == 2:
                    log.warning("cannot read the stream group's consumer lag (series dropped until Kafka "
                                "answers): %s", exc)
                if reader is not None:
                    reader.close()
                reader = None
            self.stopped.wait(self.every_s)
