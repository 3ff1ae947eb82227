"""Per-node processing, framework-free: previous node state + one ScrapeRecord → new state
and the window partials it contributes to.

State is a plain JSON-able dict (what the changelog-backed table stores, encoded with
orjson), kept compact:

    {"cluster": str, "node": str,
     "off": last processed input offset (replays after a restart are recognised by it),
     "ts": scrape_ts_ms of the last processed scrape (dedupe / order),
     "seen": scrape_ts_ms of the last scrape of any kind,
     "first": {size_ms: start of the first window the node takes part in},
     "cb": {series id: counter baseline}, "hb": {series id: histogram baseline},
     "win": {size_ms: {start_ms: open partial}},
     "slo": [[start_ms, {le: count}, count, q, q-quantile], ...],  # last step windows, for the rolling SLI
     "done": {size_ms: end of the last window closed for the node}}

`done` makes closing idempotent: the stage writes node states before the partition state
that records the close, so after a crash between the two the close is repeated, and a node
that already took part in it is skipped (its outputs were acknowledged before any state was
written).

A series id is `metric|{"label":"value"}` (sorted JSON labels): a hashable string that
survives JSON. Metric names drop the `kubeproxy_` prefix; the legacy
`sync_proxy_rules_latency_microseconds` histogram becomes `sync_proxy_rules_duration_seconds`
in seconds (its bounds convert exactly).
"""

from __future__ import annotations

import math
from itertools import chain
from operator import itemgetter, sub
from typing import Any

import orjson

from contracts.codec import float_from_json, float_to_json
from contracts.records import ScrapeRecord
from contracts.records_fast import DecodedScrape, ScrapeShape
from streams.aggregators import (CounterIncrease, GaugeStats, HistogramDeltas, les_json, les_keys, picker,
                                 slo_entry, sum_buckets)
from streams.config import StreamSettings
from streams.deltas import MICROSECONDS, HistogramSnapshot, to_seconds
from streams.quantiles import parse_le
from streams.windows import window_start

_isfinite = math.isfinite
_INF = math.inf
_first, _second = itemgetter(0), itemgetter(1)

PREFIX = "kubeproxy_"
LEGACY = {"kubeproxy_sync_proxy_rules_latency_microseconds": ("sync_proxy_rules_duration_seconds", MICROSECONDS)}
LAST_SYNC = "sync_proxy_rules_last_timestamp_seconds"
LAST_QUEUED = "sync_proxy_rules_last_queued_timestamp_seconds"
NETPROG = "network_programming_duration_seconds"


# -- series ids ---------------------------------------------------------------------------

def sid(metric: str, labels: dict[str, str]) -> str:
    if not labels:
        return metric + "|{}"
    return metric + "|" + orjson.dumps(labels, option=orjson.OPT_SORT_KEYS).decode()


def split_sid(series: str) -> tuple[str, dict[str, str]]:
    metric, _, labels = series.partition("|")
    return metric, orjson.loads(labels)


def metric_name(family: str) -> tuple[str, float]:
    """Output metric name and unit scale of a kube-proxy family."""
    legacy = LEGACY.get(family)
    if legacy:
        return legacy
    return (family[len(PREFIX):] if family.startswith(PREFIX) else family), 1.0


# -- one scrape, grouped ------------------------------------------------------------------

class Scrape:
    """A scrape's samples grouped by kind: counters, gauges, histograms (by series id)."""

    __slots__ = ("counters", "gauges", "hists")

    def __init__(self) -> None:
        self.counters: dict[str, float] = {}
        self.gauges: dict[str, float] = {}
        self.hists: dict[str, HistogramSnapshot] = {}


_CLASS_CACHE: dict[str, tuple] = {}
_LE_CACHE: dict[str, float] = {}
_EMPTY = "|{}"


def _le(text: str) -> float | None:
    le = _LE_CACHE.get(text)
    if le is None:
        try:
            le = parse_le(text)
        except ValueError:
            return None
        if len(_LE_CACHE) < 100_000:
            _LE_CACHE[text] = le
    return le


