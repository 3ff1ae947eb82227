"""The stream stage's typed window aggregators, one per output kind (after VictoriaMetrics'
lib/streamaggr): counter increase, histogram bucket deltas, gauge statistics.

Each aggregator works on its compact serialized form, the JSON value node states and node
partials hold as they are (no object per series to build on every batch):

    counter increase   float                                  (partial "c")
    histogram deltas   [{le text: delta}, count delta, sum delta as JSON]  (partial "h")
    gauge statistics   [last, min, max] as JSON floats        (partial "g")

and offers `step` (one scrape against the node's baseline, counters and histograms only),
`push` (a step's result into a window), `merge` (another node's window into a cluster
window, partials taken in node order so float sums do not depend on arrival order) and
`flush` (the values of the derived record). The node close (streams/node_state.py) and the
cluster merge (streams/aggregate.py) use the same functions; tests/streams/test_aggregators.py
holds their tables.

`add_buckets` is the one bucket summer (`sum by (le)`): window pushes, the cluster merge and
the SLO pooling all go through it.
"""

from __future__ import annotations

import math
from operator import add, itemgetter, sub
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from contracts.codec import float_from_json, float_to_json
from streams.config import quantile_name
from streams.deltas import HistogramSnapshot, counter_delta, histogram_delta
from streams.quantiles import histogram_mean, histogram_quantiles, plain_quantiles

K = TypeVar("K")

_isfinite = math.isfinite


def add_buckets(into: dict[K, float], buckets: Mapping[K, float], keys: Iterable[K] | None = None) -> None:
    """Add cumulative bucket counts by upper bound into `into` (PromQL's ``sum by (le)``).

    `keys` (default: the order of `buckets`) is the order new bounds are added in. A bound
    that only some inputs have is summed over those, as PromQL does."""
    if len(into) == len(buckets) and into.keys() == buckets.keys():
        # the common case (one layout): no new bound, so the order of `keys` does not matter
        sums = list(map(add, into.values(), [buckets[k] for k in into]))
        into.update(zip(list(into), sums))
        return
    get = into.get
    for key in buckets if keys is None else keys:
        into[key] = get(key, 0.0) + buckets[key]


def sum_buckets(windows: Iterable[Mapping[K, float]]) -> dict[K, float]:
    """Bucket deltas summed by bound in the order given: the dict (values and key order) that
    add_buckets of each into an empty one gives. Of one layout (the usual case), summed
    column by column without a dict per addition."""
    nonempty = [w for w in windows if w]  # an empty one adds nothing
    summed = _column_sums(nonempty)
    if summed is not None:
        return dict(zip(*summed))
    total: dict[K, float] = {}
    for w in nonempty:
        add_buckets(total, w)
    return total


def _column_sums(nonempty: list[Mapping[K, float]]) -> tuple[list[K], list[float]] | None:
    """sum_buckets' keys and sums when the windows (none empty) share one layout in one order;
    None otherwise."""
    if not nonempty:
        return [], []
    keys = list(nonempty[0])
    if any(list(w) != keys for w in nonempty):
        return None
    sums = [0.0] * len(keys)  # 0.0 + the first: as add_buckets starts a new bound
    for w in nonempty:
        sums = list(map(add, sums, w.values()))
    return keys, sums


class CounterIncrease:
    """The increase of one counter series over a window (Prometheus' reset rule, no
    extrapolation); the node state keeps the last finite value as the baseline."""

    @staticmethod
    def step(previous: float | None, value: float) -> tuple[float, float | None, bool]:
        """(increase, new baseline, reset) of a scrape's value against the baseline: a value
        below the baseline is a restart (the increase is the value itself); a value that is
        not finite is no sample (no increase, the baseline stays)."""
        reset = previous is not None and _isfinite(value) and value < previous
        return counter_delta(previous, value), (value if _isfinite(value) else previous), reset

    @staticmethod
    def push(window: dict[str, float], series: str, increase: float) -> None:
        window[series] = window.get(series, 0.0) + increase

    merge = push  # a node's increase into the cluster's: the same sum

    @staticmethod
    def flush(increase: float, size_s: float) -> dict[str, float]:
        return {"increase": increase, "rate": increase / size_s}


