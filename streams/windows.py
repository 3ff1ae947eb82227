"""Event-time tumbling windows and watermarks, as pure functions over milliseconds.

Faust's windowed tables expire on wall-clock time and lose close events across partitions
(see the design notes), so the stream stage keeps windows in plain tables and decides here,
from event time only, which window a sample belongs to and when a window is final. The
shape follows quix-streams: windows are aligned to the Unix epoch, ``[start, end)`` with
``end`` exclusive, and a window closes once the watermark (highest event time seen minus
the allowed lateness) reaches its end. Everything is integer milliseconds so that results
are identical under replay.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

__all__ = [
    "Window",
    "closable_windows",
    "delta_window",
    "idle_close",
    "is_late",
    "watermark",
    "window_for",
    "window_start",
]


class Window(NamedTuple):
    """A tumbling window ``[start_ms, end_ms)``.

    A tuple whose first field is the start, so windows sort by time and make good
    state-key prefixes.
    """

    start_ms: int
    end_ms: int

    @property
    def size_ms(self) -> int:
        return self.end_ms - self.start_ms

    def contains(self, ts_ms: int) -> bool:
        """Whether ``ts_ms`` falls in this window (start inclusive, end exclusive)."""
        return self.start_ms <= ts_ms < self.end_ms


def window_start(ts_ms: int, size_ms: int) -> int:
    """Start of the epoch-aligned window of ``size_ms`` containing ``ts_ms``.

    Floor semantics, also before the epoch: ``window_start(-1, 60_000) == -60_000``.
    Every worker computes the same boundaries without coordination.
    """
    if size_ms <= 0:
        raise ValueError(f"window size must be positive, got {size_ms!r}")
    return ts_ms - ts_ms % size_ms


def window_for(ts_ms: int, size_ms: int) -> Window:
    """The one window of ``size_ms`` that contains ``ts_ms``."""
    start = window_start(ts_ms, size_ms)
    return Window(start, start + size_ms)


def watermark(max_event_ms: int, allowed_lateness_ms: int) -> int:
    """Event-time watermark: the highest event time seen minus the allowed lateness.

    Everything at or before the watermark is assumed to have arrived. The caller keeps
    ``max_event_ms`` per partition (never lowering it), so the watermark never goes back.
    """
    if allowed_lateness_ms < 0:
        raise ValueError(f"allowed lateness must be >= 0, got {allowed_lateness_ms!r}")
    return max_event_ms - allowed_lateness_ms


def is_late(ts_ms: int, watermark_ms: int, size_ms: int) -> bool:
    """Whether a sample arrives after its window closed (window end ≤ watermark).

    Late samples must not reopen a window whose result was already emitted; they go to a
    late-sample hook instead. Consistent with :func:`closable_windows`: a sample is late
    exactly when its window is closable.
    """
    return window_for(ts_ms, size_ms).end_ms <= watermark_ms


def closable_windows(open_windows: Iterable[Window], watermark_ms: int) -> list[Window]:
    """The open windows the watermark has passed (``end ≤ watermark``), oldest first.

    Emitting in start order keeps every output stream ordered by time. Duplicates in the
    input are reported once.
    """
    return sorted({w for w in open_windows if w.end_ms <= watermark_ms})


def idle_close(
    open_windows: Iterable[Window],
    last_event_wall_ms: int,
    now_wall_ms: int,
    idle_timeout_ms: int,
) -> list[Window]:
    """All open windows of a partition, oldest first, once its data has really stopped.

    The watermark only moves with new events, so without this the last windows before a
    pause (or windows restored after a restart) would never close. Wall-clock time is used
    only for this decision: when no event arrived for ``idle_timeout_ms`` (``now -
    last_event ≥ timeout``). Otherwise nothing closes. Initialise ``last_event_wall_ms``
    to the time the partition was assigned, so restored windows also close eventually.
    """
    if idle_timeout_ms < 0:
        raise ValueError(f"idle timeout must be >= 0, got {idle_timeout_ms!r}")
    if now_wall_ms - last_event_wall_ms < idle_timeout_ms:
        return []
    return sorted(set(open_windows))


def delta_window(t_prev_ms: int, t_cur_ms: int, size_ms: int) -> Window:
    """The window a counter delta between scrapes at ``t_prev_ms`` and ``t_cur_ms`` goes to.

    It is the window containing ``t_cur_ms``, because:

    * the increase happened somewhere in ``(t_prev, t_cur]`` and becomes known only at
      ``t_cur``; the sample carrying it is stamped ``t_cur``, so it is late exactly when the
      sample is, and no closed window has to be reopened;
    * each delta lands in exactly one window, so the windows' sums add up to the total
      increase (Prometheus' non-extrapolated ``increase`` over aligned ranges instead drops
      the step straddling a boundary);
    * it depends only on event timestamps, so replays give identical windows.

    A window's delta sum therefore equals the increase between the last sample before
    the window and the last sample in it. Samples not newer than the previous one must be
    dropped before (out-of-order delivery), hence the :class:`ValueError`.
    """
    if t_cur_ms <= t_prev_ms:
        raise ValueError(f"delta must go forward in time: {t_prev_ms!r} -> {t_cur_ms!r}")
    return window_for(t_cur_ms, size_ms)