def _info(name: str, fams) -> tuple:
    """(kind, family, part, metric, scale) of a sample name; cached, re-checked cheaply."""
    info = _CLASS_CACHE.get(name)
    if info is not None and fams.get(info[1]) == info[5]:
        return info
    kind, family, part = _classify(name, fams)
    metric, scale = metric_name(family) if kind else ("", 1.0)
    info = (kind, family, part, metric, scale, fams.get(family))
    if kind and len(_CLASS_CACHE) < 10_000:  # an unknown name may get a family later
        _CLASS_CACHE[name] = info
    return info


_ROW_CACHE: dict[tuple, tuple] = {}


def _row(name: str, labels: dict, fams) -> tuple:
    """(kind, series id, part, le, scale, family, family type) of a sample, uncached."""
    kind, family, part, metric, scale, ftype = _info(name, fams)
    if not kind:
        return ("", "", "", None, 1.0, family, ftype)
    if kind == "histogram" and part == "b":
        le_text = labels.get("le")
        le = None if le_text is None else _le(le_text)
        if le is None:
            return ("", "", "", None, 1.0, family, ftype)  # skipped, like a bucket without a usable le
        if len(labels) == 1:
            series = metric + _EMPTY
        else:
            rest = dict(labels)
            del rest["le"]
            series = sid(metric, rest)
        return (kind, series, part, le, scale, family, ftype)
    return (kind, metric + _EMPTY if not labels else sid(metric, labels), part, None, scale, family, ftype)


class _Plan:
    """Where a scrape of a known shape (same sample names and labels, in the same order,
    same families) puts each sample: what `_group_rows` would do, decided once. A node sends
    the same shape scrape after scrape, and so do nodes of one version: applying a plan
    costs a few list operations instead of a classification per sample."""

    __slots__ = ("labels", "fams", "counters", "gauges", "hists")

    def __init__(self, labels: list, fams: dict, counters: list, gauges: list, hists: list) -> None:
        self.labels = labels  # the samples' label dicts, in order
        self.fams = fams
        self.counters = counters  # [(series id, sample index)]
        self.gauges = gauges
        self.hists = hists  # [(series id, bounds, bucket sample indices, count index | None, sum index | None, scale)]


#: names of a scrape's samples, in order -> plans of the shapes seen with those names
_PLANS: dict[tuple, list[_Plan]] = {}
_MAX_PLANS = 1000


def _plan_of(fams, names: tuple, labels: list) -> _Plan | None:
    """The grouping plan of a scrape shape: `_group_rows` run over sample indices."""
    counters: dict[str, int] = {}
    gauges: dict[str, int] = {}
    hists: dict[str, list] = {}
    for i, (name, sample_labels) in enumerate(zip(names, labels)):
        try:
            row = _row(name, sample_labels, fams)
        except TypeError:
            return None  # an unhashable label value: the general path decides
        kind = row[0]
        if not kind:
            continue
        if kind == "counter":
            counters[row[1]] = i
        elif kind == "gauge":
            gauges[row[1]] = i
        else:
            entry = hists.get(row[1])
            if entry is None:
                entry = hists[row[1]] = [{}, None, None, row[4]]
            if row[2] == "b":
                entry[0][row[3]] = i
            elif row[2] == "c":
                entry[1] = i
            else:
                entry[2] = i
    return _Plan(labels, dict(fams), list(counters.items()), list(gauges.items()),
                 [(series, tuple(b), tuple(b.values()), c, t, scale)
                  for series, (b, c, t, scale) in hists.items() if math.inf in b])


def group_samples(record: ScrapeRecord) -> Scrape:
    """The scrape's samples by kind and series id (by its shape's plan when it has one)."""
    samples = record.samples
    names = tuple([s[0] for s in samples])
    labels = [s[1] for s in samples]
    plans = _PLANS.get(names)
    fams = record.families
    if plans is not None:
        for plan in plans:
            if plan.labels == labels and plan.fams == fams:
                return _apply_plan(plan, [s[2] for s in samples])
    elif len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    out = _group_rows(record)
    plan = _plan_of(fams, names, labels)
    if plan is not None:
        plans = _PLANS.setdefault(names, [])
        if len(plans) < 8:
            plans.append(plan)
    return out


def _apply_plan(plan: _Plan, values: list) -> Scrape:
    out = Scrape()
    out.counters = {series: values[i] for series, i in plan.counters}
    out.gauges = {series: values[i] for series, i in plan.gauges}
    out.hists = _plan_hists(plan, values)
    return out


