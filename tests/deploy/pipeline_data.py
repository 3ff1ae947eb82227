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
