"""The typed window aggregators the node close and the cluster merge share: step, push, merge
and flush of each, on their compact (JSON) forms."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.aggregators import (
    CounterIncrease,
    GaugeStats,
    HistogramDeltas,
    add_buckets,
    bound_pairs,
    bucket_quantiles,
    keys_by_bound,
    pooled_quantile,
    sum_buckets,
)
from streams.deltas import HistogramSnapshot
from streams.quantiles import histogram_quantile, histogram_quantiles

INF = math.inf
NAN = math.nan


# -- counter increase -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("previous", "value", "expected"),
    [
        (None, 5.0, (0.0, 5.0, False)),  # first sample: no increase, it becomes the baseline
        (3.0, 5.0, (2.0, 5.0, False)),
        (5.0, 5.0, (0.0, 5.0, False)),
        (5.0, 3.0, (3.0, 3.0, True)),  # went down: a restart, the increase is the new value
        (5.0, 0.0, (0.0, 0.0, True)),
        (5.0, NAN, (0.0, 5.0, False)),  # not a sample: the baseline stays
        (5.0, INF, (0.0, 5.0, False)),
        (None, NAN, (0.0, None, False)),  # no baseline at all: the series is not kept
    ],
)
def test_counter_step(previous, value, expected):
    assert CounterIncrease.step(previous, value) == expected


def test_counter_push_merge_flush():
    window: dict[str, float] = {}
    for series, inc in (("a", 1.0), ("b", 0.0), ("a", 2.5)):
        CounterIncrease.push(window, series, inc)
    assert window == {"a": 3.5, "b": 0.0}
    cluster: dict[str, float] = {}
    for node_window in (window, {"a": 0.5, "c": 4.0}):
        for series, inc in sorted(node_window.items()):
            CounterIncrease.merge(cluster, series, inc)
    assert cluster == {"a": 4.0, "b": 0.0, "c": 4.0}
    assert CounterIncrease.flush(cluster["a"], 60.0) == {"increase": 4.0, "rate": 4.0 / 60.0}


# -- histogram deltas -------------------------------------------------------------------------

def snap(buckets: dict[float, float], sum_: float = 0.0, count: float | None = None) -> HistogramSnapshot:
    return HistogramSnapshot(buckets, buckets[INF] if count is None else count, sum_)


FIRST = snap({0.5: 1.0, 1.0: 3.0, INF: 4.0}, 2.0)


@pytest.mark.parametrize(
    ("current", "expected_deltas", "expected_count", "expected_sum", "new_baseline"),
    [
        # the common step: per-bound differences, sorted by bound
        (snap({INF: 7.0, 1.0: 5.0, 0.5: 2.0}, 3.5), [1.0, 2.0, 3.0], 3.0, 1.5, "current"),
        # nothing happened
        (snap({0.5: 1.0, 1.0: 3.0, INF: 4.0}, 2.0), [0.0, 0.0, 0.0], 0.0, 0.0, "current"),
        # a bucket went down: a restart, the deltas are the scrape itself
        (snap({0.5: 0.0, 1.0: 1.0, INF: 1.0}, 0.25), [0.0, 1.0, 1.0], 1.0, 0.25, "current"),
        # a bucket that is not a number: no delta, the baseline stays
        (snap({0.5: NAN, 1.0: 5.0, INF: 7.0}, 3.5), [0.0, 0.0, 0.0], 0.0, 0.0, "previous"),
        # another layout without a restart: re-baselined, no delta this step
        (snap({0.25: 1.0, 1.0: 5.0, INF: 7.0}, 3.5), [0.0, 0.0, 0.0], 0.0, 0.0, "current"),
    ],
)
def test_histogram_step(current, expected_deltas, expected_count, expected_sum, new_baseline):
    previous = HistogramDeltas.baseline(FIRST)
    keys, deltas, count, total, baseline = HistogramDeltas.step(previous, current)
    assert sorted(zip(keys, deltas), key=lambda kd: float(kd[0])) == sorted(
        zip((repr(le) if le != INF else "+Inf" for le in sorted(current.buckets)), expected_deltas),
        key=lambda kd: float(kd[0]))
    assert (count, total) == (expected_count, expected_sum)
    want = previous if new_baseline == "previous" else HistogramDeltas.baseline(current)
    assert orjson.dumps(baseline) == orjson.dumps(want)


def test_histogram_first_step_has_zero_deltas_and_baselines():
    keys, deltas, count, total, baseline = HistogramDeltas.step(None, FIRST)
    assert keys == ["0.5", "1.0", "+Inf"] and deltas == [0.0, 0.0, 0.0] and (count, total) == (0.0, 0.0)
    assert baseline == [[0.5, 1.0, "+Inf"], [1.0, 3.0, 4.0], 4.0, 2.0]  # its compact form
    assert HistogramDeltas.snapshot(baseline) == FIRST


def test_histogram_push_merge_flush():
    window = HistogramDeltas.new()
    HistogramDeltas.push(window, ["0.5", "+Inf"], [1.0, 2.0], 2.0, 0.75)
    HistogramDeltas.push(window, ["0.5", "+Inf"], [0.0, 1.0], 1.0, 1.25)
    assert window == [{"0.5": 1.0, "+Inf": 3.0}, 3.0, 2.0]
    HistogramDeltas.push(window, ["0.25", "+Inf"], [1.0, 1.0], 1.0, 0.0)  # a bound it did not have
    assert window == [{"0.5": 1.0, "+Inf": 4.0, "0.25": 1.0}, 4.0, 2.0]
    cluster = HistogramDeltas.new()
    HistogramDeltas.merge(cluster, window)
    HistogramDeltas.merge(cluster, [{"+Inf": 1.0, "0.5": 1.0}, 1.0, "NaN"])
    assert list(cluster[0]) == ["0.25", "0.5", "+Inf"]  # new bounds come in order of bound
    assert cluster[0] == {"0.25": 1.0, "0.5": 2.0, "+Inf": 5.0} and cluster[1] == 5.0 and cluster[2] == "NaN"
    values = HistogramDeltas.flush([{"0.5": 2.0, "1.0": 4.0, "+Inf": 4.0}, 4.0, 2.0], (0.5, 0.99))
    assert values == {"p50": 0.5, "p99": pytest.approx(0.99), "mean": 0.5, "count": 4.0, "sum": 2.0}
    empty = HistogramDeltas.flush([{"1.0": 0.0, "+Inf": 0.0}, 0.0, 0.0], (0.5,))
    assert empty == {"p50": None, "mean": None, "count": 0.0, "sum": 0.0}


# -- gauge statistics -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([3.0], [3.0, 3.0, 3.0]),
        ([3.0, 1.0, 2.0], [2.0, 1.0, 3.0]),
        ([NAN, 2.0, 5.0], [5.0, 2.0, 5.0]),  # NaN is no min or max once a number came
        ([2.0, NAN], ["NaN", 2.0, 2.0]),  # but it is the last value
        ([INF, 1.0], [1.0, 1.0, 1.0]),
    ],
)
def test_gauge_push(values, expected):
    window = None
    for value in values:
        window = GaugeStats.push(window, value)
    assert window == expected  # the compact form: JSON floats


def test_gauge_merge_flush():
    cluster = None
    for node_window in ([2.0, 1.0, 3.0], [5.0, "NaN", 4.0], ["NaN", 0.5, "NaN"]):
        cluster = GaugeStats.merge(cluster, node_window)
    # last: summed over nodes (NaN poisons the sum); min and max ignore NaN
    assert cluster == ["NaN", 0.5, 4.0]
    flushed = GaugeStats.flush([7.0, 1.0, "+Inf"])
    assert flushed == {"last": 7.0, "min": 1.0, "max": INF}


# -- buckets by bound -------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("into", "buckets", "keys", "expected"),
    [
        ({}, {"1": 1.0, "+Inf": 2.0}, None, {"1": 1.0, "+Inf": 2.0}),
        ({"1": 1.0, "+Inf": 2.0}, {"+Inf": 3.0, "1": 1.0}, None, {"1": 2.0, "+Inf": 5.0}),  # same layout
        ({"1": 1.0, "+Inf": 2.0}, {"+Inf": 3.0, "0.5": 1.0}, None, {"1": 1.0, "+Inf": 5.0, "0.5": 1.0}),
        ({"+Inf": 2.0}, {"+Inf": 3.0, "0.5": 1.0, "2": 0.0}, ["0.5", "2", "+Inf"],
         {"+Inf": 5.0, "0.5": 1.0, "2": 0.0}),
    ],
)
def test_add_buckets(into, buckets, keys, expected):
    add_buckets(into, buckets, keys)
    assert into == expected and list(into) == list(expected)


def test_bucket_keys_by_bound_and_bound_pairs():
    buckets = {"+Inf": 3.0, "0.5": 1.0, "10": 2.0, "2": 1.5}
    assert keys_by_bound(buckets) == ["0.5", "2", "10", "+Inf"]
    assert bound_pairs(buckets) == [(INF, 3.0), (0.5, 1.0), (10.0, 2.0), (2.0, 1.5)]


def test_cluster_merge_of_partials_one_at_a_time_equals_the_merge_of_all():
    """The cluster stage merges a window's partials as it decodes them, in node order."""
    from streams import aggregate
    from streams.config import StreamSettings

    base = {"scrapes": 1, "up": 1, "dups": 0, "left": False,
            "last": {"up": 1, "kpm": 1, "since_sync": 1.0, "stall": 0.0}, "g": {"g|{}": [1.0, 1.0, 2.0]}}
    partials = [dict(base, node=n, c={"x|{}": inc}, h={"h|{}": [{"1.0": inc, "+Inf": 2 * inc}, 2 * inc, inc / 3]})
                for n, inc in (("c", 0.3), ("a", 0.1), ("b", 0.2))]
    settings = StreamSettings(topic_prefix="u")
    in_order = aggregate.merge_in_order(iter(sorted(partials, key=lambda p: p["node"])), settings)
    assert orjson.dumps(in_order) == orjson.dumps(aggregate.merge(partials, settings))


