"""Event-time tumbling windows: alignment, lateness, closing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.windows import watermark, window_start

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


@pytest.mark.parametrize("size_ms", [0, -1, -MIN])
def test_window_size_must_be_positive(size_ms: int) -> None:
    with pytest.raises(ValueError):
        window_start(0, size_ms)


@pytest.mark.parametrize(
    ("max_event_ms", "lateness_ms", "expected"),
    [(100_000, 5_000, 95_000), (100_000, 0, 100_000), (0, 10_000, -10_000)],
)
def test_watermark(max_event_ms: int, lateness_ms: int, expected: int) -> None:
    assert watermark(max_event_ms, lateness_ms) == expected


def test_negative_lateness_is_rejected() -> None:
    with pytest.raises(ValueError):
        watermark(0, -1)


# --- properties ------------------------------------------------------------------------------

ts_st = st.integers(min_value=-(10**13), max_value=10**13)
size_st = st.one_of(st.sampled_from([1, 1_000, 15_000, MIN, FIVE_MIN, 3_600_000]), st.integers(1, 10**8))


@given(ts=ts_st, size=size_st)
def test_every_timestamp_is_in_exactly_one_aligned_window(ts: int, size: int) -> None:
    start = window_start(ts, size)
    assert start <= ts < start + size
    assert start % size == 0
    assert window_start(start, size) == start == window_start(start + size - 1, size)
    assert window_start(start + size, size) == start + size