def _plan_hists(plan: _Plan, values: list) -> dict[str, HistogramSnapshot]:
    hists = {}
    nan = math.nan
    for series, les, at, count_at, sum_at, scale in plan.hists:
        buckets = dict(zip(les, [values[i] for i in at]))
        snap = HistogramSnapshot(buckets, buckets[math.inf] if count_at is None else values[count_at],
                                 nan if sum_at is None else values[sum_at])
        hists[series] = to_seconds(snap, scale) if scale != 1.0 else snap
    return hists


class _HistPlan:
    """A plan's histograms, their buckets as one list (each series' sorted by bound)."""

    __slots__ = ("series", "les_json", "keys", "buckets_of", "parts", "entries")

    def __init__(self, entries: list) -> None:
        # entries: (series, bounds as JSON, le keys, bucket indices by bound, count index, sum index)
        self.series = [e[0] for e in entries]
        self.les_json = [e[1] for e in entries]
        self.keys = [e[2] for e in entries]
        self.buckets_of = picker([i for e in entries for i in e[3]])  # values -> all series' bucket counts
        self.parts = []  # slice of each series' buckets in buckets_of(values)
        self.entries = []  # (series, bounds as JSON, keys, index of the +Inf bucket, count index, sum index, part)
        start = 0
        for series, bounds_json, keys, at, count_at, sum_at in entries:
            part = slice(start, start + len(at))
            start += len(at)
            self.parts.append(part)
            self.entries.append((series, bounds_json, keys, part.stop - 1, count_at, sum_at, part))


class _Ingest:
    """A plan as parallel lists, for folding a scrape of its shape into the node state
    straight from its values (`_fold_*_fast`): no dict per kind, no snapshot per histogram,
    all histograms' buckets stepped as one list, the common case of each rule inline."""

    __slots__ = ("plan", "counters", "counter_at", "gauges", "gauge_at", "sync", "hists")

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.counters = [series for series, _ in plan.counters]
        self.counter_at = [i for _, i in plan.counters]
        self.gauges = [series for series, _ in plan.gauges]
        self.gauge_at = [i for _, i in plan.gauges]
        # the gauges sync_health reads, in the gauges' order: (last sync or last queued, labels, index)
        self.sync = [(metric == LAST_SYNC, labels, i) for series, i in plan.gauges
                     for metric, _, labels in [series.partition("|")] if metric in (LAST_SYNC, LAST_QUEUED)]
        # (series, bounds as JSON, le keys, bucket indices by bound, count index, sum index) of
        # each histogram, or None when one is scaled or has a NaN bound (the general rules)
        hists: list | None = []
        for series, les, at, count_at, sum_at, scale in plan.hists:
            if scale != 1.0 or any(le != le for le in les):
                hists = None
                break
            by_bound = sorted(zip(les, at))
            bounds = tuple(le for le, _ in by_bound)
            hists.append((series, les_json(bounds), les_keys(bounds), [i for _, i in by_bound], count_at, sum_at))
        self.hists = None if hists is None else _HistPlan(hists)


#: a scrape shape (contracts.records_fast) -> its ingest plan, None if it has none
_INGESTS: dict[ScrapeShape, _Ingest | None] = {}


def _ingest_of(shape: ScrapeShape) -> _Ingest | None:
    try:
        return _INGESTS[shape]
    except KeyError:
        pass
    if len(_INGESTS) >= _MAX_PLANS:
        _INGESTS.clear()
    plan = _plan_of(shape.families, shape.names, list(shape.labels))
    ingest = _INGESTS[shape] = None if plan is None else _Ingest(plan)
    return ingest


