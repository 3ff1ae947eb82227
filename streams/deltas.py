"""Counter and histogram deltas between two scrapes, with Prometheus' reset rule.

The stream stage turns cumulative counters into per-interval increases once, at ingest, so
windows only ever add deltas (associative, replay-safe, mergeable across nodes). The reset
rule is Prometheus ``increase()``'s, without extrapolation: a value lower than the previous
one means the process restarted, and the increase for that step is the new value itself. A
changed process start time is a reset too (``reset=True``): it catches restarts that
climbed back above the old value before the next scrape.

Policies (chosen so that every function is total and deterministic, and counts are never
NaN):

* First sample of a series (no previous value): no increase. We cannot know how much of
  the value accrued since the previous scrape; Prometheus needs two samples as well.
* Non-finite current value (NaN, ±Inf): not a sample. Delta 0 and the previous value stays
  the baseline, so the next finite sample still accounts for the whole gap.
* A histogram is one unit: if its ``_count``, ``_sum`` or any bucket went down, all its
  series are treated as reset, or deltas of different buckets would mix two processes.

Callers (streams/aggregators.py) keep the ``baseline`` returned here as the next
``previous``; they must drop samples whose timestamp is not newer than the baseline's
before calling (out-of-order delivery looks like a reset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = [
    "MICROSECONDS",
    "HistogramDelta",
    "HistogramSnapshot",
    "counter_delta",
    "histogram_delta",
    "to_seconds",
]

#: Scale of legacy ``kubeproxy_sync_proxy_rules_latency_microseconds`` (units per second).
MICROSECONDS = 1e6


def counter_delta(previous: float | None, current: float, *, reset: bool = False) -> float:
    """Increase of a counter from ``previous`` to ``current``.

    * ``previous`` is None (or NaN): first sample → 0.0.
    * ``current`` is not finite: not a sample → 0.0 (keep ``previous`` as baseline).
    * ``reset`` (start time changed) or ``current < previous``: the process restarted and
      counted from zero → ``current``.
    * otherwise ``current - previous``.
    """
    if previous is None or math.isnan(previous) or not math.isfinite(current):
        return 0.0
    if reset or current < previous:
        return current
    return current - previous


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """One scrape of one classic histogram series group.

    ``buckets`` maps the upper bound (``le`` as float, +Inf included) to its cumulative count.
    """

    buckets: dict[float, float]
    count: float
    sum: float


@dataclass(frozen=True, slots=True)
class HistogramDelta:
    """Increase of a histogram between two snapshots.

    ``buckets`` stay cumulative (le → observations ≤ le in the interval), so they can be
    merged across nodes and fed to ``histogram_quantile`` directly; ``count`` equals the +Inf
    bucket's delta for consistent snapshots. ``sum`` is NaN when the target's ``_sum`` is
    (a NaN observation poisons it for the process's lifetime) — the counts stay usable.
    ``reset`` tells whether the step was treated as a restart. ``baseline`` is what the
    caller keeps as the next ``previous``.
    """

    buckets: dict[float, float]
    count: float
    sum: float
    reset: bool = False
    baseline: HistogramSnapshot | None = field(default=None, compare=False)


def histogram_delta(
    previous: HistogramSnapshot | None,
    current: HistogramSnapshot,
    *,
    reset: bool = False,
) -> HistogramDelta:
    """Increase of a histogram from ``previous`` to ``current``, treated as one unit.

    * No (usable) ``previous``: first sample → zero delta over ``current``'s buckets.
    * ``current`` unusable (a bucket or ``_count`` not finite): zero delta; the baseline
      stays ``previous``.
    * ``reset``, or ``_count``, a finite ``_sum`` or any common bucket went down: restart →
      the delta is ``current`` itself.
    * Bucket bounds differ (no reset seen): the deltas would not be consistent, so no
      delta this step and ``current`` becomes the baseline (at most one interval lost; a
      layout change without a restart does not happen in practice).
    * Otherwise per-series differences.
    """
    zero = _zero_delta(current)
    if not _usable(current):
        return HistogramDelta(zero.buckets, 0.0, 0.0, baseline=previous)
    if previous is None or not _usable(previous):
        return HistogramDelta(zero.buckets, 0.0, 0.0, baseline=current)
    if reset or _went_down(previous, current):
        return HistogramDelta(dict(current.buckets), current.count, current.sum, True, current)
    if previous.buckets.keys() != current.buckets.keys():
        return HistogramDelta(zero.buckets, 0.0, 0.0, baseline=current)
    buckets = {le: count - previous.buckets[le] for le, count in current.buckets.items()}
    count = current.count - previous.count
    return HistogramDelta(buckets, count, current.sum - previous.sum, False, current)


def to_seconds(snapshot: HistogramSnapshot, scale: float) -> HistogramSnapshot:
    """Convert a histogram observed in ``scale`` units per second into seconds.

    For legacy ``sync_proxy_rules_latency_microseconds`` use ``scale=MICROSECONDS``: bounds
    and ``_sum`` are divided, counts are not. ``1000·2^k / 1e6`` is exactly the float
    ``0.001·2^k``, so converted buckets merge with ``..._duration_seconds`` buckets.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    return HistogramSnapshot(
        buckets={le / scale: count for le, count in snapshot.buckets.items()},
        count=snapshot.count,
        sum=snapshot.sum / scale,
    )


def _zero_delta(current: HistogramSnapshot) -> HistogramSnapshot:
    return HistogramSnapshot({le: 0.0 for le in current.buckets}, 0.0, 0.0)


def _usable(snapshot: HistogramSnapshot) -> bool:
    counts = (snapshot.count, *snapshot.buckets.values())
    return all(math.isfinite(c) for c in counts)


def _went_down(previous: HistogramSnapshot, current: HistogramSnapshot) -> bool:
    """Whether any series of the histogram decreased: a restart (counter reset)."""
    if current.count < previous.count:
        return True
    if math.isfinite(previous.sum) and math.isfinite(current.sum) and current.sum < previous.sum:
        return True
    old = previous.buckets
    return any(le in old and count < old[le] for le, count in current.buckets.items())