# -- quantiles of bucket deltas: the one-pass path against the general one ---------------------

def same_floats(a: list, b: list) -> bool:
    """Equal float for float, NaN equal to NaN and 0.0 unequal to -0.0."""
    return [repr(x) for x in a] == [repr(x) for x in b]


LE_KEYS = ["0", "0.001", "0.002", "0.004", "0.5", "1", "1.0", "2.5", "10", "-1", "1e-3", "+Inf"]
QS = st.lists(st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0, NAN, -0.5, 1.5]) | st.floats(0.0, 1.0),
              min_size=1, max_size=4)
ODD_COUNTS = st.sampled_from([0.0, -0.0, 1.0, 2.0, 0.5, -3.0, NAN, INF, -INF, 1e12, 1e12 + 1, 1e-320, 3])


@st.composite
def bucket_deltas(draw: st.DrawFn) -> dict[str, float]:
    """Bucket deltas keyed by `le` text: usually an ordinary cumulative layout up to +Inf (in bound
    order, or not), sometimes duplicate bounds ("1" and "1.0"), no +Inf, or odd counts (NaN,
    ±Inf, negative, ints, dips, huge counts with tiny rises, denormals)."""
    keys = draw(st.lists(st.sampled_from(LE_KEYS[:-1]), max_size=8, unique=True))
    if draw(st.integers(0, 9)) > 0:
        keys.append("+Inf")
    keys.sort(key=float)
    if draw(st.booleans()):
        keys = draw(st.permutations(keys))
    base = draw(st.sampled_from([0.0, 0.0, 1e12, -1e12, 1e-300]))
    total, counts = base, []
    for _ in keys:
        total += draw(st.sampled_from([0.0, 1.0, 3.0, 0.25, 2e12]) | st.integers(0, 1000).map(float))
        counts.append(total)
    by_bound = sorted(range(len(keys)), key=lambda i: float(keys[i]))
    count_of = {keys[i]: count for i, count in zip(by_bound, counts)}
    buckets = {key: count_of[key] for key in keys}  # in the drawn key order
    for key in draw(st.lists(st.sampled_from(keys), max_size=2)) if keys else []:
        buckets[key] = draw(ODD_COUNTS)
    return buckets


