"""What real kube-proxy exposes, per version: family names, TYPE, HELP, labels and bucket layouts.

Modelled on the real captures (v1.25.3 and v1.28.0 in iptables mode) and, for 1.33, on the
upstream metrics reference (ip_family on most families, conntrack reconciler metrics). The
simulator renders exactly these; tests compare them with the captures so drift is caught.

Only *shape* lives here (no values): the model decides values, the renderer writes text.
"""

from __future__ import annotations

from dataclasses import dataclass

VERSIONS: tuple[str, ...] = ("1.25", "1.28", "1.33")
DEFAULT_VERSION = "1.28"

PREFIX = "kubeproxy_"


def version_key(version: str) -> tuple[int, int]:
    """'1.28' -> (1, 28), so versions compare numerically."""
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    """Same as client_golang's ExponentialBuckets; rounded so 0.001*2**k prints as in Go."""
    return tuple(round(start * factor**k, 12) for k in range(count))


# prometheus.ExponentialBuckets(0.001, 2, 15): 0.001 … 16.384.
SYNC_BUCKETS: tuple[float, ...] = exponential_buckets(0.001, 2, 15)

# merge([0], Linear(0.25,0.25,2), Linear(1,1,59), Linear(60,5,12), Linear(120,30,7)):
# 81 finite bounds; the le="0" bucket is real (a leading 0 from Go's merge()).
NETWORK_PROGRAMMING_BUCKETS: tuple[float, ...] = (
    (0.0, 0.25, 0.5)
    + tuple(float(s) for s in range(1, 60))
    + tuple(float(s) for s in range(60, 120, 5))
    + tuple(float(s) for s in range(120, 301, 30))
)

# conntrack reconciler uses the same exponential layout as the sync histograms.
CONNTRACK_BUCKETS: tuple[float, ...] = SYNC_BUCKETS


@dataclass(frozen=True)
class FamilySpec:
    """One kubeproxy_ family as a given version registers it."""

    name: str                      # full name, with the kubeproxy_ prefix
    type: str                      # counter | gauge | histogram
    help: str                      # without the "[ALPHA] " stability prefix
    labels: tuple[str, ...] = ()   # label names other than le, in Go's (sorted) order
    buckets: tuple[float, ...] = ()

    @property
    def help_line(self) -> str:
        """component-base prefixes the stability level; every kube-proxy family is ALPHA."""
        return f"[ALPHA] {self.help}"


def _spec(name: str, type_: str, help_: str, labels: tuple[str, ...] = (),
          buckets: tuple[float, ...] = ()) -> FamilySpec:
    return FamilySpec(PREFIX + name, type_, help_, tuple(sorted(labels)), buckets)


def kubeproxy_families(version: str, *, healthz_probed: bool = True) -> tuple[FamilySpec, ...]:
    """The kubeproxy_ families of one version, sorted by name (Go's registry order).

    `healthz_probed`: proxy_healthz_total/proxy_livez_total (1.28+) only get series once
    something probes the health server; the captures were taken without probes, so tests that
    compare with them turn this off.
    """
    v = version_key(version)
    fam = ("ip_family",) if v >= (1, 33) else ()
    specs = [
        _spec("network_programming_duration_seconds", "histogram",
              "In Cluster Network Programming Latency in seconds", fam, NETWORK_PROGRAMMING_BUCKETS),
        _spec("sync_proxy_rules_duration_seconds", "histogram",
              "SyncProxyRules latency in seconds", fam, SYNC_BUCKETS),
        _spec("sync_proxy_rules_endpoint_changes_pending", "gauge",
              "Pending proxy rules Endpoint changes"),
        _spec("sync_proxy_rules_endpoint_changes_total", "counter",
              "Cumulative proxy rules Endpoint changes"),
        _spec("sync_proxy_rules_iptables_restore_failures_total", "counter",
              "Cumulative proxy iptables restore failures", fam),
        _spec("sync_proxy_rules_iptables_total", "gauge",
              "Total number of iptables rules owned by kube-proxy" if v >= (1, 28)
              else "Number of proxy iptables rules programmed", (*fam, "table")),
        _spec("sync_proxy_rules_last_queued_timestamp_seconds", "gauge",
              "The last time a sync of proxy rules was queued", fam),
        _spec("sync_proxy_rules_last_timestamp_seconds", "gauge",
              "The last time proxy rules were successfully synced", fam),
        _spec("sync_proxy_rules_no_local_endpoints_total", "gauge",
              "Number of services with a Local traffic policy and no endpoints",
              (*fam, "traffic_policy")),
        _spec("sync_proxy_rules_service_changes_pending", "gauge",
              "Pending proxy rules Service changes"),
        _spec("sync_proxy_rules_service_changes_total", "counter",
              "Cumulative proxy rules Service changes"),
    ]
    if v >= (1, 28):
        specs += [
            _spec("sync_full_proxy_rules_duration_seconds", "histogram",
                  "SyncProxyRules latency in seconds for full resyncs", fam, SYNC_BUCKETS),
            _spec("sync_partial_proxy_rules_duration_seconds", "histogram",
                  "SyncProxyRules latency in seconds for partial resyncs", fam, SYNC_BUCKETS),
            _spec("sync_proxy_rules_iptables_last", "gauge",
                  "Number of iptables rules written by kube-proxy in last sync", (*fam, "table")),
            _spec("sync_proxy_rules_iptables_partial_restore_failures_total", "counter",
                  "Cumulative proxy iptables partial restore failures", fam),
        ]
        if healthz_probed:
            specs += [
                _spec("proxy_healthz_total", "counter", "Cumulative proxy healthz HTTP status",
                      ("code",)),
                _spec("proxy_livez_total", "counter", "Cumulative proxy livez HTTP status",
                      ("code",)),
            ]
    if v >= (1, 33):
        specs += [
            _spec("conntrack_reconciler_sync_duration_seconds", "histogram",
                  "ReconcileConntrackFlowsLatency latency in seconds", fam, CONNTRACK_BUCKETS),
            _spec("conntrack_reconciler_deleted_entries_total", "counter",
                  "Cumulative conntrack flows deleted by conntrack reconciler", fam),
            _spec("iptables_ct_state_invalid_dropped_packets_total", "counter",
                  "packets dropped by iptables to work around conntrack problems"),
            _spec("iptables_localhost_nodeports_accepted_packets_total", "counter",
                  "Number of packets accepted on nodeports of loopback interface"),
        ]
    return tuple(sorted(specs, key=lambda s: s.name))