#: bucket bounds (sorted, floats) -> their JSON form and `le` keys, shared between series
_LES_JSON: dict[tuple, list] = {}
_LES_KEYS: dict[tuple, list] = {}
_LE_KEYS: dict[float, str] = {}
_LES_FROM_JSON: dict[tuple, list] = {}
_LE_JSON = {"+Inf": math.inf}


def le_key(le: float) -> str:
    """The `le` text a bucket delta is keyed by in a partial."""
    key = _LE_KEYS.get(le)
    if key is None:
        key = "+Inf" if le == math.inf else repr(le)
        if len(_LE_KEYS) < 100_000:
            _LE_KEYS[le] = key
    return key


def le_from_key(key: str) -> float:
    return math.inf if key == "+Inf" else float(key)


def les_json(les: tuple) -> list:
    """The JSON form of sorted bucket bounds (one shared list per layout: node states hold it)."""
    encoded = _LES_JSON.get(les)
    if encoded is None:
        encoded = [float_to_json(le) for le in les]
        if len(_LES_JSON) < 1000:
            _LES_JSON[les] = encoded
    return encoded


def les_keys(les: tuple) -> list:
    """The `le` keys of sorted bucket bounds (one shared list per layout)."""
    keys = _LES_KEYS.get(les)
    if keys is None:
        keys = [le_key(le) for le in les]
        if len(_LES_KEYS) < 1000:
            _LES_KEYS[les] = keys
    return keys


class HistogramDeltas:
    """The bucket deltas, count delta and sum delta of one classic histogram series over a
    window. Baseline (node state): [bounds as JSON, cumulative counts, count, sum as JSON],
    the bounds list shared between series (only ever encoded, never changed)."""

    @staticmethod
    def new() -> list:
        return [{}, 0.0, 0.0]

    @staticmethod
    def baseline(snap: HistogramSnapshot) -> list:
        les = tuple(sorted(snap.buckets))
        buckets = snap.buckets
        return [les_json(les), [buckets[le] for le in les], snap.count, float_to_json(snap.sum)]

    @staticmethod
    def snapshot(baseline: list) -> HistogramSnapshot:
        les, counts, count, total = baseline
        try:
            shape = tuple(les)
            bounds = _LES_FROM_JSON.get(shape)
        except TypeError:
            shape = bounds = None
        if bounds is None:
            bounds = []
            for le in les:
                f = _LE_JSON.get(le) if isinstance(le, str) else le
                bounds.append(float_from_json(le) if f is None else f)
            if shape is not None and len(_LES_FROM_JSON) < 1000:
                _LES_FROM_JSON[shape] = bounds
        return HistogramSnapshot(dict(zip(bounds, counts)), count, float_from_json(total))

    @staticmethod
    def step(previous: list | None, snap: HistogramSnapshot) -> tuple[list, list, float, float, list | None]:
        """(le keys, bucket deltas, count delta, sum delta, new baseline) of a scrape against
        the baseline, by streams.deltas.histogram_delta's rules (first scrape: zero deltas;
        anything gone down: a restart, the deltas are the scrape itself; a changed layout:
        re-baselined). The new baseline is None when there is none."""
        fast = _common_step(previous, snap)
        if fast is not None:
            return fast
        prev = HistogramDeltas.snapshot(previous) if previous is not None else None
        delta = histogram_delta(prev, snap)
        if delta.baseline is None:
            baseline = None
        else:
            baseline = previous if delta.baseline is prev else HistogramDeltas.baseline(delta.baseline)
        return ([le_key(le) for le in delta.buckets], list(delta.buckets.values()), delta.count, delta.sum,
                baseline)

    @staticmethod
    def push(window: list, keys: list, deltas: list, count: float, total: float) -> None:
        buckets = window[0]
        if len(buckets) == len(keys) and list(buckets) == keys:
            window[0] = dict(zip(keys, map(add, buckets.values(), deltas)))
        else:
            get = buckets.get
            for k, d in zip(keys, deltas):
                buckets[k] = get(k, 0.0) + d
        window[1] += count
        window[2] = _add_json(window[2], total)

    @staticmethod
    def merge(window: list, other: list) -> None:
        """Another node's deltas of the same series and window (buckets by bound)."""
        buckets, count, total = other
        into = window[0]
        by_bound, gather = _bound_order(buckets)
        if len(into) == len(by_bound) and list(into) == by_bound:
            # the usual case: the window has this layout, in bound order (a partial's JSON has
            # its keys sorted as text): add_buckets' sums, position by position
            window[0] = dict(zip(by_bound, map(add, into.values(), gather(list(buckets.values())))))
        else:
            add_buckets(into, buckets, by_bound)
        window[1] += count
        window[2] = _sum_json(window[2], total)

    @staticmethod
    def flush(window: list, quantiles: Iterable[float]) -> dict[str, Any]:
        """Quantiles (interpolated over the summed bucket deltas), mean, count and sum."""
        buckets, count, total = window
        names = _quantile_names(quantiles)
        if count > 0:
            values: dict[str, float | None] = dict(zip(names, bucket_quantiles(quantiles, buckets)))
        else:
            values = dict.fromkeys(names)
        if type(total) is not float:
            total = float_from_json(total)
        values["mean"] = histogram_mean(total, count)
        values["count"] = count
        values["sum"] = total if count > 0 else 0.0
        return values


