"""A quixstreams peer of `kpp stream`, for bench/bench_streams.py: the core of the same job
written the way quixstreams is meant to be used, to compare CPU per scrape on one input topic.

    .venv/bin/python bench/peer_quixstreams.py --bootstrap HOST:PORT --input TOPIC \
        --output TOPIC --group GROUP --state-dir DIR

What it does, per node (the Kafka key of each scrape record):
- decodes the scrape records (quixstreams' JSON deserializer, orjson);
- turns cumulative counters and the histograms of the two families
  kubeproxy_sync_proxy_rules_duration_seconds and kubeproxy_network_programming_duration_seconds
  into deltas since the node's previous scrape, in a stateful `apply` (RocksDB state, its
  changelog topic), with Prometheus' reset rule: a counter that went down restarted, its
  increase is the new value; a histogram whose count, sum or any bucket went down restarted
  as a whole; the first scrape of a series gives no increase; a changed bucket layout gives
  no delta that step; a NaN or infinite value is not a sample (the baseline stays);
- sums the deltas in 60 s event-time tumbling windows (the record's Kafka timestamp, the
  scrape time) with 30 s grace, `.reduce(...).final()`: one result when the window closes;
- per closed node-window writes ONE record: counter rates (increase / 60 s) and, per
  histogram series of the two families, the rate of its count and p50/p90/p99 (Prometheus'
  histogram_quantile interpolation over the window's bucket deltas; None without
  observations);
- at-least-once processing (quixstreams' default), committing every 2 s like `kpp stream`.

What it does NOT do, compared to `kpp stream`:
- one window size (60 s); `kpp stream` keeps 60 s and 300 s windows;
- two histogram families; `kpp stream` does every histogram family (sync full/partial too),
  the legacy microseconds histogram converted to seconds, and `_sum` means;
- no gauges (last/min/max), no health record (up, scrape count, sync stall, restore
  failures), no SLO (network-programming SLI and its burn), no cluster stage (node partials
  merged by bucket into cluster-scope records through an internal topic);
- no late-record topic (a scrape past the grace is dropped with quixstreams' log line), no
  dead-letter topic (a record it cannot process stops the application), no bound on event
  time against a trusted clock, no duplicate-scrape detection;
- no idle-partition closing: a node's last windows close only when a later scrape of the
  same node arrives (quixstreams closes windows per key);
- one output record per node-window, against one record per series and kind (rates,
  quantiles, gauges, health, SLO) in `kpp stream`: about 7.5 records per scrape there.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the pure parts below import without the `bench` extra (tests run them in `make test`)
    from quixstreams import Application, State

WINDOW_MS = 60_000
GRACE_MS = 30_000
QUANTILES = (0.5, 0.9, 0.99)
#: histogram family -> output metric name (as `kpp stream` names it)
FAMILIES = {
    "kubeproxy_sync_proxy_rules_duration_seconds": "sync_proxy_rules_duration_seconds",
    "kubeproxy_network_programming_duration_seconds": "network_programming_duration_seconds",
}
_PARTS = {family + suffix: (family, suffix) for family in FAMILIES for suffix in ("_bucket", "_count", "_sum")}


def series_id(name: str, labels: dict[str, str]) -> str:
    return name + "|" + ",".join(f"{k}={labels[k]}" for k in sorted(labels)) if labels else name + "|"


def split_series(sid: str) -> tuple[str, dict[str, str]]:
    name, _, rest = sid.partition("|")
    return name, dict(pair.split("=", 1) for pair in rest.split(",")) if rest else {}


def scrape_deltas(record: dict[str, Any], state: State) -> dict[str, Any]:
    """Counter increases and histogram bucket deltas since this node's previous scrape."""
    out: dict[str, Any] = {"c": {}, "h": {}}
    if not record.get("up") or not record.get("kube_proxy_metrics"):
        return out  # a failed scrape: the baselines stay, the next good one covers the gap
    families = record["families"]
    counters: dict[str, float] = {}
    hists: dict[str, list] = {}  # series -> [buckets {le: value}, count, sum]
    for name, labels, value, _ts in record["samples"]:
        part = _PARTS.get(name)
        if part is not None:
            family, suffix = part
            if suffix == "_bucket":
                labels = dict(labels)
                le = labels.pop("le")
                hists.setdefault(series_id(family, labels), [{}, None, None])[0][le] = value
            else:
                hist = hists.setdefault(series_id(family, labels), [{}, None, None])
                hist[1 if suffix == "_count" else 2] = value
        elif families.get(name) == "counter":
            counters[series_id(name, labels)] = value

    previous = state.get("counters", {})
    baseline: dict[str, float] = {}
    for sid, value in counters.items():
        prev = previous.get(sid)
        if not (isinstance(value, float) and math.isfinite(value)):
            if prev is not None:
                baseline[sid] = prev
            continue
        baseline[sid] = value
        out["c"][sid] = 0.0 if prev is None else (value - prev if value >= prev else value)
    state.set("counters", baseline)

    previous = state.get("hists", {})
    hist_baseline: dict[str, list] = {}
    for sid, (buckets, count, total) in hists.items():
        prev = previous.get(sid)
        values = [count, *buckets.values()]
        if not all(isinstance(v, float) and math.isfinite(v) for v in values):
            if prev is not None:
                hist_baseline[sid] = prev
            continue
        current = [buckets, count, total]
        hist_baseline[sid] = current
        zero = [{le: 0.0 for le in buckets}, 0.0, 0.0]
        if prev is None:
            out["h"][sid] = zero
            continue
        p_buckets, p_count, p_sum = prev
        went_down = (count < p_count or (total is not None and p_sum is not None and total < p_sum)
                     or any(le in p_buckets and v < p_buckets[le] for le, v in buckets.items()))
        if went_down:
            out["h"][sid] = [dict(buckets), count, total or 0.0]
        elif p_buckets.keys() != buckets.keys():
            out["h"][sid] = zero
        else:
            out["h"][sid] = [{le: v - p_buckets[le] for le, v in buckets.items()}, count - p_count,
                             (total - p_sum) if total is not None and p_sum is not None else 0.0]
    state.set("hists", hist_baseline)
    return out