@dataclass(frozen=True)
class BuildInfo:
    """kubernetes_build_info / go_info labels of one release."""

    git_version: str
    git_commit: str
    build_date: str
    go_version: str


# 1.25.3 and 1.28.0 are copied from the real captures. 1.33.0 has no capture here: its values
# are illustrative (no consumer should key on them).
BUILD_INFO: dict[str, BuildInfo] = {
    "1.25": BuildInfo("v1.25.3", "434bfd82814af038ad94d62ebe59b133fcb50506",
                      "2022-10-25T19:35:11Z", "go1.19.2"),
    "1.28": BuildInfo("v1.28.0", "855e7c48de7388eb330da0f8d9d2394ee818fb8d",
                      "2023-08-15T21:24:51Z", "go1.20.7"),
    "1.33": BuildInfo("v1.33.0", "0000000000000000000000000000000000000000",
                      "2025-04-23T00:00:00Z", "go1.24.2"),
}

# rest_client_request_duration_seconds buckets as in both captures.
REST_CLIENT_DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)

# A few kubernetes_feature_enabled rows (1.28+), copied from the v1.28.0 capture.
FEATURES: tuple[tuple[str, str, int], ...] = (
    ("KubeProxyDrainingTerminatingNodes", "ALPHA", 0),
    ("MinimizeIPTablesRestore", "", 1),
    ("ProxyTerminatingEndpoints", "", 1),
    ("TopologyAwareHints", "BETA", 1),
)

# HELP texts of the runtime (non-kubeproxy) families, copied from the captures.
RUNTIME_HELP: dict[str, str] = {
    "apiserver_audit_event_total":
        "[ALPHA] Counter of audit events generated and sent to the audit backend.",
    "apiserver_audit_requests_rejected_total":
        "[ALPHA] Counter of apiserver requests rejected due to an error in audit logging backend.",
    "disabled_metrics_total": "[BETA] The count of disabled metrics.",
    "go_gc_duration_seconds": "A summary of the pause duration of garbage collection cycles.",
    "go_goroutines": "Number of goroutines that currently exist.",
    "go_info": "Information about the Go environment.",
    "go_memstats_alloc_bytes": "Number of bytes allocated and still in use.",
    "go_memstats_alloc_bytes_total": "Total number of bytes allocated, even if freed.",
    "go_threads": "Number of OS threads created.",
    "hidden_metrics_total": "[BETA] The count of hidden metrics.",
    "kubernetes_build_info": (
        "[ALPHA] A metric with a constant '1' value labeled by major, minor, git version, git "
        "commit, git tree state, build date, Go version, and compiler from which Kubernetes was "
        "built, and platform on which it is running."),
    "kubernetes_feature_enabled":
        "[BETA] This metric records the data about the stage and enablement of a k8s feature.",
    "process_cpu_seconds_total": "Total user and system CPU time spent in seconds.",
    "process_max_fds": "Maximum number of open file descriptors.",
    "process_open_fds": "Number of open file descriptors.",
    "process_resident_memory_bytes": "Resident memory size in bytes.",
    "process_start_time_seconds": "Start time of the process since unix epoch in seconds.",
    "process_virtual_memory_bytes": "Virtual memory size in bytes.",
    "process_virtual_memory_max_bytes": "Maximum amount of virtual memory available in bytes.",
    "registered_metrics_total": (
        "[BETA] The count of registered metrics broken by stability level and deprecation "
        "version."),
    "rest_client_request_duration_seconds":
        "[ALPHA] Request latency in seconds. Broken down by verb, and host.",
    "rest_client_requests_total":
        "[ALPHA] Number of HTTP requests, partitioned by status code, method, and host.",
}