_QUANTILE_NAMES: dict[tuple, tuple] = {}


def _quantile_names(quantiles: Iterable[float]) -> tuple:
    quantiles = tuple(quantiles)
    names = _QUANTILE_NAMES.get(quantiles)
    if names is None:
        names = _QUANTILE_NAMES[quantiles] = tuple(map(quantile_name, quantiles))
        if len(_QUANTILE_NAMES) > 100:
            _QUANTILE_NAMES.clear()
    return names


def _add_json(total: Any, delta: float) -> Any:
    """A JSON float plus a float, as a JSON float."""
    if type(total) is float:
        total += delta
        return total if _isfinite(total) else float_to_json(total)
    return float_to_json(float_from_json(total) + delta)


def _common_step(previous: list | None, snap: HistogramSnapshot) -> tuple | None:
    """HistogramDeltas.step's common case, straight on the JSON baseline: same bounds, every
    count finite, nothing went down. None for anything else (the general rules decide)."""
    if previous is None:
        return None
    les_json, prev_counts, prev_count, prev_sum_json = previous
    buckets = snap.buckets
    les = tuple(sorted(buckets))
    cached = _LES_JSON.get(les)
    if cached is None or (cached is not les_json and cached != les_json):
        return None
    count, total = snap.count, snap.sum
    prev_sum = float_from_json(prev_sum_json)
    if not (_isfinite(count) and count >= prev_count):
        return None
    if total < prev_sum and _isfinite(total) and _isfinite(prev_sum):
        return None
    counts = [buckets[le] for le in les]
    deltas = list(map(sub, counts, prev_counts))
    # every count finite (a NaN or an infinity makes the sum one) and none went down
    if not (_isfinite(sum(counts)) and (not deltas or min(deltas) >= 0)):
        return None
    return les_keys(les), deltas, count - prev_count, total - prev_sum, [cached, counts, count, float_to_json(total)]


