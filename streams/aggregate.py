"""Window partials → derived records (node and cluster scope), and the cluster merge.

A node partial (see node_state.close_window) carries, for one node and one window, counter
increases ("c"), histogram bucket deltas ("h": [buckets le→delta, count, sum]), gauge
statistics ("g": [last, min, max]) and health facts. Cluster results merge the partials of
all nodes — bucket deltas are summed by bound BEFORE any quantile is interpolated — in node
order, so floating point sums are identical whatever order partials arrived in.
"""

from __future__ import annotations

from typing import Any, Iterable

from contracts.codec import dumps
from contracts.derived_fast import RecordEncoder
from streams.aggregators import CounterIncrease, GaugeStats, HistogramDeltas, entry_quantile, pooled_quantile
from streams.config import StreamSettings, quantile_name
from streams.node_state import NETPROG
from streams.node_state import split_sid as _split_sid

#: Counters whose increase is a restore failure (health: "restore_failures").
RESTORE_FAILURES = (
    "sync_proxy_rules_iptables_restore_failures_total",
    "sync_proxy_rules_iptables_partial_restore_failures_total",
    "sync_proxy_rules_nftables_sync_failures_total",
)
HEALTH_METRIC = "kube_proxy"
SKIP_GAUGE_SUFFIX = "_timestamp_seconds"  # reported as health (seconds since last sync)


def cluster_labels(labels: dict[str, str]) -> dict[str, str]:
    """A cluster-scope record's series labels: a `node` label of the target's own (a
    kube-proxy series labelled with a node) is kept as `exported_node`, the name it gets at
    node scope (the sinks' honor_labels=false rule, sinks/series.py). Kept rather than dropped:
    dropping it would merge series that differ only in it, a different sum than node scope's;
    renamed because `node` names the node a record is about, and a cluster record is about none."""
    if "node" not in labels:
        return labels
    out: dict[str, str] = {}
    for name in sorted(labels):
        new = name
        while new in out or new == "node":
            new = "exported_" + new
        out[new] = labels[name]
    return out


def _cluster_split_sid(series: str) -> tuple[str, dict[str, str]]:
    metric, labels = _split_sid(series)
    return metric, cluster_labels(labels)


def restore_failures(counters: dict[str, float]) -> float | None:
    found = [v for s, v in counters.items() if s.partition("|")[0] in RESTORE_FAILURES]
    return sum(found) if found else None


def node_health(partial: dict, settings: StreamSettings) -> dict[str, float | None]:
    last = partial["last"]
    scrapes = partial["scrapes"]
    present = scrapes > 0 and last is not None
    up = last["up"] if present else None
    stall = last["stall"] if present else None
    return {
        "up": up,
        "missing": 0 if present else 1,
        "down": 1 if present and not up else 0,
        "no_kube_proxy_metrics": 1 if present and up and not last["kpm"] else 0,
        "scrapes": scrapes,
        "scrapes_failed": scrapes - partial["up"],
        "duplicates": partial["dups"],
        "seconds_since_last_sync": last["since_sync"] if present else None,
        "stalled_for_s": stall,
        "stalled": None if stall is None else (1 if stall > settings.stall_threshold_s else 0),
        "restore_failures": restore_failures(partial["c"]),
        "left": 1 if partial.get("left") else 0,
        # only when some scrape was rejected (clock_skew / too_old): good input's bytes stay as before
        **({"scrapes_rejected": partial["rej"]} if partial.get("rej") else {}),
    }


def merge(partials: list[dict], settings: StreamSettings) -> dict:
    """Merge node partials of one cluster window, in node order (deterministic sums)."""
    return merge_in_order(sorted(partials, key=lambda p: p["node"]), settings)