@settings(max_examples=2000)
@given(buckets=bucket_deltas(), qs=QS)
def test_bucket_quantiles_equal_the_general_interpolation(buckets: dict[str, float], qs: list[float]) -> None:
    assert same_floats(bucket_quantiles(qs, buckets), histogram_quantiles(qs, bound_pairs(buckets)))
    for q in qs:
        assert same_floats(bucket_quantiles([q], buckets), [histogram_quantile(q, bound_pairs(buckets))])


@pytest.mark.parametrize("buckets", [
    {"0.5": 1.0, "1": 3.0, "+Inf": 4.0},  # the common case
    {"+Inf": 4.0, "0.5": 1.0, "1": 3.0},  # keys not in bound order
    {"0": 0.0, "0.5": 0.0, "+Inf": 0.0},  # no observations
    {"0": 2.0, "0.5": 2.0, "+Inf": 2.0},  # all in le="0"
    {"0.5": 1.0, "1": 3.0},  # no +Inf bucket
    {"1": 1.0, "1.0": 2.0, "+Inf": 4.0},  # one bound spelled twice
    {"0.5": 3.0, "1": 1.0, "+Inf": 4.0},  # a dip
    {"0.5": NAN, "1": 3.0, "+Inf": 4.0},
    {"0.5": 0.0, "1": 1.0, "2": NAN, "+Inf": 3.0},  # Go's search and a bisection part at a NaN
    {"0.5": 1.0, "1": 3.0, "+Inf": INF},
    {"0.5": -1.0, "1": 3.0, "+Inf": 4.0},
    {"0.5": 1e12, "1": 1e12 + 1.0, "+Inf": 1e12 + 2.0},  # rises within the small-delta tolerance
    {"0.5": -1e12, "1": -1e12 + 1.0, "2": 5.0, "+Inf": 5.0},  # the same, from below zero
    {"0.5": 0.0, "1": 1e-320, "+Inf": 2e-320},  # rises within the absolute tolerance near zero
    {"0.5": 1, "1": 3, "+Inf": 4},  # ints
    {"+Inf": 1.0},
])
def test_bucket_quantiles_table(buckets: dict[str, float]) -> None:
    qs = (0.0, 0.5, 0.9, 0.99, 1.0)
    assert same_floats(bucket_quantiles(qs, buckets), histogram_quantiles(qs, bound_pairs(buckets)))