def _group_rows(record: ScrapeRecord) -> Scrape:
    fams = record.families
    out = Scrape()
    raw_hists: dict[str, list] = {}  # sid -> [buckets, count, sum, scale]
    counters, gauges = out.counters, out.gauges
    cache = _ROW_CACHE
    fams_get = fams.get
    for sample in record.samples:
        name, labels, value = sample[0], sample[1], sample[2]
        key = (name, *labels.items()) if labels else name
        try:
            row = cache.get(key)
        except TypeError:  # a label value that is not a string (the contract allows it)
            row = key = None
        # a cached classification holds while the family keeps its TYPE in this scrape
        if row is None or fams_get(row[5]) != row[6]:
            row = _row(name, labels, fams)
            if row[0] and key is not None and len(cache) < 100_000:
                cache[key] = row
        kind = row[0]
        if not kind:
            continue
        if kind == "counter":
            counters[row[1]] = value
        elif kind == "gauge":
            gauges[row[1]] = value
        else:
            series, part = row[1], row[2]
            entry = raw_hists.get(series)
            if entry is None:
                entry = raw_hists[series] = [{}, None, math.nan, row[4]]
            if part == "b":
                entry[0][row[3]] = value
            elif part == "c":
                entry[1] = value
            else:
                entry[2] = value
    for series, (buckets, count, total, scale) in raw_hists.items():
        if math.inf not in buckets:
            continue  # no +Inf bucket: not a usable classic histogram
        snap = HistogramSnapshot(buckets, buckets[math.inf] if count is None else count, total)
        out.hists[series] = to_seconds(snap, scale) if scale != 1.0 else snap
    return out


def _classify(name: str, fams) -> tuple[str, str, str]:
    kind = fams.get(name)
    if kind in ("counter", "gauge"):
        return kind, name, ""
    for suffix, part in (("_bucket", "b"), ("_count", "c"), ("_sum", "s")):
        if name.endswith(suffix) and fams.get(name[: -len(suffix)]) == "histogram":
            return "histogram", name[: -len(suffix)], part
    if name.endswith("_total") and fams.get(name[:-6]) == "counter":  # OpenMetrics family names
        return "counter", name[:-6], ""
    return "", "", ""


# -- state --------------------------------------------------------------------------------

def new_state(record: ScrapeRecord | DecodedScrape) -> dict[str, Any]:
    return {"cluster": record.cluster, "node": record.node, "off": -1, "ts": None, "seen": None,
            "first": {}, "cb": {}, "hb": {}, "win": {}, "slo": []}


def new_partial() -> dict[str, Any]:
    return {"scrapes": 0, "up": 0, "dups": 0, "last": None, "c": {}, "h": {}, "g": {}}


def windows_of(ts_ms: int, settings: StreamSettings) -> list[tuple[int, int]]:
    """(size_ms, start_ms) of every window size for an event time."""
    return [(size, window_start(ts_ms, size)) for size in settings.sizes_ms]


def open_partial(state: dict, size: int, start: int) -> dict:
    per_size = state["win"].setdefault(str(size), {})
    partial = per_size.get(str(start))
    if partial is None:
        partial = per_size[str(start)] = new_partial()
        state["first"].setdefault(str(size), start)
    return partial


def count_duplicate(state: dict, ts_ms: int, settings: StreamSettings) -> None:
    """A scrape not newer than the last processed one (re-delivery or out of order): counted
    in the open window it falls in, if that window is still open for the node."""
    for size, start in windows_of(ts_ms, settings):
        partial = state["win"].get(str(size), {}).get(str(start))
        if partial is not None:
            partial["dups"] += 1


def apply_scrape(state: dict, record: ScrapeRecord, settings: StreamSettings) -> None:
    """Fold one new scrape (newer than state["ts"], windows open) into the node state."""
    targets, last = _count_scrape(state, record, settings)
    if not record.up or not record.kube_proxy_metrics:
        return  # keep the baselines: the next good scrape's delta covers the gap
    scrape = group_samples(record)
    _fold_counters(state, targets, scrape.counters)
    _fold_hists(state, targets, scrape.hists)
    _fold_gauges(targets, scrape.gauges)
    last["since_sync"], last["stall"] = sync_health(scrape.gauges, record.scrape_ts_ms)


