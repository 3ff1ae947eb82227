"""The derived records of a window close as DerivedRecord objects, in the order they are sent:
the plain statement of what the stages publish, which the stages' encoded path
(streams/aggregate.py: node_outputs / cluster_outputs, written without an object per record) is
held equal to, entry for entry and byte for byte (tests/streams/test_aggregate_outputs.py)."""

from __future__ import annotations

from contracts.derived import DerivedRecord
from streams.aggregate import (HEALTH_METRIC, SKIP_GAUGE_SUFFIX, _cluster_split_sid, _split_sid, node_health,
                               slo_values)
from streams.aggregators import CounterIncrease, GaugeStats, HistogramDeltas
from streams.config import StreamSettings
from streams.node_state import NETPROG


def _common(kind: str, scope: str, cluster: str, node: str | None, start: int, size: int, metric: str,
            labels: dict, values: dict, contributors: dict) -> DerivedRecord:
    return DerivedRecord(kind=kind, scope=scope, cluster=cluster, node=node, window_start_ms=start,
                         window_end_ms=start + size, metric=metric, values=values, labels=labels,
                         contributors=contributors)


def data_records(scope: str, cluster: str, node: str | None, start: int, size: int, acc: dict,
                 contributors: dict, settings: StreamSettings) -> list[DerivedRecord]:
    """rates, quantiles and gauges of one window's accumulated data (node or merged)."""
    size_s = size / 1000.0
    out: list[DerivedRecord] = []
    split_sid = _cluster_split_sid if scope == "cluster" else _split_sid
    for series in sorted(acc["c"]):
        metric, labels = split_sid(series)
        out.append(_common("rates", scope, cluster, node, start, size, metric, labels,
                           CounterIncrease.flush(acc["c"][series], size_s), contributors))
    for series in sorted(acc["h"]):
        window = acc["h"][series]
        metric, labels = split_sid(series)
        # the observation count is a counter of its own: its increase and rate
        out.append(_common("rates", scope, cluster, node, start, size, metric + "_count", labels,
                           CounterIncrease.flush(window[1], size_s), contributors))
        out.append(_common("quantiles", scope, cluster, node, start, size, metric, labels,
                           HistogramDeltas.flush(window, settings.quantiles), contributors))
    for series in sorted(acc["g"]):
        metric, labels = split_sid(series)
        if metric.endswith(SKIP_GAUGE_SUFFIX):
            continue
        out.append(_common("gauges", scope, cluster, node, start, size, metric, labels,
                           GaugeStats.flush(acc["g"][series]), contributors))
    return out


def node_records(partial: dict, settings: StreamSettings) -> list[DerivedRecord]:
    """Everything a closed node window publishes (health always; data when it had scrapes)."""
    cluster, node, start, size = partial["cluster"], partial["node"], partial["start_ms"], partial["size_ms"]
    contributors = {"scrapes": partial["scrapes"], "nodes": 1 if partial["scrapes"] else 0}
    out = data_records("node", cluster, node, start, size, partial, contributors, settings)
    out.append(_common("health", "node", cluster, node, start, size, HEALTH_METRIC, {},
                       node_health(partial, settings), contributors))
    if "slo" in partial:
        out.append(slo_record("node", cluster, node, start + size, partial["slo"], settings,
                              contributors))
    return out


def cluster_records(cluster: str, size: int, start: int, merged: dict, settings: StreamSettings,
                    slo_history: list | None = None) -> list[DerivedRecord]:
    contributors = {"nodes": merged["present"], "members": merged["health"]["nodes"],
                    "scrapes": merged["health"]["scrapes"]}
    out = data_records("cluster", cluster, None, start, size, merged, contributors, settings)
    out.append(_common("health", "cluster", cluster, None, start, size, HEALTH_METRIC, {},
                       merged["health"], contributors))
    if slo_history is not None:
        out.append(slo_record("cluster", cluster, None, start + size, slo_history, settings, contributors))
    return out


def slo_record(scope: str, cluster: str, node: str | None, end: int, history: list,
               settings: StreamSettings, contributors: dict) -> DerivedRecord:
    """The network-programming SLI over the rolling SLO window ending at `end` (values: see
    slo_values)."""
    span = settings.slo_window_s * 1000
    return DerivedRecord(kind="slo", scope=scope, cluster=cluster, node=node, window_start_ms=end - span,
                         window_end_ms=end, metric=NETPROG, values=slo_values(history, settings), labels={},
                         contributors=contributors)


def record_order(r: DerivedRecord) -> tuple:
    """The order records of one close are sent in."""
    return (r.window_end_ms, r.kind, r.scope, r.node or "", r.metric, sorted(r.labels.items()), r.window_start_ms)


def sort_records(records: list[DerivedRecord]) -> list[DerivedRecord]:
    return sorted(records, key=record_order)


def encoded_records(records: list[DerivedRecord], topics) -> list[tuple]:
    """(send order, topic, key, bytes, timestamp) of records: the entries Outbox.encoded sends."""
    return [(record_order(r), getattr(topics, r.kind), r.key, r.encode(), r.window_end_ms) for r in records]