def test_bucket_quantiles_of_a_nan_bound_raise_as_before() -> None:
    with pytest.raises(ValueError):
        histogram_quantiles((0.5,), bound_pairs({"NaN": 1.0, "+Inf": 2.0}))
    with pytest.raises(ValueError):
        bucket_quantiles((0.5,), {"NaN": 1.0, "+Inf": 2.0})


# -- the cluster merge and the SLO pooling: fast paths against the general forms -------------

JSON_FLOATS = (st.floats() | st.integers(-3, 3) | st.sampled_from(["NaN", "+Inf", "-Inf", "Inf", 0.0, -0.0, 1e308, NAN, INF])
               | st.sampled_from([True]))


def same_json(a: object, b: object) -> bool:
    return repr(a) == repr(b)


@settings(max_examples=1000)
@given(windows=st.lists(st.sampled_from([["0.5", "1", "+Inf"], ["+Inf", "0.5", "1"], ["1", "+Inf"], []])
                        .flatmap(lambda keys: st.fixed_dictionaries({k: st.floats() | st.integers(0, 9)
                                                                     for k in keys})), max_size=6))
def test_sum_buckets_equals_adding_one_after_another(windows: list[dict]) -> None:
    total: dict = {}
    for w in windows:
        add_buckets(total, w)
    summed = sum_buckets(windows)
    assert list(summed) == list(total) and same_json(list(summed.values()), list(total.values()))


