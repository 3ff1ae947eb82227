"""Quantiles from classic Prometheus histograms, computed the way Prometheus does.

Users compare our in-flight p99 with ``histogram_quantile(0.99, sum by (le) (rate(...)))``
in Prometheus, so :func:`histogram_quantile` follows Prometheus 3's ``BucketQuantile``
(promql/quantile.go) step for step, including its odd corners (the ``le="0"`` bucket of
``network_programming_duration_seconds``, dips, duplicate bounds, ``q=0`` on an empty first
bucket giving NaN). Go's float semantics are kept where Python would differ: ``x/0`` gives
±Inf or NaN instead of raising.

Bucket deltas of several series or nodes must be summed by bound
(streams/aggregators.py ``add_buckets``) *before* interpolating: a quantile of a sum is not the sum (or mean) of quantiles.
"""

from __future__ import annotations

import math
import re
import sys
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import groupby
from operator import sub

__all__ = [
    "SMALL_DELTA_TOLERANCE",
    "histogram_quantiles",
    "histogram_mean",
    "histogram_quantile",
    "parse_le",
    "plain_quantiles",
]

#: Relative difference between neighbouring cumulative counts that Prometheus treats as
#: floating point noise (``smallDeltaTolerance``): such differences are flattened in either
#: direction. Only matters for counts around 1e12 and above.
SMALL_DELTA_TOLERANCE = 1e-12

# Smallest positive normal float64 (Go: math.Float64frombits(0x0010000000000000)).
_MIN_NORMAL = sys.float_info.min
_MAX_FLOAT = sys.float_info.max

# What Go's strconv.ParseFloat accepts for decimal numbers and infinities; Prometheus parses
# `le` with it. No underscores, no surrounding blanks, no hex (never seen in exposition).
_LE_RE = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity)",
    re.IGNORECASE,
)


def parse_le(text: str) -> float:
    """Parse a bucket's ``le`` label value into a float.

    Prometheus 3 writes ``le="1.0"`` where Prometheus 2 and client libraries write ``le="1"``;
    both must land on the same bucket, so bounds are keyed by float, never by string.
    Accepts ``"1"``, ``"1.0"``, ``"0.001"``, ``"1e-3"``, ``"+Inf"`` (any case, also
    ``"Inf"``/``"infinity"``). Raises :class:`ValueError` for anything else, including
    ``NaN``: a NaN bound cannot be ordered, and Prometheus' own sort assumes it never occurs.
    """
    if not _LE_RE.fullmatch(text):
        raise ValueError(f"invalid le bound: {text!r}")
    return float(text)


