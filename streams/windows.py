"""Event-time tumbling windows and watermarks, as pure functions over milliseconds.

Faust's windowed tables expire on wall-clock time and lose close events across partitions
(see the design notes), so the stream stage keeps windows in plain tables and decides here,
from event time only, which window a sample belongs to and when a window is final. The
shape follows quix-streams: windows are aligned to the Unix epoch, ``[start, end)`` with
``end`` exclusive, and a window closes once the watermark (highest event time seen minus
the allowed lateness) reaches its end. Everything is integer milliseconds so that results
are identical under replay. Which windows are due, late or idle is the partition state's
business (streams/partition.py), over these two functions.
"""

from __future__ import annotations

__all__ = ["watermark", "window_start"]


def window_start(ts_ms: int, size_ms: int) -> int:
    """Start of the epoch-aligned window of ``size_ms`` containing ``ts_ms``.

    Floor semantics, also before the epoch: ``window_start(-1, 60_000) == -60_000``.
    Every worker computes the same boundaries without coordination.
    """
    if size_ms <= 0:
        raise ValueError(f"window size must be positive, got {size_ms!r}")
    return ts_ms - ts_ms % size_ms


def watermark(max_event_ms: int, allowed_lateness_ms: int) -> int:
    """Event-time watermark: the highest event time seen minus the allowed lateness.

    Everything at or before the watermark is assumed to have arrived. The caller keeps
    ``max_event_ms`` per partition (never lowering it), so the watermark never goes back.
    """
    if allowed_lateness_ms < 0:
        raise ValueError(f"allowed lateness must be >= 0, got {allowed_lateness_ms!r}")
    return max_event_ms - allowed_lateness_ms
