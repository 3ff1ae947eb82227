"""histogram_quantile must give what Prometheus gives for the same buckets."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.aggregators import add_buckets
from streams.quantiles import histogram_mean, histogram_quantile, parse_le


def merge_buckets(*bucket_maps: dict[float, float]) -> dict[float, float]:
    """Bucket maps summed by bound, as the stage sums them (add_buckets)."""
    merged: dict[float, float] = {}
    for buckets in bucket_maps:
        add_buckets(merged, buckets)
    return merged

INF = math.inf
NAN = math.nan

STANDARD = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (INF, 50.0)]
# network_programming_duration_seconds starts with a real le="0" bucket.
NETWORK_PROGRAMMING = [(0.0, 5.0), (0.25, 10.0), (0.5, 20.0), (INF, 20.0)]


def same(actual: float, expected: float) -> bool:
    """Equal up to float rounding in the table's decimal literals; NaN equals NaN."""
    if math.isnan(expected):
        return math.isnan(actual)
    return actual == expected or actual == pytest.approx(expected, rel=1e-12, abs=0.0)


def identical(actual: float, expected: float) -> bool:
    """Bit for bit the same number (same operations in the same order); NaN equals NaN."""
    return (math.isnan(actual) and math.isnan(expected)) or actual == expected


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        # Interpolation inside a bucket.
        (0.5, STANDARD, 0.4),
        (0.8, STANDARD, 1.0),  # rank equals a bucket's count: that bucket's upper bound
        # First bucket: lower edge 0.
        (0.1, STANDARD, 0.05),
        (0.0, STANDARD, 0.0),
        # Rank beyond the last finite bucket: highest finite bound.
        (0.9, STANDARD, 1.0),
        (1.0, STANDARD, 1.0),
        (0.5, [(INF, 50.0), (0.5, 30.0), (0.1, 10.0), (1.0, 40.0)], 0.4),  # any order
        # q=0 on an empty first bucket is 0/0 in Prometheus: NaN.
        (0.0, [(0.1, 0.0), (0.5, 30.0), (INF, 30.0)], NAN),
        # The le="0" bucket is real: quantiles falling in it are 0, not interpolated.
        (0.1, NETWORK_PROGRAMMING, 0.0),
        (0.25, NETWORK_PROGRAMMING, 0.0),
        (0.3, NETWORK_PROGRAMMING, 0.05),
        (0.5, NETWORK_PROGRAMMING, 0.25),
        (0.0, [(0.0, 0.0), (1.0, 10.0), (INF, 10.0)], 0.0),
        # A negative first bound is returned as is.
        (0.2, [(-1.0, 5.0), (1.0, 10.0), (INF, 10.0)], -1.0),
        (0.75, [(-1.0, 5.0), (1.0, 10.0), (INF, 10.0)], 0.0),
        # Everything in +Inf.
        (0.5, [(1.0, 0.0), (INF, 10.0)], 1.0),
        # Dips are raised to the previous count.
        (0.5, [(1.0, 10.0), (2.0, 5.0), (4.0, 20.0), (INF, 20.0)], 1.0),
        (0.75, [(1.0, 10.0), (2.0, 5.0), (4.0, 20.0), (INF, 20.0)], 3.0),
        (0.75, [(1.0, 10.0), (2.0, 5.0), (4.0, 8.0), (INF, 20.0)], 4.0),
        # Duplicate bounds ("1" and "1.0") are merged by summing.
        (0.25, [(1.0, 5.0), (1.0, 5.0), (2.0, 20.0), (INF, 20.0)], 0.5),
        (0.75, [(2.0, 20.0), (1.0, 5.0), (INF, 20.0), (1.0, 5.0)], 1.5),
        # Differences below 1e-12 relative are float noise and flattened (plain monotonic
        # envelope would give 2.0 here).
        (1.0, [(1.0, 1e13), (2.0, 1e13 + 1), (INF, 1e13 + 1)], 1.0),
        # NaN cases.
        (0.5, [(1.0, 10.0), (2.0, 20.0)], NAN),  # no +Inf
        (0.5, [(INF, 10.0)], NAN),  # +Inf only
        (0.5, [(INF, 5.0), (INF, 5.0)], NAN),  # +Inf only after merging
        (0.5, [(1.0, 0.0), (INF, 0.0)], NAN),  # no observations
        (0.5, [], NAN),
        # q outside [0, 1], checked before anything else.
        (-0.1, STANDARD, -INF),
        (1.1, STANDARD, INF),
        (-0.1, [], -INF),
        (NAN, STANDARD, NAN),
    ],
)
def test_histogram_quantile_table(q: float, buckets: list[tuple[float, float]], expected: float) -> None:
    assert same(histogram_quantile(q, buckets), expected)