def histogram_mean(delta_sum: float, delta_count: float) -> float | None:
    """Mean observation over an interval: ``increase(_sum) / increase(_count)``.

    Returns ``None`` when there is nothing to average (no observations, or a count or sum
    that is not a finite number), so callers emit no point rather than NaN or ±Inf, which
    JSON encoders mangle.
    """
    if not (math.isfinite(delta_count) and math.isfinite(delta_sum)) or delta_count <= 0:
        return None
    return delta_sum / delta_count


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """The ``q``-quantile of a classic histogram, as Prometheus' ``histogram_quantile``.

    ``buckets`` are ``(upper bound, cumulative count)`` pairs in any order (parse bounds with
    :func:`parse_le`). Steps, as in Prometheus 3 ``BucketQuantile``:

    1. ``q`` NaN → NaN; ``q < 0`` → -Inf; ``q > 1`` → +Inf.
    2. Sort by bound; the highest bound must be +Inf, else NaN.
    3. Merge equal bounds by summing their counts (``coalesceBuckets``).
    4. Flatten differences below :data:`SMALL_DELTA_TOLERANCE` and raise any dip to the last
       accepted count (``ensureMonotonicAndIgnoreSmallDeltas``).
    5. Fewer than 2 buckets, or a +Inf count of 0 → NaN.
    6. ``rank = q × total``; take the first bucket (binary search, +Inf excluded) whose
       count is ≥ rank. If none → the highest finite bound. If it is the first bucket and
       its bound is ≤ 0 → that bound. Otherwise interpolate linearly inside the bucket, with
       a lower edge of 0 for the first bucket.

    Never raises for odd counts (NaN, negative); raises :class:`ValueError` for a NaN bound.
    An empty ``buckets`` gives NaN (Prometheus never calls it with none).
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if any(math.isnan(le) for le, _ in buckets):
        raise ValueError("a bucket bound is NaN")
    if not buckets:
        return math.nan
    ordered = sorted(buckets, key=lambda b: b[0])
    if ordered[-1][0] != math.inf:
        return math.nan

    bounds, counts = _coalesce(ordered)
    _ensure_monotonic_and_ignore_small_deltas(counts, SMALL_DELTA_TOLERANCE)

    if len(bounds) < 2:
        return math.nan
    if counts[-1] == 0:
        return math.nan
    return _interpolate(q, bounds, counts)


def _interpolate(q: float, bounds: list[float], counts: list[float]) -> float:
    """Step 6 on prepared buckets (≥ 2 bounds, a +Inf count above 0, 0 ≤ q ≤ 1)."""
    rank = q * counts[-1]
    b = _go_sort_search(len(counts) - 1, lambda i: counts[i] >= rank)
    return _in_bucket(rank, b, bounds, counts)


def _in_bucket(rank: float, b: int, bounds: list[float], counts: list[float]) -> float:
    """Step 6 once the bucket `b` holding `rank` is found."""
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    bucket_start = 0.0
    bucket_end = bounds[b]
    count = counts[b]
    if b > 0:
        bucket_start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return bucket_start + (bucket_end - bucket_start) * _go_div(rank, count)


def histogram_quantiles(qs: Sequence[float], buckets: Sequence[tuple[float, float]]) -> list[float]:
    """``[histogram_quantile(q, buckets) for q in qs]``, with the buckets sorted, merged and
    made monotonic once instead of once per quantile (the same steps, the same floats)."""
    if not buckets or any(math.isnan(le) for le, _ in buckets):
        return [histogram_quantile(q, buckets) for q in qs]
    ordered = sorted(buckets, key=lambda b: b[0])
    if ordered[-1][0] != math.inf:
        return [histogram_quantile(q, buckets) for q in qs]
    bounds, counts = _coalesce(ordered)
    _ensure_monotonic_and_ignore_small_deltas(counts, SMALL_DELTA_TOLERANCE)
    out = []
    for q in qs:
        if math.isnan(q) or q < 0 or q > 1 or len(bounds) < 2 or counts[-1] == 0:
            out.append(histogram_quantile(q, buckets))
            continue
        out.append(_interpolate(q, bounds, counts))
    return out


def plain_quantiles(qs: Sequence[float], bounds: Sequence[float], counts: list[float]) -> list[float] | None:
    """``histogram_quantiles(qs, list(zip(bounds, counts)))`` for the common histogram, in one
    pass and without preparing anything: `bounds` strictly increasing up to +Inf (the caller
    knows its layout), counts finite, from ≥ 0 non-decreasing to a total above 0, every rise
    far above SMALL_DELTA_TOLERANCE, and every q in [0, 1]. Then sorting, coalescing and the
    monotonic repair change nothing and Go's search is a bisection, so the floats are the
    same. None for anything else: the caller takes histogram_quantiles."""
    n = len(counts)
    if n < 2 or n != len(bounds):
        return None
    total = counts[-1]
    # finite (a NaN or an infinity makes the sum one), from ≥ 0 to above 0
    if not (math.isfinite(sum(counts)) and counts[0] >= 0 and total > 0):
        return None
    # Never going down, and no rise a small delta to flatten: a rise d > 1e-11 × total between
    # counts of at most total is > 5e-12 of their sum, far above the tolerance (and above the
    # absolute one near zero once ≥ 1e-300). The rises between runs of equal counts are few:
    # most buckets repeat the one below.
    distinct = [count for count, _ in groupby(counts)]
    smallest = min(map(sub, distinct[1:], distinct), default=total)
    if not (smallest > total * (10 * SMALL_DELTA_TOLERANCE) and smallest >= 1e-300):
        return None
    out = []
    last = n - 1
    for q in qs:
        if not 0 <= q <= 1:  # NaN too
            return None
        rank = q * total
        out.append(_in_bucket(rank, bisect_left(counts, rank, 0, last), bounds, counts))  # type: ignore[arg-type]
    return out


def _coalesce(ordered: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Merge neighbouring equal bounds of sorted buckets, summing counts (coalesceBuckets)."""
    bounds: list[float] = []
    counts: list[float] = []
    for le, count in ordered:
        if bounds and le == bounds[-1]:
            counts[-1] += count
        else:
            bounds.append(le)
            counts.append(count)
    return bounds, counts


def _ensure_monotonic_and_ignore_small_deltas(counts: list[float], tolerance: float) -> None:
    """Make cumulative counts non-decreasing in place, as Prometheus does.

    Dips come from non-atomic scrapes or merged layouts; Prometheus' binary search needs
    monotonic counts. ``prev`` is the last *accepted* count, so a dip or a tiny difference
    is replaced by it without moving it.
    """
    prev = counts[0]
    for i in range(1, len(counts)):
        curr = counts[i]
        if curr == prev:
            continue
        if _almost_equal(prev, curr, tolerance):
            counts[i] = prev
            continue
        if curr < prev:
            counts[i] = prev
            continue
        prev = curr


def _almost_equal(a: float, b: float, epsilon: float) -> bool:
    """Prometheus' util/almost.Equal: relative comparison, absolute near zero."""
    if math.isnan(a) and math.isnan(b):
        return True
    if a == b:
        return True
    abs_sum = abs(a) + abs(b)
    diff = abs(a - b)
    if a == 0 or b == 0 or abs_sum < _MIN_NORMAL:
        return diff < epsilon * _MIN_NORMAL
    return _go_div(diff, min(abs_sum, _MAX_FLOAT)) < epsilon


def _go_sort_search(n: int, pred: Callable[[int], bool]) -> int:
    """Go's sort.Search: smallest i in [0, n) with pred(i), by the same bisection.

    Kept literally (not ``bisect``) so that even non-monotonic input (NaN counts) picks the
    bucket Prometheus picks.
    """
    i, j = 0, n
    while i < j:
        h = (i + j) // 2
        if not pred(h):
            i = h + 1
        else:
            j = h
    return i


def _go_div(a: float, b: float) -> float:
    """IEEE division as Go does it: ``x/0`` is ±Inf, ``0/0`` is NaN (Python raises)."""
    if b != 0:
        return a / b
    if a == 0 or math.isnan(a):
        return math.nan
    return math.copysign(math.inf, a) * math.copysign(1.0, b)
