"""Pipeline output for the deploy tests, made cheaply and deterministically: simulated
kube-proxy scrapes (the simulator's model, the producer's record builder), the stream stages
in-process (tests/streams/reference.py, the reference the Kafka runs must equal), and the
sink's own naming and VictoriaMetrics writer. Each scenario gets its own `cluster` label, so
tests sharing the stack's VictoriaMetrics never see each other's series."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

import httpx

from contracts.derived import DerivedRecord
from contracts.records import ScrapeRecord
from producers.node import NodeSettings, build_record
from producers.scrape import ScrapeOutcome
from producers.select import Selector
from simulator import Cluster
from simulator.model import SimConfig
from sinks.series import derived_points
from sinks.writers import VictoriaMetricsWriter, WriterSettings
from streams.config import StreamSettings
from tests.streams.reference import run_reference

FAULT_NODE = "node-001"


@dataclass(frozen=True)
class Scenario:
    """One simulated cluster: `faults` maps node -> (mode, minute the fault starts);
    `stop` maps node -> minute from which its producer sends nothing at all. With
    `producer_metrics`, every node's producer also reports its own `kpp_producer_up` (scraped
    with `cluster` and `node` labels) the whole time, except the nodes of `producer_until`:
    until that minute (their pod is deleted with the node then)."""

    name: str
    config: SimConfig = field(default_factory=SimConfig)
    faults: dict[str, tuple[str, float]] = field(default_factory=dict)
    stop: dict[str, float] = field(default_factory=dict)
    version: str = "1.28"
    fault_start_min: float | None = None  # when the trouble starts (None: from the start)
    producer_metrics: bool = False
    producer_until: dict[str, float] = field(default_factory=dict)


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("healthy"),
    Scenario("healthy-133", version="1.33"),
    Scenario("stalled", faults={FAULT_NODE: ("stalled", 10)}, fault_start_min=10),
    Scenario("gone", faults={FAULT_NODE: ("gone", 10)}, fault_start_min=10),
    Scenario("vanished", stop={FAULT_NODE: 10}, fault_start_min=10),
    # the node's scrapes stop reaching the pipeline, but its producer runs on until minute 30
    Scenario("left-producer-running", stop={FAULT_NODE: 10}, fault_start_min=10, producer_metrics=True,
             producer_until={FAULT_NODE: 30}),
    Scenario("no-metrics", faults={FAULT_NODE: ("missing-families", 10)}, fault_start_min=10),
    Scenario("restore-failures", config=SimConfig(restore_failure_prob=0.3)),
    Scenario("slow-sync", config=SimConfig(sync_latency_median=1.5)),
    Scenario("slow-netprog", config=SimConfig(netprog_latency_median=45.0)),
)}


def scrape_records(scenario: Scenario, cluster: str, start_s: int, minutes: float, nodes: int = 3,
                   interval_s: int = 15, seed: int = 7) -> list[ScrapeRecord]:
    """What `kpp produce` would publish for every node every `interval_s`, faults applied:
    serving-level faults (`gone`, `http500`) become failed scrapes (up = 0) as the producer
    records them; body-level ones come from the simulator's model."""
    sim = Cluster(nodes=nodes, seed=seed, version=scenario.version, start=float(start_s), config=scenario.config)
    selector = Selector()
    out: list[ScrapeRecord] = []
    for i in range(1, int(minutes * 60 // interval_s) + 1):
        at = start_s + i * interval_s
        for name in sim.node_names:
            if name in scenario.stop and at >= start_s + scenario.stop[name] * 60:
                continue
            fault = scenario.faults.get(name)
            if fault and at >= start_s + fault[1] * 60 and sim.fault(name) != fault[0]:
                sim.set_fault(name, fault[0], at=start_s + fault[1] * 60)
            settings = NodeSettings(node=name, cluster=cluster)
            target = f"http://{name}:10249/metrics"
            if sim.fault(name) in ("gone", "http500"):
                sim.families(name, at=float(at))  # the model keeps running
                outcome = ScrapeOutcome(body=None, duration_s=0.002, body_bytes=0, reason="transport",
                                        error="RemoteProtocolError: Server disconnected without sending a response.")
            else:
                body = sim.render(name, at=float(at))
                outcome = ScrapeOutcome(body=body, duration_s=0.01, body_bytes=len(body), reason="ok")
            record, _ = build_record(settings, target, at * 1000, outcome, selector)
            out.append(record)
    return out


def derived_records(records: list[ScrapeRecord], settings: StreamSettings | None = None) -> list[DerivedRecord]:
    settings = settings or StreamSettings(topic_prefix="deploy", partitions=1)
    sent = run_reference(settings, [(r.key, r.encode()) for r in records])
    kinds = {f"{settings.topic_prefix}.{k}" for k in ("rates", "quantiles", "gauges", "health", "slo")}
    return [DerivedRecord.decode(value) for topic, _key, value in sent if topic in kinds]


def write_to_vm(vm_url: str, records: list[DerivedRecord], batch_points: int = 20_000) -> int:
    """Write derived records as `kpp sink --to victoriametrics` does; returns the point count."""
    writer = VictoriaMetricsWriter(WriterSettings(url=vm_url, timeout_s=30))
    try:
        points = [p for r in records for p in derived_points(r)]
        for i in range(0, len(points), batch_points):
            body, _skipped = writer.encode(points[i:i + batch_points])
            writer.send(body)
    finally:
        writer.close()
    flush(vm_url)
    return len(points)


def import_series(vm_url: str, series: list[tuple[dict[str, str], list[int], list[float]]]) -> int:
    """Write (labels with __name__, timestamps in s, values) into VictoriaMetrics (JSON line
    import), as a scrape of the stages' /metrics would have stored them; returns the sample count."""
    lines = [json.dumps({"metric": labels, "timestamps": [t * 1000 for t in ts], "values": values})
             for labels, ts, values in series if ts]
    response = httpx.post(f"{vm_url}/api/v1/import", content="\n".join(lines).encode(), timeout=30)
    assert response.status_code == 204, f"import: {response.status_code} {response.text[:500]}"
    flush(vm_url)
    return sum(len(ts) for _labels, ts, _values in series)


def producer_series(scenario: Scenario, cluster: str, start_s: int, minutes: float, nodes: int = 3,
                    every_s: int = 30) -> list[tuple[dict[str, str], list[int], list[float]]]:
    """`kpp_producer_up` of each node's producer, as the chart's PodMonitor scrapes it (target
    labels, plus the pod's `cluster` and `node`): 1 (kube-proxy answers it) every `every_s`."""
    out = []
    for i in range(nodes):
        node = f"node-{i:03d}"
        until = start_s + int(scenario.producer_until.get(node, minutes) * 60)
        ts = list(range(start_s + every_s, min(until, start_s + int(minutes * 60)) + 1, every_s))
        labels = {"__name__": "kpp_producer_up", "job": "kube-proxy-pipeline/producer", "namespace": "kpp",
                  "pod": f"kpp-producer-{i:05d}", "instance": f"10.0.0.{i + 1}:9811", "cluster": cluster,
                  "node": node, "target": "http://127.0.0.1:10249/metrics"}
        out.append((labels, ts, [1.0] * len(ts)))
    return out


def flush(vm_url: str) -> None:
    """Make freshly written points searchable now (VictoriaMetrics buffers ~1 s)."""
    response = httpx.get(f"{vm_url}/internal/force_flush", timeout=10)
    if response.status_code != 200:
        time.sleep(2)


def unique_cluster(scenario: str) -> str:
    return f"deploy-{uuid.uuid4().hex[:8]}-{scenario}"


def aligned_start(minutes_ago: float, align_s: int = 300) -> int:
    """A start time `minutes_ago` before now, on a window boundary (windows line up)."""
    start = int(time.time() - minutes_ago * 60)
    return start - start % align_s


@dataclass
class Loaded:
    scenario: Scenario
    cluster: str
    start_s: int
    end_s: int
    points: int

    @property
    def fault_start_s(self) -> int | None:
        m = self.scenario.fault_start_min
        return None if m is None else self.start_s + int(m * 60)


def load(vm_url: str, scenario: Scenario, start_s: int, minutes: float, nodes: int = 3) -> Loaded:
    cluster = unique_cluster(scenario.name)
    records = scrape_records(scenario, cluster, start_s, minutes, nodes=nodes)
    derived = derived_records(records)
    points = write_to_vm(vm_url, derived)
    if scenario.producer_metrics:
        points += import_series(vm_url, producer_series(scenario, cluster, start_s, minutes, nodes=nodes))
    return Loaded(scenario, cluster, start_s, start_s + int(minutes * 60), points)


# -- the stages' own metrics ---------------------------------------------------------------
# Synthetic scrapes of `kpp produce`, `kpp stream` and `kpp sink` /metrics (names and labels
# as the stages expose them, plus the target labels a Kubernetes scrape adds), and the
# cluster health series the sink writes, for the pipeline alerts (deploy/alerts/pipeline.rules.yaml).

Series = tuple[dict[str, str], list[int], list[float]]

#: scenario -> what goes wrong from minute `SELF_FAULT_MIN` on; "healthy" nothing.
SELF_SCENARIOS = ("healthy", "health-stops", "producers-gone", "spool-dropping", "store-down", "sink-dlq",
                  "sink-dlq-burst", "stream-dlq", "late", "late-burst", "stream-lag", "sink-lag",
                  "lag-burst", "lag-draining")
SELF_FAULT_MIN = 20
SELF_SCRAPE_S = 30
STREAM_WORKERS = 2
SCRAPES_PER_MIN = 600  # 50 nodes every 15 s, processed by each stream worker


def self_metric_series(scenario: str, ns: str, start_s: int, minutes: int) -> list[Series]:
    """Every series of one deployment (namespace and cluster `ns`): 3 producers, 2 stream
    workers, 1 sink, scraped every 30 s, healthy until SELF_FAULT_MIN, then `scenario`. As
    prometheus_client exposes them, a labelled counter (dead letters and late records by
    reason) has no series before its first increment."""
    assert scenario in SELF_SCENARIOS, scenario
    fault_s = start_s + SELF_FAULT_MIN * 60
    times = list(range(start_s, start_s + minutes * 60 + 1, SELF_SCRAPE_S))
    after = [max(0, t - fault_s) for t in times]  # seconds into the fault (0 before it)
    out: list[Series] = []

    def add(name: str, labels: dict[str, str], values: list[float], until: int | None = None,
            since: int | None = None) -> None:
        kept = [(t, v) for t, v in zip(times, values)
                if (until is None or t < until) and (since is None or t >= since)]
        out.append(({"__name__": name, **labels}, [t for t, _ in kept], [v for _, v in kept]))

    def target(stage: str, i: int, port: int) -> dict[str, str]:
        return {"job": f"{ns}/{stage}", "namespace": ns, "pod": f"kpp-{stage}-{i}", "instance": f"10.1.{i}.1:{port}"}

    # the sink's cluster health record, one point per 60 s window (stamped with the window end)
    health = [t for t in range(start_s + 60, start_s + minutes * 60 + 1, 60)
              if scenario != "health-stops" or t < fault_s]
    out.append(({"__name__": "kubeproxy:kube_proxy:nodes", "cluster": ns, "scope": "cluster", "window": "60s"},
                health, [50.0] * len(health)))

    for i in range(3):
        labels = {**target("producer", i, 9811), "cluster": ns, "node": f"node-{i:03d}"}
        add("kpp_producer_up", {**labels, "target": "http://127.0.0.1:10249/metrics"}, [1.0] * len(times),
            until=fault_s if scenario == "producers-gone" else None)
        dropped = [5.0 * (a // SELF_SCRAPE_S) if scenario == "spool-dropping" and i == 1 else 0.0 for a in after]
        add("kpp_producer_spool_dropped_total", labels, dropped)

    for w in range(STREAM_WORKERS):
        labels = target("stream", w, 9813)
        add("kpp_stream_up", labels, [1.0] * len(times))
        scrapes = [SCRAPES_PER_MIN * (t - start_s) / 60 for t in times]
        add("kpp_stream_scrapes_total", labels, scrapes)
        if scenario == "late" and w == 1:  # 5 % of the scrapes, steadily
            add("kpp_stream_late_total", {**labels, "reason": "window_closed"},
                [0.05 * SCRAPES_PER_MIN * (a + SELF_SCRAPE_S) / 60 for a in after], since=fault_s)
        elif scenario == "late-burst" and w == 1:  # 3 early on, one burst of 500 (spools replaying), then none
            add("kpp_stream_late_total", {**labels, "reason": "window_closed"},
                [503.0 if a > 0 else 3.0 for a in after], since=start_s + 5 * 60)
        if scenario == "stream-dlq" and w == 0:  # 2 a minute
            add("kpp_stream_dlq_total", {**labels, "reason": "decode"}, [2.0 + a // 30 for a in after], since=fault_s)
        for p in range(3):
            lag = []
            for k, a in enumerate(after):
                base = float((k * 7 + p * 13) % 40)  # a healthy lag: tens of records, up and down
                if p == 1 and a > 0 and scenario == "stream-lag":
                    base = 1200 + 200 * a / 60  # above the floor and growing 200 records a minute
                elif p == 1 and scenario == "lag-burst" and 0 < a <= 180:
                    base = 50_000  # three minutes of burst ...
                elif p == 1 and scenario == "lag-burst" and 180 < a <= 480:
                    base = 50_000 * (480 - a) / 300  # ... drained in five
                elif p == 1 and scenario == "lag-draining" and a > 0:
                    base = max(0.0, 80_000 - 2000 * a / 60)  # a backlog caught up over 40 minutes
                lag.append(base)
            # every worker reports the whole group's lag
            add("kpp_stream_consumer_lag", {**labels, "topic": "kpp.samples", "partition": str(p)}, lag)

    labels = target("sink", 0, 9812)
    add("kpp_sink_store_up", labels, [0.0 if scenario == "store-down" and a > 0 else 1.0 for a in after])
    if scenario == "sink-dlq":  # one dead letter, ever
        add("kpp_sink_dlq_total", {**labels, "reason": "malformed"}, [1.0] * len(times), since=fault_s)
    elif scenario == "sink-dlq-burst":  # 50 before the first scrape that shows the series
        add("kpp_sink_dlq_total", {**labels, "reason": "rejected"}, [50.0] * len(times), since=fault_s)
    for topic in ("kpp.health", "kpp.quantiles"):
        lag = [float((k * 11) % 30) for k in range(len(times))]
        if scenario == "sink-lag" and topic == "kpp.quantiles":
            lag = [1500 + 300 * a / 60 if a > 0 else v for a, v in zip(after, lag)]
        add("kpp_sink_consumer_lag", {**labels, "topic": topic}, lag)
    return out
