"""Deterministic model of N kube-proxies: what each one would serve on /metrics at time t.

Why the shape: the pipeline is tested against this simulator, so a failing test must be
replayable. The state of a node at time t is a pure function of (seed, node name, version,
config, fault history, t):

* every node owns `random.Random(f"{seed}:{node}")` and draws from it only inside discrete
  simulated sync ticks, never at render time, so how often (or whether) anyone scraped does not
  change what the node serves;
* a tick happens every `sync_interval` seconds with jitter drawn from the same RNG; each tick
  draws endpoint/service changes, a sync latency from a log-normal distribution (median and
  sigma configurable), network-programming latencies (one per endpoint change) and rare
  iptables-restore failures;
* rendering at wall time t first advances the model lazily through all ticks <= t;
* a fault switched at time t is applied after advancing to t, so the fault history (with times)
  is part of the input, not a side effect of scrape timing.

Values that only depend on uptime (process CPU, Go memory counters, health probes) are derived
from t and the process start, so they are monotonic without RNG state.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass, field

from simulator import catalogue
from simulator.catalogue import FamilySpec, version_key
from simulator.promtext import Family, Labels, Sample, histogram_samples, render_families

# Fault modes. Serving-level ones are acted on by the HTTP server; model-level ones change
# what the node computes or serves. `restart` is a one-shot event, not a lasting mode.
FAULT_MODES: tuple[str, ...] = (
    "none", "slow", "http500", "malformed", "restart", "missing-families", "stalled", "gone")

FAULT_HELP: dict[str, str] = {
    "none": "healthy node (clears any fault)",
    "slow": "delay the response by --slow-seconds",
    "http500": "answer 500 Internal Server Error",
    "malformed": "serve a body with one broken exposition line",
    "restart": "one-shot: counters/histograms reset to 0, process_start_time moves to now",
    "missing-families": "serve only non-kubeproxy families (like userspace mode)",
    "stalled": "syncs stop: last_timestamp frozen, last_queued keeps advancing",
    "gone": "close the connection without any HTTP response",
}

IP_FAMILY = "IPv4"

# Network programming observations per sync are capped: a real sync programs one latency per
# changed endpoints object, and a burst of thousands would only slow the simulator down.
MAX_NETPROG_OBSERVATIONS_PER_SYNC = 50


@dataclass(frozen=True)
class SimConfig:
    """Everything besides the seed that shapes the simulated numbers. Frozen: part of the input."""

    sync_interval: float = 5.0
    sync_jitter: float = 0.2              # +/- fraction of sync_interval
    sync_latency_median: float = 0.015    # seconds, log-normal median
    sync_latency_sigma: float = 0.6       # log-normal shape
    netprog_latency_median: float = 1.2   # seconds, log-normal median
    netprog_latency_sigma: float = 0.8
    endpoint_change_rate: float = 1.5     # mean endpoint changes per sync (Poisson)
    service_change_prob: float = 0.1      # probability of one service change per sync
    restore_failure_prob: float = 0.002   # per sync
    partial_restore_failure_prob: float = 0.005  # per partial sync, 1.28+
    full_sync_every: int = 6              # every Nth sync is full (1.28+ partial/full split)
    healthz_probe_interval: float = 10.0  # 0 disables probes (no proxy_healthz_total series)
    uptime_at_start_max: float = 600.0    # nodes start with 0..this many seconds of history
    restart_first_sync_delay: float = 1.0

    def validate(self) -> None:
        """Reject settings that would make the model loop forever or draw nonsense."""
        if self.sync_interval <= 0:
            raise ValueError("sync_interval must be > 0")
        if not 0 <= self.sync_jitter < 1:
            raise ValueError("sync_jitter must be in [0, 1)")
        if self.sync_latency_median <= 0 or self.netprog_latency_median <= 0:
            raise ValueError("latency medians must be > 0")
        if self.sync_latency_sigma < 0 or self.netprog_latency_sigma < 0:
            raise ValueError("latency sigmas must be >= 0")
        for name in ("restore_failure_prob", "partial_restore_failure_prob",
                     "service_change_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.endpoint_change_rate < 0 or self.full_sync_every < 1:
            raise ValueError("endpoint_change_rate must be >= 0 and full_sync_every >= 1")
        if self.healthz_probe_interval < 0 or self.uptime_at_start_max < 0:
            raise ValueError("healthz_probe_interval and uptime_at_start_max must be >= 0")


def node_name(index: int) -> str:
    """node-000, node-001, ... (at least three digits, more when needed)."""
    return f"node-{index:03d}"


@dataclass
class Histogram:
    """Per-bucket (non-cumulative) counts plus sum; cumulation is the renderer's job."""

    bounds: tuple[float, ...]
    counts: list[int]
    total: float = 0.0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> Histogram:
        return cls(bounds, [0] * (len(bounds) + 1))

    def observe(self, value: float) -> None:
        self.counts[bucket_index(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)


def bucket_index(bounds: tuple[float, ...], value: float) -> int:
    """Index of the first bucket with value <= le (Prometheus' inclusive upper bounds)."""
    for i, bound in enumerate(bounds):
        if value <= bound:
            return i
    return len(bounds)


def poisson(rng: random.Random, mean: float) -> int:
    """Knuth's Poisson sampler: small means only, which is all the model needs."""
    if mean <= 0:
        return 0
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def lognormal(rng: random.Random, median: float, sigma: float) -> float:
    """Log-normal draw parameterised by its median (what people can reason about)."""
    return rng.lognormvariate(math.log(median), sigma)


@dataclass
class NodeState:
    """Everything a process (re)start resets: series by family name and label set."""

    series: dict[str, dict[Labels, float | Histogram]] = field(default_factory=dict)
    syncs: int = 0
    probes_counted: int = 0
    needs_full_sync: bool = True


class NodeModel:
    """One simulated kube-proxy. Not thread-safe on its own: `Cluster` serialises access."""

    def __init__(self, index: int, seed: int | str, version: str, config: SimConfig,
                 start: float) -> None:
        if version not in catalogue.VERSIONS:
            raise ValueError(f"unknown version {version!r}; choose from {catalogue.VERSIONS}")
        self.index = index
        self.name = node_name(index)
        self.version = version
        self.config = config
        self.rng = random.Random(f"{seed}:{self.name}")
        self.specs: dict[str, FamilySpec] = {
            s.name: s for s in catalogue.kubeproxy_families(
                version, healthz_probed=config.healthz_probe_interval > 0)}
        self.fault = "none"
        self.restarts: list[float] = []
        # Cluster shape this node sees; drifts slowly with service/endpoint changes.
        self.services = self.rng.randint(8, 40)
        self.endpoints = self.services + self.rng.randint(0, 30)
        self.no_local = {"internal": 0, "external": self.rng.randint(0, 1)}
        self.process_start = start - self.rng.uniform(0.0, config.uptime_at_start_max)
        self.now = self.process_start
        self.state = self._fresh_state()
        self.next_sync = self.process_start + self.rng.uniform(0.5, 2.0)
        self.advance(start)

    # -- state helpers -------------------------------------------------------------------

    def _labels(self, spec: FamilySpec, **extra: str) -> Labels:
        """Label set for one series: ip_family when the version has it, plus `extra`."""
        values = dict(extra)
        if "ip_family" in spec.labels:
            values["ip_family"] = IP_FAMILY
        return tuple(sorted(values.items()))

    def _fresh_state(self) -> NodeState:
        """A just-started process: unlabeled families exist at 0, vectors have no series yet."""
        state = NodeState()
        for spec in self.specs.values():
            state.series[spec.name] = {}
            if not spec.labels:
                state.series[spec.name][()] = (
                    Histogram.empty(spec.buckets) if spec.type == "histogram" else 0.0)
        return state

    def _has(self, family: str) -> bool:
        return family in self.specs

    def _add(self, family: str, amount: float = 1.0, **labels: str) -> None:
        if not self._has(family):
            return
        series = self.state.series[family]
        key = self._labels(self.specs[family], **labels)
        current = series.get(key, 0.0)
        assert not isinstance(current, Histogram)
        series[key] = current + amount

    def _set(self, family: str, value: float, **labels: str) -> None:
        if self._has(family):
            self.state.series[family][self._labels(self.specs[family], **labels)] = value

    def _observe(self, family: str, value: float) -> None:
        if not self._has(family):
            return
        spec = self.specs[family]
        series = self.state.series[family]
        key = self._labels(spec)
        hist = series.get(key)
        if not isinstance(hist, Histogram):
            hist = series[key] = Histogram.empty(spec.buckets)
        hist.observe(value)

    # -- time ----------------------------------------------------------------------------

    def advance(self, t: float) -> None:
        """Run every sync tick scheduled at or before t. Never goes backwards."""
        while self.next_sync <= t:
            tick_at = self.next_sync
            latency = self._tick(tick_at)
            jitter = self.rng.uniform(-self.config.sync_jitter, self.config.sync_jitter)
            interval = self.config.sync_interval * (1.0 + jitter)
            # A sync cannot start before the previous one finished.
            self.next_sync = tick_at + max(interval, latency)
            self.now = tick_at
        self.now = max(self.now, t)

    def _tick(self, ts: float) -> float:
        """One sync attempt at ts. Draws are made in a fixed order whatever the fault, so a
        stalled period does not desynchronise the RNG stream from a healthy one. Returns the
        sync latency."""
        cfg, rng, st = self.config, self.rng, self.state
        first = st.syncs == 0 and st.needs_full_sync
        if first:  # the initial sync sees every object once
            ep_changes, svc_changes = self.endpoints, self.services
        else:
            ep_changes = poisson(rng, cfg.endpoint_change_rate)
            svc_changes = 1 if rng.random() < cfg.service_change_prob else 0
        topo_step = rng.choice((-1, 1))
        ep_step = rng.randint(-ep_changes, ep_changes) if ep_changes else 0
        latency = round(min(max(lognormal(rng, cfg.sync_latency_median, cfg.sync_latency_sigma),
                                1e-4), 60.0), 9)
        restore_fail = rng.random() < cfg.restore_failure_prob
        partial_fail = rng.random() < cfg.partial_restore_failure_prob
        netprog = [round(lognormal(rng, cfg.netprog_latency_median, cfg.netprog_latency_sigma), 9)
                   for _ in range(min(ep_changes, MAX_NETPROG_OBSERVATIONS_PER_SYNC))]
        conntrack_latency = round(lognormal(rng, 0.002, 0.5), 9)
        conntrack_deleted = poisson(rng, 0.3)
        ct_invalid = poisson(rng, 2.0)
        no_local_flip = rng.random() < 0.02

        if not first:
            if svc_changes:
                self.services = max(1, self.services + topo_step)
            self.endpoints = max(self.services, self.endpoints + ep_step)
        if no_local_flip:
            self.no_local["external"] = 1 - self.no_local["external"]

        self._count_probes(ts)
        self._add("kubeproxy_sync_proxy_rules_endpoint_changes_total", ep_changes)
        self._add("kubeproxy_sync_proxy_rules_service_changes_total", svc_changes)
        self._set("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds", ts)

        if self.fault == "stalled":  # the sync loop is hung: changes pile up, nothing runs
            self._add("kubeproxy_sync_proxy_rules_endpoint_changes_pending", ep_changes)
            self._add("kubeproxy_sync_proxy_rules_service_changes_pending", svc_changes)
            return latency

        full = st.needs_full_sync or st.syncs % cfg.full_sync_every == 0
        self._observe("kubeproxy_sync_proxy_rules_duration_seconds", latency)
        self._observe("kubeproxy_sync_full_proxy_rules_duration_seconds" if full
                      else "kubeproxy_sync_partial_proxy_rules_duration_seconds", latency)
        self._observe("kubeproxy_conntrack_reconciler_sync_duration_seconds", conntrack_latency)
        self._add("kubeproxy_conntrack_reconciler_deleted_entries_total", conntrack_deleted)
        self._add("kubeproxy_iptables_ct_state_invalid_dropped_packets_total", ct_invalid)
        # Vectors appear once touched, as client_golang's Add(0) makes them.
        self._add("kubeproxy_sync_proxy_rules_iptables_restore_failures_total", 0)
        self._add("kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total", 0)
        st.syncs += 1

        failed = restore_fail or (partial_fail and not full
                                  and self._has("kubeproxy_sync_proxy_rules_iptables_partial_"
                                                "restore_failures_total"))
        if failed:
            family = ("kubeproxy_sync_proxy_rules_iptables_restore_failures_total" if restore_fail
                      else "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total")
            self._add(family)
            st.needs_full_sync = True
            self._add("kubeproxy_sync_proxy_rules_endpoint_changes_pending", ep_changes)
            self._add("kubeproxy_sync_proxy_rules_service_changes_pending", svc_changes)
            return latency

        st.needs_full_sync = False
        self._set("kubeproxy_sync_proxy_rules_endpoint_changes_pending", 0.0)
        self._set("kubeproxy_sync_proxy_rules_service_changes_pending", 0.0)
        self._set("kubeproxy_sync_proxy_rules_last_timestamp_seconds", round(ts + latency, 6))
        for value in netprog:
            self._observe("kubeproxy_network_programming_duration_seconds",
                          round(value + latency, 9))
        nat_total, filter_total = self._rule_counts()
        self._set("kubeproxy_sync_proxy_rules_iptables_total", nat_total, table="nat")
        self._set("kubeproxy_sync_proxy_rules_iptables_total", filter_total, table="filter")
        nat_last = nat_total if full else min(nat_total, 4.0 + 3 * (ep_changes + svc_changes))
        self._set("kubeproxy_sync_proxy_rules_iptables_last", nat_last, table="nat")
        self._set("kubeproxy_sync_proxy_rules_iptables_last", filter_total, table="filter")
        for policy, value in self.no_local.items():
            self._set("kubeproxy_sync_proxy_rules_no_local_endpoints_total", float(value),
                      traffic_policy=policy)
        return latency

    def _rule_counts(self) -> tuple[float, float]:
        """Rough iptables rule counts: a few fixed chains plus per-service/endpoint rules."""
        nat = 10 + 4 * self.services + 3 * self.endpoints
        filter_ = 4 + 2 * sum(self.no_local.values())
        return float(nat), float(filter_)

    def _count_probes(self, ts: float) -> None:
        """kubelet-style probes every healthz_probe_interval since process start; counted at
        ticks so the totals are part of the deterministic state. 503 while stalled."""
        interval = self.config.healthz_probe_interval
        if interval <= 0:
            return
        done = int((ts - self.process_start) // interval)
        new = done - self.state.probes_counted
        if new > 0:
            code = "503" if self.fault == "stalled" else "200"
            self._add("kubeproxy_proxy_healthz_total", new, code=code)
            self._add("kubeproxy_proxy_livez_total", new, code=code)
            self.state.probes_counted = done

    # -- faults --------------------------------------------------------------------------

    def set_fault(self, mode: str, at: float) -> None:
        """Switch the fault at time `at` (after advancing to it). `restart` is one-shot: the
        process restarts now and the node goes back to healthy."""
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; choose from {FAULT_MODES}")
        self.advance(at)
        if mode == "restart":
            self.restart(at)
            self.fault = "none"
        else:
            self.fault = mode

    def restart(self, at: float) -> None:
        """Process restart: every series back to its fresh value, start time moves to `at`."""
        self.process_start = max(at, self.now)
        self.restarts.append(self.process_start)
        self.state = self._fresh_state()
        self.next_sync = self.process_start + self.config.restart_first_sync_delay

    # -- output --------------------------------------------------------------------------

    def kubeproxy_families(self) -> list[Family]:
        """kubeproxy_ families as the state stands (after `advance`)."""
        out: list[Family] = []
        for spec in self.specs.values():
            samples: list[Sample] = []
            for labels, value in sorted(self.state.series[spec.name].items()):
                if isinstance(value, Histogram):
                    samples.extend(histogram_samples(spec.name, labels, value.bounds,
                                                     value.counts, value.total))
                else:
                    samples.append(Sample(spec.name, labels, value))
            out.append(Family(spec.name, spec.type, spec.help_line, tuple(samples)))
        return out

    def runtime_families(self, at: float) -> list[Family]:
        """Non-kubeproxy families (go_*, process_*, rest_client_*, build info ...).

        Shaped like the captures; values derive from uptime and node index only, so they are
        deterministic and monotonic without touching the RNG.
        """
        return runtime_families(self.version, self.index, self.process_start,
                                max(at, self.now), self.state.syncs)

    def families(self, at: float) -> list[Family]:
        """What this node means to serve at `at`, honouring `missing-families`, in Go's order
        (sorted by name)."""
        self.advance(at)
        fams = self.runtime_families(at)
        if self.fault != "missing-families":
            fams += self.kubeproxy_families()
        return sorted(fams, key=lambda f: f.name)


def runtime_families(version: str, index: int, process_start: float, at: float,
                     syncs: int) -> list[Family]:
    """Pure function: the non-kubeproxy part of a kube-proxy /metrics page."""
    h = catalogue.RUNTIME_HELP
    build = catalogue.BUILD_INFO[version]
    v = version_key(version)
    uptime = max(0.0, at - process_start)
    gc_cycles = 7 + int(uptime // 120)
    gets = 4 + int(uptime // 300)  # informer relists/watches, roughly
    fams: list[Family] = []

    def simple(name: str, type_: str, value: float, labels: Labels = ()) -> None:
        fams.append(Family(name, type_, h[name], (Sample(name, labels, value),)))

    simple("apiserver_audit_event_total", "counter", 0.0)
    simple("apiserver_audit_requests_rejected_total", "counter", 0.0)
    if v >= (1, 28):
        simple("disabled_metrics_total", "counter", 0.0)
        simple("hidden_metrics_total", "counter", 0.0)
    quantiles = (("0", 5.0358e-05), ("0.25", 6.9666e-05), ("0.5", 9.9134e-05),
                 ("0.75", 0.000318162), ("1", 0.000330769))
    gc_samples = [Sample("go_gc_duration_seconds", (("quantile", q),), val) for q, val in quantiles]
    gc_samples += [Sample("go_gc_duration_seconds_sum", (), round(gc_cycles * 0.000175, 9)),
                   Sample("go_gc_duration_seconds_count", (), float(gc_cycles))]
    fams.append(Family("go_gc_duration_seconds", "summary", h["go_gc_duration_seconds"],
                       tuple(gc_samples)))
    simple("go_goroutines", "gauge", float(50 + index % 7))
    simple("go_info", "gauge", 1.0, (("version", build.go_version),))
    simple("go_memstats_alloc_bytes", "gauge", float(11_000_000 + (index * 7919) % 900_000))
    simple("go_memstats_alloc_bytes_total", "counter",
           float(20_000_000 + int(uptime * 40_000) + syncs * 12_000))
    simple("go_threads", "gauge", float(10 + index % 3))
    fams.append(Family("kubernetes_build_info", "gauge", h["kubernetes_build_info"], (
        Sample("kubernetes_build_info", (
            ("build_date", build.build_date), ("compiler", "gc"),
            ("git_commit", build.git_commit), ("git_tree_state", "clean"),
            ("git_version", build.git_version), ("go_version", build.go_version),
            ("major", "1"), ("minor", str(v[1])), ("platform", "linux/amd64")), 1.0),)))
    if v >= (1, 28):
        fams.append(Family("kubernetes_feature_enabled", "gauge", h["kubernetes_feature_enabled"],
                           tuple(Sample("kubernetes_feature_enabled",
                                        (("name", name), ("stage", stage)), float(on))
                                 for name, stage, on in catalogue.FEATURES)))
    simple("process_cpu_seconds_total", "counter", round(0.4 + 0.0015 * uptime, 2))
    simple("process_max_fds", "gauge", 1048576.0)
    simple("process_open_fds", "gauge", float(12 + index % 5))
    simple("process_resident_memory_bytes", "gauge", float(46_661_632 + (index * 4096) % 2_000_000))
    simple("process_start_time_seconds", "gauge", round(process_start, 2))
    simple("process_virtual_memory_bytes", "gauge", 785_973_248.0)
    simple("process_virtual_memory_max_bytes", "gauge", 1.8446744073709552e19)
    if v >= (1, 28):
        fams.append(Family("registered_metrics_total", "counter", h["registered_metrics_total"], (
            Sample("registered_metrics_total",
                   (("deprecated_version", ""), ("stability_level", "ALPHA")), 83.0),
            Sample("registered_metrics_total",
                   (("deprecated_version", ""), ("stability_level", "BETA")), 6.0),
            Sample("registered_metrics_total",
                   (("deprecated_version", ""), ("stability_level", "STABLE")), 3.0))))
    host = "kind-control-plane:6443"
    rest: list[Sample] = []
    for verb, n in (("GET", gets), ("POST", 1)):
        fast = n - n // 4
        counts = [fast, n - fast] + [0] * (len(catalogue.REST_CLIENT_DURATION_BUCKETS) - 1)
        # fast requests take 4 ms (le=0.005), the rest 12 ms (le=0.025): sum fits buckets.
        rest += histogram_samples("rest_client_request_duration_seconds",
                                  (("host", host), ("verb", verb)),
                                  catalogue.REST_CLIENT_DURATION_BUCKETS, counts,
                                  round(fast * 0.004 + (n - fast) * 0.012, 9))
    fams.append(Family("rest_client_request_duration_seconds", "histogram",
                       h["rest_client_request_duration_seconds"], tuple(rest)))
    fams.append(Family("rest_client_requests_total", "counter", h["rest_client_requests_total"], (
        Sample("rest_client_requests_total",
               (("code", "200"), ("host", host), ("method", "GET")), float(gets + 3)),
        Sample("rest_client_requests_total",
               (("code", "201"), ("host", host), ("method", "POST")), 1.0))))
    return fams


def break_body(body: str) -> str:
    """The `malformed` fault: one sample line loses its closing brace and gains a non-number
    value, which every text-format parser must reject, placed mid-body so naive line-splitting
    scrapers that stop early do not miss it."""
    lines = body.split("\n")
    middle = len(lines) // 2
    lines.insert(middle, 'kubeproxy_sync_proxy_rules_duration_seconds_bucket{le="0.001" NaN-ish')
    return "\n".join(lines)


class Cluster:
    """N simulated kube-proxies sharing one clock origin (`start`, epoch seconds).

    Thread-safe: each node has its own lock, so concurrent scrapes of different nodes do not
    serialise, and a node's model only ever moves forward.
    """

    def __init__(self, nodes: int, seed: int | str = 0, version: str = catalogue.DEFAULT_VERSION,
                 start: float = 0.0, config: SimConfig | None = None,
                 faults: dict[str, str] | None = None) -> None:
        if nodes < 1:
            raise ValueError("nodes must be >= 1")
        self.config = config or SimConfig()
        self.config.validate()
        self.seed = seed
        self.version = version
        self.start = start
        self.nodes: dict[str, NodeModel] = {}
        self._locks: dict[str, threading.Lock] = {}
        for i in range(nodes):
            model = NodeModel(i, seed, version, self.config, start)
            self.nodes[model.name] = model
            self._locks[model.name] = threading.Lock()
        for target, mode in (faults or {}).items():
            for name in self.resolve(target):
                self.set_fault(name, mode, at=start)

    @property
    def node_names(self) -> list[str]:
        return list(self.nodes)

    def resolve(self, target: str) -> list[str]:
        """'all' or one node name -> node names; unknown names are an error (typos matter)."""
        if target == "all":
            return self.node_names
        if target not in self.nodes:
            raise KeyError(f"unknown node {target!r} (nodes are {self.node_names[0]} .. "
                           f"{self.node_names[-1]})")
        return [target]

    def model(self, node: str) -> NodeModel:
        return self.nodes[self.resolve(node)[0]]

    def fault(self, node: str) -> str:
        with self._locks[self.resolve(node)[0]]:
            return self.model(node).fault

    def fault_at(self, node: str, at: float) -> str:
        """The fault mode `node` serves a request answered as of `at` (the server's view; a
        subclass with scheduled faults applies those due by `at` first)."""
        return self.fault(node)

    def set_fault(self, node: str, mode: str, at: float) -> None:
        with self._locks[self.resolve(node)[0]]:
            self.model(node).set_fault(mode, at)

    def families(self, node: str, at: float) -> list[Family]:
        """What `node` means to serve at `at` (before any `malformed` corruption)."""
        with self._locks[self.resolve(node)[0]]:
            return self.model(node).families(at)

    def expected_samples(self, node: str, at: float) -> list[Sample]:
        """Flat list of every sample `render(node, at)` writes, for comparing with a parser."""
        return [s for fam in self.families(node, at) for s in fam.samples]

    def render(self, node: str, at: float) -> str:
        """The /metrics body of `node` at `at`, including body-level faults (missing-families,
        malformed). Serving-level faults (slow, http500, gone) are the server's job.

        A node's model only moves forward: asking for a time before one already rendered
        serves the current state (concurrent scrapes may read the clock out of order)."""
        with self._locks[self.resolve(node)[0]]:
            model = self.model(node)
            body = render_families(model.families(at))
            return break_body(body) if model.fault == "malformed" else body