def merge_in_order(partials: Iterable[dict], settings: StreamSettings) -> dict:
    """`merge` of partials given in node order, one at a time (a generator decoding them
    holds one partial, not the window's thousands)."""
    acc: dict[str, Any] = {"c": {}, "h": {}, "g": {}}
    health = {"nodes": 0, "nodes_up": 0, "nodes_down": 0, "nodes_missing": 0, "nodes_no_kube_proxy_metrics": 0,
              "nodes_stalled": 0, "nodes_left": 0, "scrapes": 0, "scrapes_failed": 0, "duplicates": 0,
              "max_seconds_since_last_sync": None, "max_stalled_for_s": None, "restore_failures": None}
    present = 0
    counters, hists, gauges = acc["c"], acc["h"], acc["g"]
    counter_get, hist_get, gauge_get = counters.get, hists.get, gauges.get
    hist_merge, gauge_merge = HistogramDeltas.merge, GaugeStats.merge
    for partial in partials:
        for series, inc in sorted(partial["c"].items()):
            counters[series] = counter_get(series, 0.0) + inc  # CounterIncrease.merge
        for series, window in sorted(partial["h"].items()):
            h = hist_get(series)
            if h is None:
                h = hists[series] = HistogramDeltas.new()
            hist_merge(h, window)
        for series, window in sorted(partial["g"].items()):
            gauges[series] = gauge_merge(gauge_get(series), window)
        h = node_health(partial, settings)
        health["nodes"] += 1
        present += 1 if partial["scrapes"] else 0
        health["nodes_up"] += 1 if h["up"] == 1 and not h["no_kube_proxy_metrics"] else 0
        health["nodes_down"] += h["down"]
        health["nodes_missing"] += h["missing"]
        health["nodes_no_kube_proxy_metrics"] += h["no_kube_proxy_metrics"]
        health["nodes_stalled"] += 1 if h["stalled"] else 0
        health["nodes_left"] += h["left"]
        health["scrapes"] += h["scrapes"]
        health["scrapes_failed"] += h["scrapes_failed"]
        health["duplicates"] += h["duplicates"]
        for key, src in (("max_seconds_since_last_sync", "seconds_since_last_sync"),
                         ("max_stalled_for_s", "stalled_for_s")):
            if h[src] is not None:
                health[key] = h[src] if health[key] is None else max(health[key], h[src])
        if h["restore_failures"] is not None:
            health["restore_failures"] = (health["restore_failures"] or 0.0) + h["restore_failures"]
        if "scrapes_rejected" in h:
            health["scrapes_rejected"] = health.get("scrapes_rejected", 0) + h["scrapes_rejected"]
    acc["health"] = health
    acc["present"] = present
    return acc


def pooled_count(history: list) -> float:
    count = 0.0
    for entry in history:
        count += entry[2]
    return count


def slo_values(history: list, settings: StreamSettings) -> dict[str, float | None]:
    """The values of an SLO record.

    history: [[step window start, pooled bucket deltas, count, q, own q-quantile], ...]
    (aggregators.slo_entry; earlier versions wrote the first three only) of the step windows in
    [end − slo_window, end). Values: the pooled p99 (`sli`), `threshold_s`, `within` (1 when
    sli ≤ threshold, null without observations), `share_within` (fraction of step windows
    with observations whose own pooled p99 ≤ threshold), `count`, `windows`,
    `windows_with_data`.
    """
    q = settings.slo_quantile
    count = pooled_count(history)
    # of the windows' buckets added by bound in history order (sum_buckets)
    sli = pooled_quantile(q, [entry[1] for entry in history]) if count > 0 else None
    per_window = []
    for entry in history:
        if entry[2] > 0:
            per_window.append(entry_quantile(entry, q))
    within_windows = sum(1 for p in per_window if p <= settings.slo_threshold_s)
    return {
        quantile_name(q): sli,
        "threshold_s": settings.slo_threshold_s,
        "within": None if sli is None else (1 if sli <= settings.slo_threshold_s else 0),
        "share_within": within_windows / len(per_window) if per_window else None,
        "count": count,
        "windows": len(history),
        "windows_with_data": len(per_window),
    }


# -- the records of a close, encoded without a DerivedRecord each -------------------------------
#
# What the stages send: the records of tests/streams/record_reference.py (DerivedRecord objects,
# the plain statement of each record) as encoded entries
# (send order, topic, key, bytes, timestamp), built here straight from the window's data. The
# values are the same functions' (flush, node_health, slo_values); what a series id gives (its
# metric and labels, their JSON, their order) is worked out once per series id;
# tests/streams/test_aggregate_outputs.py checks the entries against the records' path.

#: series id -> (metric, its JSON, `<metric>_count`, its JSON, labels JSON, sorted label items),
#: per scope (cluster records rename a `node` label)
_SERIES: dict[str, dict[str, tuple]] = {"node": {}, "cluster": {}}
_MAX_SERIES = 20_000
_HEALTH_JSON = dumps(HEALTH_METRIC)
_NETPROG_JSON = dumps(NETPROG)
_NO_LABELS_JSON = dumps({})


def _series(scope: str, series: str) -> tuple:
    cache = _SERIES[scope]
    info = cache.get(series)
    if info is None:
        metric, labels = (_cluster_split_sid if scope == "cluster" else _split_sid)(series)
        count = metric + "_count"
        info = (metric, dumps(metric), count, dumps(count), dumps(dict(labels)), sorted(labels.items()))
        if len(cache) >= _MAX_SERIES:
            cache.clear()
        cache[series] = info
    return info