class GaugeStats:
    """Last, min and max of one gauge series over a window (NaN ignored by min and max
    until a number comes); merged across nodes, `last` is the sum of the nodes' last values."""

    @staticmethod
    def push(window: list | None, value: float) -> list:
        if not _isfinite(value):
            v = float_to_json(value)
            if window is None:
                return [v, v, v]
            window[0] = v
            return window
        if window is None:
            return [value, value, value]
        window[0] = value
        # a JSON float that is not finite is a string ("NaN", "+Inf", "-Inf"): replaced
        lo, hi = window[1], window[2]
        if type(lo) is str or value < lo:
            window[1] = value
        if type(hi) is str or value > hi:
            window[2] = value
        return window

    @staticmethod
    def merge(window: list | None, other: list) -> list:
        last, lo, hi = other
        if window is None:
            return [last, lo, hi]
        window[0] = _sum_json(window[0], last)
        a, b = window[1], lo
        if type(a) is float and type(b) is float and a == a and b == b:  # neither a string nor NaN
            m = b if b < a else a  # min(a, b)
            window[1] = m if m - m == 0.0 else float_to_json(m)
        else:
            window[1] = float_to_json(_nan_min(float_from_json(a), float_from_json(b)))
        a, b = window[2], hi
        if type(a) is float and type(b) is float and a == a and b == b:
            m = b if b > a else a  # max(a, b)
            window[2] = m if m - m == 0.0 else float_to_json(m)
        else:
            window[2] = float_to_json(_nan_max(float_from_json(a), float_from_json(b)))
        return window

    @staticmethod
    def flush(window: list) -> dict[str, float]:
        last, lo, hi = window
        if type(last) is float and type(lo) is float and type(hi) is float:  # float_from_json's own
            return {"last": last, "min": lo, "max": hi}
        return {"last": float_from_json(last), "min": float_from_json(lo), "max": float_from_json(hi)}


def _sum_json(a: Any, b: Any) -> Any:
    """float_to_json(float_from_json(a) + float_from_json(b)): two JSON floats' sum as a JSON
    float, without the conversions when both are floats (a finite sum stays as it is)."""
    if type(a) is float and type(b) is float:
        total = a + b
        return total if total - total == 0.0 else float_to_json(total)
    return float_to_json(float_from_json(a) + float_from_json(b))