def test_nan_bound_is_rejected() -> None:
    with pytest.raises(ValueError):
        histogram_quantile(0.5, [(NAN, 1.0), (INF, 1.0)])


def test_input_is_not_modified() -> None:
    buckets = [(INF, 20.0), (2.0, 5.0), (1.0, 10.0), (1.0, 1.0)]
    before = list(buckets)
    histogram_quantile(0.5, buckets)
    assert buckets == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1.0),
        ("1.0", 1.0),
        ("0.001", 0.001),
        ("1e-3", 0.001),
        ("2.5E+2", 250.0),
        (".5", 0.5),
        ("5.", 5.0),
        ("0", 0.0),
        ("-1", -1.0),
        ("+Inf", INF),
        ("Inf", INF),
        ("+inf", INF),
        ("-Inf", -INF),
        ("+Infinity", INF),
    ],
)
def test_parse_le(text: str, expected: float) -> None:
    assert parse_le(text) == expected


@pytest.mark.parametrize("text", ["", "NaN", "nan", "abc", " 1", "1 ", "1_0", "0x1p-2", "1..0", "+"])
def test_parse_le_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_le(text)


def test_parse_le_old_and_new_spelling_land_on_one_bucket() -> None:
    merged = merge_buckets({parse_le("1"): 3.0}, {parse_le("1.0"): 4.0})
    assert merged == {1.0: 7.0}


@pytest.mark.parametrize(
    ("delta_sum", "delta_count", "expected"),
    [
        (10.0, 4.0, 2.5),
        (0.0, 3.0, 0.0),
        (0.0, 0.0, None),
        (5.0, 0.0, None),
        (1.0, -1.0, None),
        (NAN, 4.0, None),
        (INF, 4.0, None),
        (1.0, NAN, None),
    ],
)
def test_histogram_mean(delta_sum: float, delta_count: float, expected: float | None) -> None:
    assert histogram_mean(delta_sum, delta_count) == expected


def test_merge_buckets() -> None:
    a = {0.1: 1.0, 1.0: 2.0, INF: 3.0}
    b = {0.1: 10.0, 1.0: 20.0, INF: 30.0}
    c = {0.5: 5.0, INF: 5.0}
    assert merge_buckets(a, b) == {0.1: 11.0, 1.0: 22.0, INF: 33.0}
    assert merge_buckets(a, b, c) == {0.1: 11.0, 0.5: 5.0, 1.0: 22.0, INF: 38.0}
    assert merge_buckets(a) == a and merge_buckets(a) is not a
    assert merge_buckets() == {}


def test_quantile_of_merged_nodes_is_not_mean_of_quantiles() -> None:
    fast = {0.1: 100.0, 1.0: 100.0, 10.0: 100.0, INF: 100.0}  # all 100 observations <= 0.1
    slow = {0.1: 0.0, 1.0: 0.0, 10.0: 100.0, INF: 100.0}  # all 100 in (1, 10]
    pooled = histogram_quantile(0.5, list(merge_buckets(fast, slow).items()))
    assert pooled == pytest.approx(0.1)  # rank 100 of 200 is the last fast observation
    medians = [histogram_quantile(0.5, list(h.items())) for h in (fast, slow)]
    assert medians == pytest.approx([0.05, 5.5])
    assert sum(medians) / 2 != pytest.approx(pooled)


# --- properties -----------------------------------------------------------------------