def data_outputs(encoder: RecordEncoder, scope: str, node: str | None, start: int, size: int, acc: dict,
                 settings: StreamSettings) -> list[tuple]:
    """The rates, quantiles and gauges records of one window's accumulated data (node or
    merged), encoded by `encoder` (of that window)."""
    topics = settings.topics
    rates_topic, quantiles_topic, gauges_topic = topics.rates, topics.quantiles, topics.gauges
    end = start + size
    size_s = size / 1000.0
    order_node = node or ""
    key = encoder.key
    encode = encoder.encode
    increase = CounterIncrease.flush
    out: list[tuple] = []
    counters, hists, gauges = acc["c"], acc["h"], acc["g"]
    known = _SERIES[scope].get  # _series' cache, looked up here first (a call less per record)
    for series in sorted(counters):
        metric, metric_json, _, _, labels_json, items = known(series) or _series(scope, series)
        out.append(((end, "rates", scope, order_node, metric, items, start), rates_topic, key,
                    encode("rates", metric_json, labels_json, increase(counters[series], size_s)), end))
    quantiles = settings.quantiles
    for series in sorted(hists):
        window = hists[series]
        metric, metric_json, count, count_json, labels_json, items = known(series) or _series(scope, series)
        out.append(((end, "rates", scope, order_node, count, items, start), rates_topic, key,
                    encode("rates", count_json, labels_json, increase(window[1], size_s)), end))
        out.append(((end, "quantiles", scope, order_node, metric, items, start), quantiles_topic, key,
                    encode("quantiles", metric_json, labels_json, HistogramDeltas.flush(window, quantiles)), end))
    for series in sorted(gauges):
        metric, metric_json, _, _, labels_json, items = known(series) or _series(scope, series)
        if metric.endswith(SKIP_GAUGE_SUFFIX):
            continue
        out.append(((end, "gauges", scope, order_node, metric, items, start), gauges_topic, key,
                    encode("gauges", metric_json, labels_json, GaugeStats.flush(gauges[series])), end))
    return out


def _health_output(encoder: RecordEncoder, scope: str, node: str | None, start: int, end: int, values: dict,
                   settings: StreamSettings) -> tuple:
    return ((end, "health", scope, node or "", HEALTH_METRIC, [], start), settings.topics.health, encoder.key,
            encoder.encode("health", _HEALTH_JSON, _NO_LABELS_JSON, values), end)


def _slo_output(scope: str, cluster: str, node: str | None, end: int, history: list, settings: StreamSettings,
                contributors: dict) -> tuple:
    start = end - settings.slo_window_s * 1000
    encoder = RecordEncoder(scope, cluster, node, start, end, contributors)
    return ((end, "slo", scope, node or "", NETPROG, [], start), settings.topics.slo, encoder.key,
            encoder.encode("slo", _NETPROG_JSON, _NO_LABELS_JSON, slo_values(history, settings)), end)


def node_outputs(partial: dict, settings: StreamSettings) -> list[tuple]:
    """Everything a closed node window publishes (health always; data when it had scrapes), as
    (send order, topic, key, bytes, timestamp) entries."""
    cluster, node, start, size = partial["cluster"], partial["node"], partial["start_ms"], partial["size_ms"]
    contributors = {"scrapes": partial["scrapes"], "nodes": 1 if partial["scrapes"] else 0}
    encoder = RecordEncoder("node", cluster, node, start, start + size, contributors)
    out = data_outputs(encoder, "node", node, start, size, partial, settings)
    out.append(_health_output(encoder, "node", node, start, start + size, node_health(partial, settings), settings))
    if "slo" in partial:
        out.append(_slo_output("node", cluster, node, start + size, partial["slo"], settings, contributors))
    return out


def cluster_outputs(cluster: str, size: int, start: int, merged: dict, settings: StreamSettings,
                    slo_history: list | None = None) -> list[tuple]:
    """Everything a closed cluster window publishes, as node_outputs' entries."""
    contributors = {"nodes": merged["present"], "members": merged["health"]["nodes"],
                    "scrapes": merged["health"]["scrapes"]}
    encoder = RecordEncoder("cluster", cluster, None, start, start + size, contributors)
    out = data_outputs(encoder, "cluster", None, start, size, merged, settings)
    out.append(_health_output(encoder, "cluster", None, start, start + size, merged["health"], settings))
    if slo_history is not None:
        out.append(_slo_output("cluster", cluster, None, start + size, slo_history, settings, contributors))
    return out
