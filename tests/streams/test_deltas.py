"""Counter and histogram deltas follow Prometheus' reset rule and conserve increases."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.deltas import (
    MICROSECONDS,
    HistogramDelta,
    HistogramSnapshot,
    counter_delta,
    histogram_delta,
    to_seconds,
)

INF = math.inf
NAN = math.nan


@pytest.mark.parametrize(
    ("previous", "current", "reset", "expected"),
    [
        (None, 5.0, False, 0.0),  # first sample: no increase
        (None, 5.0, True, 0.0),  # first sample even if the target restarted
        (3.0, 5.0, False, 2.0),
        (5.0, 5.0, False, 0.0),
        (0.0, 0.0, False, 0.0),
        (5.0, 3.0, False, 3.0),  # went down: restarted, increase is the new value
        (5.0, 0.0, False, 0.0),  # restarted and nothing counted yet
        (5.0, 7.0, True, 7.0),  # start time changed: restart that climbed above the old value
        (5.0, 5.0, True, 5.0),
        (5.0, NAN, False, 0.0),  # not a sample
        (5.0, NAN, True, 0.0),
        (5.0, INF, False, 0.0),
        (5.0, -INF, False, 0.0),
        (NAN, 5.0, False, 0.0),  # no usable previous value: like a first sample
    ],
)
def test_counter_delta(previous: float | None, current: float, reset: bool, expected: float) -> None:
    assert counter_delta(previous, current, reset=reset) == expected


# --- counter properties ------------------------------------------------------------------

values_st = st.lists(st.integers(0, 10**9).map(float), min_size=1, max_size=30)


def total_increase(values: Sequence[float], resets: Sequence[bool] | None = None) -> float:
    """Fold a series of scrapes through counter_delta, keeping baselines as documented."""
    previous: float | None = None
    total = 0.0
    for i, value in enumerate(values):
        total += counter_delta(previous, value, reset=bool(resets and resets[i]))
        if math.isfinite(value):
            previous = value
    return total


def prometheus_increase(values: Sequence[float]) -> float:
    """Prometheus' extrapolatedRate without extrapolation: last - first + pre-reset values."""
    result = values[-1] - values[0]
    prev = values[0]
    for value in values[1:]:
        if value < prev:
            result += prev
        prev = value
    return result


@given(increments=st.lists(st.integers(0, 10**6), min_size=1, max_size=30), start=st.integers(0, 10**9))
def test_without_resets_deltas_add_up_to_last_minus_first(increments: list[int], start: int) -> None:
    values = []
    value = start
    for inc in increments:
        value += inc
        values.append(float(value))
    assert total_increase(values) == values[-1] - values[0]


@given(values=values_st)
def test_matches_prometheus_increase_with_resets(values: list[float]) -> None:
    assert total_increase(values) == prometheus_increase(values)


@given(values=values_st, data=st.data())
def test_non_finite_samples_change_nothing(values: list[float], data: st.DataObject) -> None:
    noisy: list[float] = []
    for value in values:
        noisy.extend(data.draw(st.lists(st.sampled_from([NAN, INF, -INF]), max_size=2)))
        noisy.append(value)
    assert total_increase(noisy) == total_increase(values)


@given(values=values_st, data=st.data())
def test_flagged_restart_counts_everything_since(values: list[float], data: st.DataObject) -> None:
    resets = data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values)))
    expected = sum(
        value if resets[i] else counter_delta(values[i - 1], value) for i, value in enumerate(values) if i > 0
    )
    assert total_increase(values, resets) == expected


# --- histograms ----------------------------------------------------------------------------


def snap(buckets: dict[float, float], count: float | None = None, sum_: float = 0.0) -> HistogramSnapshot:
    return HistogramSnapshot(buckets, buckets[INF] if count is None else count, sum_)


PREV = snap({0.001: 1.0, 0.002: 3.0, INF: 4.0}, sum_=0.006)


def test_first_sample_gives_zero_delta() -> None:
    current = snap({0.001: 2.0, 0.002: 5.0, INF: 6.0}, sum_=0.01)
    delta = histogram_delta(None, current)
    assert delta == HistogramDelta({0.001: 0.0, 0.002: 0.0, INF: 0.0}, 0.0, 0.0, reset=False)
    assert delta.baseline == current


def test_normal_step_is_per_series_difference() -> None:
    current = snap({0.001: 2.0, 0.002: 5.0, INF: 7.0}, sum_=0.016)
    delta = histogram_delta(PREV, current)
    assert delta.buckets == {0.001: 1.0, 0.002: 2.0, INF: 3.0}
    assert delta.count == delta.buckets[INF] == 3.0
    assert delta.sum == pytest.approx(0.01)
    assert not delta.reset
    assert delta.baseline == current


@pytest.mark.parametrize(
    "current",
    [
        snap({0.001: 0.0, 0.002: 5.0, INF: 7.0}, sum_=0.016),  # one bucket went down
        snap({0.001: 2.0, 0.002: 5.0, INF: 7.0}, count=3.0, sum_=0.016),  # _count went down
        snap({0.001: 2.0, 0.002: 5.0, INF: 7.0}, sum_=0.001),  # _sum went down
    ],
)
def test_any_series_going_down_resets_the_whole_histogram(current: HistogramSnapshot) -> None:
    delta = histogram_delta(PREV, current)
    assert delta.reset
    assert (delta.buckets, delta.count, delta.sum) == (current.buckets, current.count, current.sum)
    assert delta.buckets is not current.buckets
    assert delta.baseline == current


def test_reset_flag_with_higher_values() -> None:
    current = snap({0.001: 5.0, 0.002: 8.0, INF: 9.0}, sum_=0.05)
    delta = histogram_delta(PREV, current, reset=True)
    assert delta.reset
    assert (delta.buckets, delta.count, delta.sum) == (current.buckets, 9.0, 0.05)