def apply_decoded(state: dict, scrape: DecodedScrape, settings: StreamSettings) -> None:
    """apply_scrape for a decoded scrape: one of a known shape is folded by its ingest plan
    (same state, bit for bit; tests/streams/test_ingest_fast.py holds them equal)."""
    ingest = None if scrape.shape is None else _ingest_of(scrape.shape)
    if ingest is None:
        apply_scrape(state, scrape.record, settings)
        return
    targets, last = _count_scrape(state, scrape, settings)
    if not scrape.up or not scrape.kube_proxy_metrics:
        return
    values = scrape.values
    if not _fold_counters_fast(state, targets, ingest.counters, [values[i] for i in ingest.counter_at]):
        _fold_counters(state, targets, {series: values[i] for series, i in ingest.plan.counters})
    if ingest.hists is None or not _fold_hists_fast(state, targets, ingest.hists, values):
        _fold_hists(state, targets, _plan_hists(ingest.plan, values))
    _fold_gauges_fast(targets, ingest.gauges, [values[i] for i in ingest.gauge_at])
    last["since_sync"], last["stall"] = _sync_health_fast(ingest.sync, values, scrape.scrape_ts_ms)


def _count_scrape(state: dict, record: ScrapeRecord | DecodedScrape, settings: StreamSettings) -> tuple[list, dict]:
    """Count the scrape in its open windows; (those windows' partials, its `last` entry)."""
    ts = record.scrape_ts_ms
    targets = [open_partial(state, size, start) for size, start in windows_of(ts, settings)]
    state["ts"] = ts
    state["seen"] = ts
    last: dict[str, Any] = {"ts": ts, "up": record.up, "kpm": 1 if record.kube_proxy_metrics else 0,
                            "since_sync": None, "stall": None}
    for partial in targets:
        partial["scrapes"] += 1
        partial["up"] += 1 if record.up else 0
        partial["last"] = last
    return targets, last


def _fold_counters(state: dict, targets: list, counters: dict[str, float]) -> None:
    """Prometheus' reset rule, per series; series gone from the scrape are forgotten."""
    old_cb = state["cb"]
    new_cb: dict[str, float] = {}
    counter_step, counter_push = CounterIncrease.step, CounterIncrease.push
    for series, value in counters.items():
        inc, baseline, _reset = counter_step(old_cb.get(series), value)
        if baseline is not None:
            new_cb[series] = baseline
        for partial in targets:
            counter_push(partial["c"], series, inc)
    state["cb"] = new_cb


def _fold_counters_fast(state: dict, targets: list, series: list, values: list) -> bool:
    """_fold_counters when every series has a finite baseline and a finite value not below
    it (then the increase is value − baseline and the value the new baseline); False, with
    nothing changed, otherwise."""
    baselines = state["cb"]
    increases = []
    for name, value in zip(series, values):
        previous = baselines.get(name)
        # False for a NaN, an infinity, a value that went down (a reset) or no baseline
        if previous is None or not -_INF < previous <= value < _INF:
            return False
        increases.append(value - previous)
    state["cb"] = dict(zip(series, values))
    for partial in targets:
        window = partial["c"]
        for name, increase in zip(series, increases):
            window[name] = window.get(name, 0.0) + increase
    return True


def _fold_hists(state: dict, targets: list, hists: dict[str, HistogramSnapshot]) -> None:
    old_hb = state["hb"]
    new_hb: dict[str, list] = {}
    hist_step, hist_push = HistogramDeltas.step, HistogramDeltas.push
    for series, snap in hists.items():
        keys, deltas, dcount, dsum, baseline = hist_step(old_hb.get(series), snap)
        if baseline is not None:
            new_hb[series] = baseline
        for partial in targets:
            h = partial["h"].get(series)
            if h is None:
                h = partial["h"][series] = HistogramDeltas.new()
            hist_push(h, keys, deltas, dcount, dsum)
    state["hb"] = new_hb


