"""Event-time tumbling windows: alignment, lateness, closing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.windows import (
    Window,
    closable_windows,
    delta_window,
    idle_close,
    is_late,
    watermark,
    window_for,
    window_start,
)

MIN = 60_000
FIVE_MIN = 300_000


@pytest.mark.parametrize(
    ("ts_ms", "size_ms", "expected"),
    [
        (0, MIN, 0),
        (1, MIN, 0),
        (59_999, MIN, 0),
        (60_000, MIN, 60_000),  # an edge belongs to the window it starts
        (60_001, MIN, 60_000),
        (-1, MIN, -60_000),  # floor, also before the epoch
        (-60_000, MIN, -60_000),
        (-60_001, MIN, -120_000),
        (1_700_000_123_456, MIN, 1_700_000_100_000),
        (1_700_000_000_000, FIVE_MIN, 1_699_999_800_000),
        (1_699_999_800_000, FIVE_MIN, 1_699_999_800_000),
        (1_699_999_799_999, FIVE_MIN, 1_699_999_500_000),
        (123, 1, 123),
    ],
)
def test_window_start(ts_ms: int, size_ms: int, expected: int) -> None:
    assert window_start(ts_ms, size_ms) == expected
    assert window_for(ts_ms, size_ms) == Window(expected, expected + size_ms)


@pytest.mark.parametrize("size_ms", [0, -1, -MIN])
def test_window_size_must_be_positive(size_ms: int) -> None:
    with pytest.raises(ValueError):
        window_start(0, size_ms)


def test_window_is_an_ordered_immutable_value() -> None:
    w = Window(60_000, 120_000)
    assert w.size_ms == MIN
    assert w.contains(60_000) and w.contains(119_999)
    assert not w.contains(120_000) and not w.contains(59_999)
    assert sorted([Window(120_000, 180_000), w, Window(0, 60_000)]) == [
        Window(0, 60_000),
        w,
        Window(120_000, 180_000),
    ]
    assert {w: 1}[Window(60_000, 120_000)] == 1
    with pytest.raises(AttributeError):
        w.start_ms = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("max_event_ms", "lateness_ms", "expected"),
    [(100_000, 5_000, 95_000), (100_000, 0, 100_000), (0, 10_000, -10_000)],
)
def test_watermark(max_event_ms: int, lateness_ms: int, expected: int) -> None:
    assert watermark(max_event_ms, lateness_ms) == expected


def test_negative_lateness_is_rejected() -> None:
    with pytest.raises(ValueError):
        watermark(0, -1)


@pytest.mark.parametrize(
    ("ts_ms", "watermark_ms", "size_ms", "late"),
    [
        (0, 59_999, MIN, False),
        (0, 60_000, MIN, True),  # watermark reached the window's end: closed
        (0, 60_001, MIN, True),
        (59_999, 60_000, MIN, True),
        (60_000, 60_000, MIN, False),  # next window, still open
        (60_000, 119_999, MIN, False),
        (60_000, 120_000, MIN, True),
        (-1, 0, MIN, True),
        (-1, -1, MIN, False),
        (299_999, 299_999, FIVE_MIN, False),
        (299_999, 300_000, FIVE_MIN, True),
    ],
)
def test_is_late(ts_ms: int, watermark_ms: int, size_ms: int, late: bool) -> None:
    assert is_late(ts_ms, watermark_ms, size_ms) is late


W0, W1, W2 = Window(0, MIN), Window(MIN, 2 * MIN), Window(2 * MIN, 3 * MIN)


@pytest.mark.parametrize(
    ("watermark_ms", "expected"),
    [
        (-1, []),
        (59_999, []),
        (60_000, [W0]),
        (119_999, [W0]),
        (120_000, [W0, W1]),
        (10**12, [W0, W1, W2]),
    ],
)
def test_closable_windows(watermark_ms: int, expected: list[Window]) -> None:
    assert closable_windows([W2, W0, W1, W0], watermark_ms) == expected
    assert closable_windows(iter([W2, W1, W0]), watermark_ms) == expected


@pytest.mark.parametrize(
    ("last_event_wall_ms", "now_wall_ms", "expected"),
    [
        (1_000_000, 1_000_000, []),
        (1_000_000, 1_029_999, []),
        (1_000_000, 1_030_000, [W0, W1, W2]),  # idle for exactly the timeout
        (1_000_000, 2_000_000, [W0, W1, W2]),
        (1_000_000, 999_000, []),  # wall clock stepped back: not idle
    ],
)
def test_idle_close(last_event_wall_ms: int, now_wall_ms: int, expected: list[Window]) -> None:
    assert idle_close([W2, W0, W1], last_event_wall_ms, now_wall_ms, 30_000) == expected


def test_idle_close_edge_cases() -> None:
    assert idle_close([], 0, 10**9, 30_000) == []
    assert idle_close([W1, W1], 0, 30_000, 30_000) == [W1]
    with pytest.raises(ValueError):
        idle_close([W0], 0, 1, -1)


@pytest.mark.parametrize(
    ("t_prev_ms", "t_cur_ms", "size_ms", "expected"),
    [
        (10_000, 40_000, MIN, W0),
        (30_000, 75_000, MIN, W1),  # straddles an edge: the later window
        (0, 60_000, MIN, W1),  # t_cur on the edge starts the next window
        (59_999, 60_000, MIN, W1),
        (-30_000, 30_000, MIN, W0),
        (240_000, 330_000, FIVE_MIN, Window(FIVE_MIN, 2 * FIVE_MIN)),
    ],
)
def test_delta_window(t_prev_ms: int, t_cur_ms: int, size_ms: int, expected: Window) -> None:
    assert delta_window(t_prev_ms, t_cur_ms, size_ms) == expected


@pytest.mark.parametrize(("t_prev_ms", "t_cur_ms"), [(1_000, 1_000), (2_000, 1_000)])
def test_delta_window_rejects_out_of_order(t_prev_ms: int, t_cur_ms: int) -> None:
    with pytest.raises(ValueError):
        delta_window(t_prev_ms, t_cur_ms, MIN)


# --- properties ------------------------------------------------------------------------------

ts_st = st.integers(min_value=-(10**13), max_value=10**13)
size_st = st.one_of(st.sampled_from([1, 1_000, 15_000, MIN, FIVE_MIN, 3_600_000]), st.integers(1, 10**8))


@given(ts=ts_st, size=size_st)
def test_every_timestamp_is_in_exactly_one_aligned_window(ts: int, size: int) -> None:
    w = window_for(ts, size)
    assert w.contains(ts)
    assert w.start_ms % size == 0
    assert w.size_ms == size
    before = Window(w.start_ms - size, w.start_ms)
    after = Window(w.end_ms, w.end_ms + size)
    assert not before.contains(ts) and not after.contains(ts)
    assert window_for(w.start_ms, size) == w == window_for(w.end_ms - 1, size)


@given(ts=ts_st, watermark_ms=ts_st, size=size_st)
def test_late_iff_its_window_is_closed(ts: int, watermark_ms: int, size: int) -> None:
    w = window_for(ts, size)
    closed = closable_windows([w], watermark_ms) == [w]
    assert is_late(ts, watermark_ms, size) is closed
    assert closed is (watermark_ms >= w.end_ms)


@given(
    starts=st.lists(st.integers(-1000, 1000), max_size=20),
    watermark_ms=st.integers(-(10**6), 10**6),
    size=st.sampled_from([1_000, MIN]),
)
def test_closable_windows_are_exactly_the_passed_ones_in_order(
    starts: list[int], watermark_ms: int, size: int
) -> None:
    windows = [Window(s * size, s * size + size) for s in starts]
    closed = closable_windows(windows, watermark_ms)
    assert closed == sorted(set(closed))
    assert set(closed) == {w for w in windows if w.end_ms <= watermark_ms}


@given(
    steps=st.lists(st.tuples(st.integers(1, 200_000), st.integers(0, 1_000)), min_size=1, max_size=50),
    start=ts_st,
    size=st.sampled_from([MIN, FIVE_MIN]),
)
def test_delta_windows_partition_the_increase(steps: list[tuple[int, int]], start: int, size: int) -> None:
    """Each delta lands in one window; per-window sums add up to the whole increase, and a
    delta is never assigned to a window its own sample would be late for."""
    t_prev = start
    per_window: dict[Window, int] = {}
    for gap, increase in steps:
        t_cur = t_prev + gap
        w = delta_window(t_prev, t_cur, size)
        assert w.contains(t_cur)
        assert is_late(t_cur, watermark(t_cur, 0), size) is False
        per_window[w] = per_window.get(w, 0) + increase
        t_prev = t_cur
    assert sum(per_window.values()) == sum(inc for _, inc in steps)
    assert list(per_window) == sorted(per_window)  # time order in, time order out