def reference_gauge_merge(window: list | None, other: list) -> list:
    """GaugeStats.merge as it was: every value through float_from_json and float_to_json."""
    from contracts.codec import float_from_json, float_to_json
    from streams.aggregators import _nan_max, _nan_min
    last, lo, hi = other
    if window is None:
        return [last, lo, hi]
    return [float_to_json(float_from_json(window[0]) + float_from_json(last)),
            float_to_json(_nan_min(float_from_json(window[1]), float_from_json(lo))),
            float_to_json(_nan_max(float_from_json(window[2]), float_from_json(hi)))]


def outcome(f, *args):  # noqa: ANN001, ANN201
    try:
        return ("ok", repr(f(*args)))
    except Exception as exc:  # noqa: BLE001
        return ("raised", type(exc).__name__, str(exc))


@settings(max_examples=2000)
@given(window=st.none() | st.lists(JSON_FLOATS, min_size=3, max_size=3),
       other=st.lists(JSON_FLOATS | st.sampled_from(["x", None]), min_size=3, max_size=3))
def test_gauge_merge_equals_the_general_conversions(window: list | None, other: list) -> None:
    expected = outcome(reference_gauge_merge, None if window is None else list(window), other)
    assert outcome(GaugeStats.merge, None if window is None else list(window), other) == expected


@settings(max_examples=1000)
@given(total=JSON_FLOATS, other_total=JSON_FLOATS | st.sampled_from(["x"]))
def test_histogram_merge_sum_equals_the_general_conversions(total, other_total) -> None:  # noqa: ANN001
    from contracts.codec import float_from_json, float_to_json

    def reference(a, b):  # noqa: ANN001, ANN202
        return float_to_json(float_from_json(a) + float_from_json(b))

    def merged_sum(a, b):  # noqa: ANN001, ANN202
        window = [{"+Inf": 1.0}, 1.0, a]
        HistogramDeltas.merge(window, [{"+Inf": 1.0}, 1.0, b])
        return window[2]

    assert outcome(merged_sum, total, other_total) == outcome(reference, total, other_total)


@settings(max_examples=1000)
@given(layouts=st.lists(st.sampled_from([("0.5", "1", "+Inf"), ("+Inf", "0.5", "1"), ("1", "+Inf"), (), ("2", "+Inf")]),
                        min_size=1, max_size=5),
       data=st.data())
def test_histogram_merge_equals_adding_by_bound(layouts: list[tuple], data: st.DataObject) -> None:
    """HistogramDeltas.merge's buckets: add_buckets in bound order for a new layout, as it was."""
    others = [[{k: data.draw(st.floats() | st.integers(0, 9)) for k in keys}, 1.0, 0.0] for keys in layouts]
    window, expected = HistogramDeltas.new(), {}
    for other in others:
        HistogramDeltas.merge(window, other)
        add_buckets(expected, other[0], keys_by_bound(other[0]))
        assert list(window[0]) == list(expected) and same_json(list(window[0].values()), list(expected.values()))


@settings(max_examples=1000)
@given(windows=st.lists(st.sampled_from([["0.5", "1", "+Inf"], ["+Inf", "0.5", "1"], ["1", "+Inf"], [], ["1", "2"]])
                        .flatmap(lambda keys: st.fixed_dictionaries({k: st.integers(0, 9).map(float) | st.floats()
                                                                     for k in keys})), max_size=6),
       q=st.sampled_from([0.0, 0.5, 0.99, 1.0, NAN, 1.5]))
def test_pooled_quantile_is_the_quantile_of_the_summed_buckets(windows: list[dict], q: float) -> None:
    def general() -> float:
        return bucket_quantiles((q,), sum_buckets(windows))[0]

    assert outcome(pooled_quantile, q, windows) == outcome(general)