def _fold_hists_fast(state: dict, targets: list, hists: _HistPlan, values: list) -> bool:
    """_fold_hists when every series steps by HistogramDeltas.step's common case (a baseline
    with the same bounds, every count finite, nothing went down: aggregators._common_step),
    all series' buckets as one list; False, with nothing changed, otherwise."""
    previous = list(map(state["hb"].get, hists.series))
    if None in previous or list(map(_first, previous)) != hists.les_json:
        return False
    counts = list(hists.buckets_of(values))
    prev_counts = list(chain.from_iterable(map(_second, previous)))
    if len(prev_counts) != len(counts):
        return False
    deltas = list(map(sub, counts, prev_counts))
    # every count finite (a NaN or an infinity makes the sum one) and none went down
    if counts and not (_isfinite(sum(counts)) and _isfinite(sum(deltas)) and min(deltas) >= 0):
        return False
    nan = math.nan
    dcounts, dsums, baselines = [], [], []
    for (_series, bounds_json, _keys, last, count_at, sum_at, part), (_les, _c, prev_count, prev_sum_json) in zip(
            hists.entries, previous):
        count = counts[last] if count_at is None else values[count_at]  # the +Inf bucket is the last
        total = nan if sum_at is None else values[sum_at]
        prev_sum = prev_sum_json if type(prev_sum_json) is float else float_from_json(prev_sum_json)
        if not (_isfinite(count) and count >= prev_count):
            return False
        if total < prev_sum and _isfinite(total) and _isfinite(prev_sum):
            return False
        dcounts.append(count - prev_count)
        dsums.append(total - prev_sum)
        baselines.append([bounds_json, counts[part], count, total if -_INF < total < _INF else float_to_json(total)])
    state["hb"] = dict(zip(hists.series, baselines))
    deltas_of = list(map(deltas.__getitem__, hists.parts))
    # a series without a new observation (every delta 0; a NaN is true): a node observes few
    # syncs per scrape
    quiet = [not (dcount or dsum or any(d)) for d, dcount, dsum in zip(deltas_of, dcounts, dsums)]
    steps = list(zip(hists.series, hists.keys, deltas_of, dcounts, dsums, quiet))
    push, new = HistogramDeltas.push, HistogramDeltas.new
    for partial in targets:
        window = partial["h"]
        for series, keys, series_deltas, dcount, dsum, zero in steps:
            h = window.get(series)
            if h is None:
                h = window[series] = new()
            elif add_in_place(h, keys, series_deltas, dcount, dsum, zero):
                continue
            push(h, keys, series_deltas, dcount, dsum)
    return True


def add_in_place(window: list, keys: list, deltas: list, count: float, total: float, zero: bool) -> bool:
    """HistogramDeltas.push(window, keys, deltas, count, total) for a window partial of the
    same bucket layout (`keys`, in order) and a finite float sum, done in place and only
    where a delta is not 0 (`zero`: every one is); False, with nothing changed, otherwise.

    Exact: x + 0.0 is x for every float but -0.0, which a window never holds (its sums start
    at +0.0, and a sum of floats is -0.0 only when both terms are); an int count would turn
    float, so the count must be a float already."""
    buckets, window_count, window_total = window
    if not (type(window_total) is float and type(window_count) is float and -_INF < window_total < _INF
            and len(buckets) == len(keys) and list(buckets) == keys):
        return False
    if zero:
        return True
    window_total += total
    if not -_INF < window_total < _INF:
        return False  # a sum that is no longer finite is re-encoded (a JSON string): push's rule
    for key, delta in zip(keys, deltas):
        if delta:
            buckets[key] += delta
    window[1] = window_count + count
    window[2] = window_total
    return True


def _fold_gauges(targets: list, gauges: dict[str, float]) -> None:
    gauge_push = GaugeStats.push
    for series, value in gauges.items():
        for partial in targets:
            g = partial["g"]
            g[series] = gauge_push(g.get(series), value)


def _fold_gauges_fast(targets: list, series: list, values: list) -> None:
    """_fold_gauges, GaugeStats.push inlined for values that are all finite."""
    if not _isfinite(sum(values)):  # a NaN or an infinity makes the sum one
        _fold_gauges(targets, dict(zip(series, values)))
        return
    for partial in targets:
        window = partial["g"]
        for name, value in zip(series, values):
            stats = window.get(name)
            if stats is None:
                window[name] = [value, value, value]
                continue
            stats[0] = value
            # a min or max that is not finite is a string ("NaN", "+Inf", "-Inf"): replaced
            low, high = stats[1], stats[2]
            if type(low) is str or value < low:
                stats[1] = value
            if type(high) is str or value > high:
                stats[2] = value