def add_deltas(window: dict[str, Any], deltas: dict[str, Any]) -> dict[str, Any]:
    """The window reducer: sums the scrape's deltas into the window's."""
    counters = window["c"]
    for sid, inc in deltas["c"].items():
        counters[sid] = counters.get(sid, 0.0) + inc
    hists = window["h"]
    for sid, (buckets, count, total) in deltas["h"].items():
        acc = hists.get(sid)
        if acc is None:
            hists[sid] = [dict(buckets), count, total]
            continue
        acc_buckets = acc[0]
        for le, delta in buckets.items():
            acc_buckets[le] = acc_buckets.get(le, 0.0) + delta
        acc[1] += count
        acc[2] += total
    return window


def first_deltas(deltas: dict[str, Any]) -> dict[str, Any]:
    return add_deltas({"c": {}, "h": {}}, deltas)


def histogram_quantile(q: float, buckets: dict[str, float]) -> float | None:
    """Prometheus' interpolation over cumulative bucket counts (bounds as written in `le`)."""
    ordered = sorted((float(le), count) for le, count in buckets.items())
    if len(ordered) < 2 or ordered[-1][0] != math.inf:
        return None
    # Prometheus flattens dips (a count below the previous bucket's) before interpolating
    fixed, top = [], -math.inf
    for le, count in ordered:
        top = max(top, count)
        fixed.append((le, top))
    total = fixed[-1][1]
    if total <= 0:
        return None
    rank = q * total
    for index, (le, count) in enumerate(fixed[:-1]):
        if count >= rank:
            if index == 0:
                return le if le <= 0 else le * (rank / count)
            lower, below = fixed[index - 1]
            return lower + (le - lower) * ((rank - below) / (count - below))
    return fixed[-2][0]


def window_record(result: dict[str, Any], key: bytes, _timestamp: int, _headers: Any) -> dict[str, Any]:
    """One output record per closed node-window: counter rates, histogram rates and quantiles."""
    acc = result["value"]
    seconds = (result["end"] - result["start"]) / 1000
    histograms = []
    for sid, (buckets, count, _total) in acc["h"].items():
        family, labels = split_series(sid)
        quantiles = {f"p{round(q * 100)}": (histogram_quantile(q, buckets) if count > 0 else None)
                     for q in QUANTILES}
        histograms.append({"metric": FAMILIES[family], "labels": labels, "rate": count / seconds, **quantiles})
    return {
        "node": key.decode() if isinstance(key, bytes) else key,
        "window_start_ms": result["start"],
        "window_end_ms": result["end"],
        "rates": {sid: inc / seconds for sid, inc in acc["c"].items()},
        "histograms": histograms,
    }


def build(app: Application, input_topic: str, output_topic: str) -> None:
    scrapes = app.topic(input_topic, value_deserializer="json")
    out = app.topic(output_topic, value_serializer="json")
    sdf = app.dataframe(scrapes)
    sdf = sdf.apply(scrape_deltas, stateful=True)
    sdf = (sdf.tumbling_window(duration_ms=WINDOW_MS, grace_ms=GRACE_MS)
           .reduce(reducer=add_deltas, initializer=first_deltas)
           .final())
    sdf = sdf.apply(window_record, metadata=True)
    sdf.to_topic(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True, help="scrape records topic")
    parser.add_argument("--output", required=True, help="topic of the node-window records")
    parser.add_argument("--group", required=True, help="consumer group")
    parser.add_argument("--state-dir", required=True, help="RocksDB state directory")
    args = parser.parse_args(argv)
    from quixstreams import Application

    app = Application(broker_address=args.bootstrap, consumer_group=args.group,
                      auto_offset_reset="earliest", commit_interval=2.0, state_dir=args.state_dir,
                      processing_guarantee="at-least-once", loglevel="WARNING")
    build(app, args.input, args.output)
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