def reference_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' BucketQuantile, written plainly (linear scan, running maximum).

    Counts generated below are whole numbers far below 1e12, so the small-delta tolerance
    never applies and a plain monotonic envelope is the same thing.
    """
    if math.isnan(q):
        return NAN
    if q < 0:
        return -INF
    if q > 1:
        return INF
    merged: dict[float, float] = {}
    for le, count in buckets:
        merged[le] = merged.get(le, 0.0) + count
    bounds = sorted(merged)
    if not bounds or bounds[-1] != INF or len(bounds) < 2:
        return NAN
    counts = []
    highest = -INF
    for le in bounds:
        highest = max(highest, merged[le])
        counts.append(highest)
    total = counts[-1]
    if total == 0:
        return NAN
    rank = q * total
    i = next((i for i in range(len(bounds) - 1) if counts[i] >= rank), len(bounds) - 1)
    if i == len(bounds) - 1:
        return bounds[-2]
    if i == 0 and bounds[0] <= 0:
        return bounds[0]
    lower, below = (0.0, 0.0) if i == 0 else (bounds[i - 1], counts[i - 1])
    in_bucket = counts[i] - below
    if in_bucket == 0:  # only rank 0 on an empty first bucket: 0/0 in Go
        return NAN
    return lower + (bounds[i] - lower) * ((rank - below) / in_bucket)


KUBE_PROXY_BOUNDS = [0.001 * 2**k for k in range(15)] + [0.0, 0.25, 0.5, 1.0, 60.0, 300.0]
bounds_st = st.one_of(
    st.sampled_from(KUBE_PROXY_BOUNDS + [-1.0, -0.5]),
    st.floats(min_value=-1e3, max_value=1e4, allow_nan=False, allow_infinity=False),
)
count_st = st.integers(min_value=0, max_value=10**6).map(float)
bucket_st = st.tuples(bounds_st, count_st)
q_st = st.one_of(
    st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]),
    st.floats(min_value=0.0, max_value=1.0),
)


@st.composite
def histograms(draw: st.DrawFn, bounds: st.SearchStrategy[float] = bounds_st) -> list[tuple[float, float]]:
    """Buckets in random order, with duplicates and dips, usually with a +Inf bucket."""
    buckets = draw(st.lists(st.tuples(bounds, count_st), max_size=12))
    if draw(st.integers(0, 9)) > 0:
        buckets.append((INF, draw(count_st)))
    return draw(st.permutations(buckets))


def cumulative_histograms(bounds: st.SearchStrategy[float]) -> st.SearchStrategy[list[tuple[float, float]]]:
    """Well-formed cumulative histograms (as a real client exposes them)."""

    @st.composite
    def build(draw: st.DrawFn) -> list[tuple[float, float]]:
        les = sorted(set(draw(st.lists(bounds, min_size=1, max_size=12))))
        increments = draw(st.lists(count_st, min_size=len(les) + 1, max_size=len(les) + 1))
        total = 0.0
        out = []
        for le, inc in zip([*les, INF], increments):
            total += inc
            out.append((le, total))
        return out

    return build()


@settings(max_examples=500)
@given(q=st.one_of(q_st, st.floats()), buckets=histograms())
def test_matches_reference(q: float, buckets: list[tuple[float, float]]) -> None:
    assert identical(histogram_quantile(q, buckets), reference_quantile(q, buckets))


def ulps(x: float, n: int = 4) -> float:
    # Interpolation may land an ulp or so past a bucket's upper bound (start + (end-start)).
    return n * math.ulp(x) if math.isfinite(x) else 0.0


@settings(max_examples=300)
@given(buckets=histograms(), qs=st.lists(q_st, min_size=2, max_size=6))
def test_monotonic_in_q(buckets: list[tuple[float, float]], qs: list[float]) -> None:
    values = [histogram_quantile(q, buckets) for q in sorted(qs)]
    finite = [v for v in values if not math.isnan(v)]
    for lower, higher in zip(finite, finite[1:]):
        assert lower <= higher + ulps(higher)


@settings(max_examples=300)
@given(
    buckets=histograms(bounds=st.sampled_from(KUBE_PROXY_BOUNDS) | st.floats(0.0, 1e4)),
    q=q_st,
)
def test_within_zero_and_highest_finite_bound(buckets: list[tuple[float, float]], q: float) -> None:
    value = histogram_quantile(q, buckets)
    finite_bounds = [le for le, _ in buckets if le != INF]
    if math.isnan(value):
        return
    assert finite_bounds, "a value needs at least one finite bucket"
    assert 0.0 <= value <= max(finite_bounds) + ulps(max(finite_bounds))


@given(buckets=cumulative_histograms(st.floats(0.0, 1e4)), q=st.floats(0.0, 1.0, exclude_min=True))
def test_well_formed_histogram_gives_a_number(buckets: list[tuple[float, float]], q: float) -> None:
    value = histogram_quantile(q, buckets)
    assert math.isnan(value) == (buckets[-1][1] == 0)


@given(buckets=histograms(), q=q_st, seed=st.integers(0, 2**32))
def test_order_of_buckets_does_not_matter(buckets: list[tuple[float, float]], q: float, seed: int) -> None:
    # Whole counts: merging duplicates gives the same sum in any order.
    shuffled = list(buckets)
    random.Random(seed).shuffle(shuffled)
    assert identical(histogram_quantile(q, shuffled), histogram_quantile(q, buckets))


@given(
    a=st.dictionaries(bounds_st, count_st, max_size=8),
    b=st.dictionaries(bounds_st, count_st, max_size=8),
    q=q_st,
)
def test_merge_then_quantile_equals_sum_by_le(a: dict[float, float], b: dict[float, float], q: float) -> None:
    a = {**a, INF: 1e6 + 1}
    b = {**b, INF: 1e6 + 1}
    merged = histogram_quantile(q, list(merge_buckets(a, b).items()))
    assert identical(merged, histogram_quantile(q, [*a.items(), *b.items()]))