def sync_health(gauges: dict[str, float], ts_ms: int) -> tuple[float | None, float | None]:
    """Seconds since the last successful sync (scrape time − last_timestamp, the oldest
    series counts), and how long a queued change has waited for a sync (scrape time −
    last_timestamp while last_queued > last_timestamp; 0 when nothing waits)."""
    synced: dict[str, float] = {}
    queued: dict[str, float] = {}
    for series, value in gauges.items():
        metric, _, labels = series.partition("|")
        if metric == LAST_SYNC and math.isfinite(value):
            synced[labels] = value
        elif metric == LAST_QUEUED and math.isfinite(value):
            queued[labels] = value
    return _sync_health(synced, queued, ts_ms)


def _sync_health_fast(sync: list, values: list, ts_ms: int) -> tuple[float | None, float | None]:
    """sync_health of a scrape folded by its ingest plan: the gauges it reads by index, their
    names already split (_Ingest.sync)."""
    synced: dict[str, float] = {}
    queued: dict[str, float] = {}
    for last_sync, labels, i in sync:
        value = values[i]
        if _isfinite(value):
            (synced if last_sync else queued)[labels] = value
    return _sync_health(synced, queued, ts_ms)


def _sync_health(synced: dict[str, float], queued: dict[str, float], ts_ms: int) -> tuple[float | None, float | None]:
    """sync_health from the finite last sync and last queued times, by labels."""
    now = ts_ms / 1000.0
    if not synced:
        return None, None
    since = round(max(now - v for v in synced.values()), 6)
    stall = 0.0
    if queued:
        for labels, s in synced.items():
            q = queued.get(labels)
            if q is not None and q > s:
                stall = max(stall, now - s)
    return since, round(stall, 6)


# -- closing ------------------------------------------------------------------------------

def close_window(state: dict, size: int, start: int, settings: StreamSettings) -> dict | None:
    """Take the node's partial of window (size, start) out of the state, as the message the
    cluster stage receives. None when the node did not exist yet at that window. A node with
    no scrape in the window gets a "missing" partial; one missing for `node_gone_after` gets
    `left` = True and the caller forgets it."""
    first = state["first"].get(str(size))
    if first is None or start < first:
        return None
    end = start + size
    done = state.setdefault("done", {})
    if end <= done.get(str(size), end - 1):
        return None  # closed and published before a crash; only the partition state missed it
    done[str(size)] = end
    per_size = state["win"].get(str(size), {})
    partial = per_size.pop(str(start), None)
    # Drop anything older (cannot happen in order, but keeps the state bounded).
    for key in [k for k in per_size if int(k) < start]:
        del per_size[key]
    end = start + size
    if partial is None:
        partial = new_partial()
    seen = state["seen"]
    left = partial["scrapes"] == 0 and seen is not None and end - seen >= settings.node_gone_after_ms
    out = {"cluster": state["cluster"], "node": state["node"], "size_ms": size, "start_ms": start,
           "status": "present" if partial["scrapes"] else "missing", "left": left, **partial}
    if size == settings.step_s * 1000:
        out["slo"] = _roll_slo(state, start, end, partial, settings)
    return out


def is_gone(partial: dict) -> bool:
    return bool(partial.get("left"))


def _roll_slo(state: dict, start: int, end: int, partial: dict, settings: StreamSettings) -> list:
    """Keep this step window's pooled network-programming buckets in the node's rolling SLO
    history; return the history covering [end − slo_window, end)."""
    pooled, count = pooled_netprog(partial)
    history = [h for h in state["slo"] if h[0] >= end - settings.slo_window_s * 1000]
    history.append(slo_entry(start, pooled, count, settings.slo_quantile))
    state["slo"] = history
    return history


def pooled_netprog(partial: dict) -> tuple[dict[str, float], float]:
    """network_programming bucket deltas of a partial, summed over all its series."""
    windows = []
    count = 0.0
    for series, (buckets, c, _s) in sorted(partial["h"].items()):
        if series.partition("|")[0] != NETPROG:
            continue
        windows.append(buckets)
        count += c
    return sum_buckets(windows), count


def forget_old_windows(state: dict, closed_through: dict[str, int]) -> None:
    """Drop partials of windows the partition already closed (restored or odd states)."""
    for size, per_size in state["win"].items():
        through = closed_through.get(size)
        if through is None:
            continue
        for key in [k for k in per_size if int(k) + int(size) <= through]:
            del per_size[key]