def test_nan_sum_keeps_counts_usable() -> None:
    current = snap({0.001: 2.0, 0.002: 5.0, INF: 7.0}, sum_=NAN)
    delta = histogram_delta(PREV, current)
    assert delta.buckets == {0.001: 1.0, 0.002: 2.0, INF: 3.0}
    assert delta.count == 3.0
    assert math.isnan(delta.sum)
    assert not delta.reset


@pytest.mark.parametrize(
    "current",
    [
        snap({0.001: NAN, 0.002: 5.0, INF: 7.0}, sum_=0.016),
        snap({0.001: 2.0, 0.002: 5.0, INF: 7.0}, count=NAN, sum_=0.016),
        snap({0.001: 2.0, 0.002: INF, INF: INF}, count=7.0, sum_=0.016),
    ],
)
def test_unusable_snapshot_gives_zero_delta_and_keeps_baseline(current: HistogramSnapshot) -> None:
    delta = histogram_delta(PREV, current)
    assert (delta.count, delta.sum, delta.reset) == (0.0, 0.0, False)
    assert set(delta.buckets.values()) == {0.0}
    assert delta.baseline is PREV
    assert histogram_delta(None, current).baseline is None


def test_changed_layout_without_reset_rebaselines() -> None:
    current = snap({0.001: 2.0, 0.004: 5.0, INF: 7.0}, sum_=0.016)
    delta = histogram_delta(PREV, current)
    assert delta == HistogramDelta({0.001: 0.0, 0.004: 0.0, INF: 0.0}, 0.0, 0.0, reset=False)
    assert delta.baseline == current


def test_changed_layout_with_reset_is_a_reset() -> None:
    current = snap({0.001: 2.0, 0.004: 5.0, INF: 7.0}, sum_=0.016)
    delta = histogram_delta(PREV, current, reset=True)
    assert delta.reset and delta.buckets == current.buckets


LEGACY_BOUNDS = [1000.0 * 2**k for k in range(15)]
SECONDS_BOUNDS = [0.001 * 2**k for k in range(15)]


def test_to_seconds_converts_legacy_microseconds_exactly() -> None:
    legacy = HistogramSnapshot({**{le: float(i) for i, le in enumerate(LEGACY_BOUNDS)}, INF: 20.0}, 20.0, 2_500_000.0)
    converted = to_seconds(legacy, MICROSECONDS)
    assert list(converted.buckets) == [*SECONDS_BOUNDS, INF]  # bit-exact: they merge
    assert list(converted.buckets.values()) == list(legacy.buckets.values())
    assert converted.count == 20.0
    assert converted.sum == 2.5
    assert legacy.buckets[1000.0] == 0.0  # input untouched


@pytest.mark.parametrize("scale", [0.0, -1.0, NAN])
def test_to_seconds_rejects_bad_scale(scale: float) -> None:
    with pytest.raises(ValueError):
        to_seconds(PREV, scale)


# --- histogram properties ------------------------------------------------------------------

BOUNDS = [0.0, 1.0, 2.0, 5.0, 10.0]


def snapshot_of(observations: Sequence[int]) -> HistogramSnapshot:
    """What a client library exposes after these observations."""
    buckets = {le: float(sum(1 for o in observations if o <= le)) for le in BOUNDS}
    buckets[INF] = float(len(observations))
    return HistogramSnapshot(buckets, float(len(observations)), float(sum(observations)))


# A scrape interval: observations made before the scrape, and whether the process restarted
# (at the start of the interval) before them.
interval_st = st.tuples(st.lists(st.integers(0, 12), max_size=6), st.booleans())


@given(first=st.lists(st.integers(0, 12), max_size=6), intervals=st.lists(interval_st, max_size=12))
def test_histogram_deltas_conserve_observations(
    first: list[int], intervals: list[tuple[list[int], bool]]
) -> None:
    """With restarts flagged (start time changed), the deltas add up to exactly the
    observations made after the first scrape, and every delta is a consistent histogram."""
    process = list(first)
    baseline = histogram_delta(None, snapshot_of(process)).baseline
    expected: list[int] = []
    totals = {le: 0.0 for le in [*BOUNDS, INF]}
    count = total_sum = 0.0
    for observations, restarted in intervals:
        if restarted:
            process = []
        process += observations
        expected += observations
        delta = histogram_delta(baseline, snapshot_of(process), reset=restarted)
        baseline = delta.baseline
        counts = [delta.buckets[le] for le in [*BOUNDS, INF]]
        assert counts == sorted(counts) and min(counts) >= 0  # cumulative, never negative
        assert delta.count == delta.buckets[INF]
        for le in totals:
            totals[le] += delta.buckets[le]
        count += delta.count
        total_sum += delta.sum
    assert totals == snapshot_of(expected).buckets
    assert count == len(expected)
    assert total_sum == sum(expected)


@given(first=st.lists(st.integers(0, 12), max_size=6), intervals=st.lists(interval_st, max_size=12))
def test_detected_restarts_need_no_flag(first: list[int], intervals: list[tuple[list[int], bool]]) -> None:
    """A restart whose counts end up lower is caught without the start-time flag."""
    process = list(first)
    baseline = histogram_delta(None, snapshot_of(process)).baseline
    for observations, restarted in intervals:
        before = len(process)
        if restarted:
            process = []
        process += observations
        delta = histogram_delta(baseline, snapshot_of(process))
        baseline = delta.baseline
        if len(process) < before:
            assert delta.reset and delta.count == len(process)
        if not restarted:
            assert not delta.reset and delta.count == len(observations)