def _nan_min(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else min(a, b)


def _nan_max(a: float, b: float) -> float:
    return b if math.isnan(a) else a if math.isnan(b) else max(a, b)


_BOUNDS: dict[tuple, tuple] = {}


def bound_pairs(buckets: dict[str, float]) -> list[tuple[float, float]]:
    """(upper bound, count) of bucket deltas keyed by `le` text; the bounds of a key layout
    are parsed once (a histogram keeps its layout window after window)."""
    keys = tuple(buckets)
    bounds = _BOUNDS.get(keys)
    if bounds is None:
        bounds = tuple(map(le_from_key, keys))
        if len(_BOUNDS) >= 10_000:
            _BOUNDS.clear()
        _BOUNDS[keys] = bounds
    return list(zip(bounds, buckets.values()))


#: `le` key layout -> (its bounds in increasing order, the positions of the keys in that
#: order, None when they are in it already), or None when bounds repeat or miss +Inf
_PLAIN_LAYOUTS: dict[tuple, tuple | None] = {}


def _plain_layout(keys: tuple) -> tuple | None:
    layout = _PLAIN_LAYOUTS.get(keys, False)
    if layout is False:
        bounds = list(map(le_from_key, keys))
        order = sorted(range(len(keys)), key=bounds.__getitem__)
        ordered = [bounds[i] for i in order]
        plain = (bool(ordered) and ordered[-1] == math.inf
                 and all(a < b for a, b in zip(ordered, ordered[1:])))  # also False for a NaN bound
        layout = (ordered, None if order == list(range(len(keys))) else order) if plain else None
        if len(_PLAIN_LAYOUTS) >= 10_000:
            _PLAIN_LAYOUTS.clear()
        _PLAIN_LAYOUTS[keys] = layout
    return layout


def bucket_quantiles(qs: Iterable[float], buckets: dict[str, float]) -> list[float]:
    """``histogram_quantiles(qs, bound_pairs(buckets))``: for a layout of distinct bounds up to
    +Inf and ordinary counts, straight from the counts in bound order (quantiles.plain_quantiles)."""
    qs = tuple(qs)
    values = _plain_quantiles(qs, tuple(buckets), list(buckets.values()))
    return histogram_quantiles(qs, bound_pairs(buckets)) if values is None else values


def _plain_quantiles(qs: tuple, keys: tuple, counts: list[float]) -> list[float] | None:
    """quantiles.plain_quantiles of counts under `le` keys (taken to bound order), None when the
    layout or the counts are not plain."""
    layout = _plain_layout(keys)
    if layout is None:
        return None
    bounds, order = layout
    return plain_quantiles(qs, bounds, counts if order is None else [counts[i] for i in order])


def pooled_quantile(q: float, windows: Iterable[Mapping[str, float]]) -> float:
    """``bucket_quantiles((q,), sum_buckets(windows))[0]``, without the summed dict in the usual
    case (one layout)."""
    windows = list(windows)
    summed = _column_sums([w for w in windows if w])
    if summed is not None:
        keys, sums = summed
        values = _plain_quantiles((q,), tuple(keys), sums)
        if values is not None:
            return values[0]
    return bucket_quantiles((q,), sum_buckets(windows))[0]


_BY_BOUND: dict[tuple, list] = {}
def picker(positions: list[int]) -> Callable[[Sequence], tuple]:
    """values -> the values at `positions`, as a tuple: itemgetter, which gives the value itself
    for one position and cannot be made for none."""
    if len(positions) > 1:
        return itemgetter(*positions)
    return lambda values: tuple([values[i] for i in positions])


_GATHER: dict[tuple, tuple[list, Callable[[Sequence], tuple]]] = {}


def _bound_order(buckets: dict[str, float]) -> tuple[list[str], Callable[[Sequence], tuple]]:
    """keys_by_bound(buckets), and a function taking the values of a dict of that key layout
    (in its order) to bound order; remembered per layout."""
    keys = tuple(buckets)
    found = _GATHER.get(keys)
    if found is None:
        ordered = keys_by_bound(buckets)
        found = (ordered, picker([keys.index(k) for k in ordered]))
        if len(_GATHER) >= 10_000:
            _GATHER.clear()
        _GATHER[keys] = found
    return found


def keys_by_bound(buckets: dict[str, float]) -> list[str]:
    """The `le` keys of bucket deltas in order of their bound (remembered per layout)."""
    keys = tuple(buckets)
    ordered = _BY_BOUND.get(keys)
    if ordered is None:
        ordered = sorted(keys, key=le_from_key)
        if len(_BY_BOUND) >= 10_000:
            _BY_BOUND.clear()
        _BY_BOUND[keys] = ordered
    return ordered


# -- rolling SLO history ------------------------------------------------------------------

def slo_entry(start: int, buckets: dict[str, float], count: float, q: float) -> list:
    """A step window's entry in a rolling SLO history (node state, cluster index):
    [start, pooled bucket deltas, count, q, the window's own q-quantile (None without
    observations)]. The quantile is computed once, when the window closes, instead of at
    each of the slo_window / step SLO records the window is part of."""
    return [start, buckets, count, q, bucket_quantiles((q,), buckets)[0] if count > 0 else None]


def entry_quantile(entry: list, q: float) -> float:
    """The q-quantile of a history entry with observations: as remembered, or computed for an
    entry written by an earlier version ([start, buckets, count]) or for another q."""
    if len(entry) >= 5 and entry[3] == q and entry[4] is not None:
        return entry[4]
    return bucket_quantiles((q,), entry[1])[0]
