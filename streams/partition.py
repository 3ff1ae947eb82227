"""Per-partition event-time bookkeeping for the node stage: watermark, the nodes known on the
partition, and which windows are due to close.

State (one table key per source partition, `partition:<n>`, written only from events of
that partition so its changelog stays co-partitioned):

    {"max": highest scrape_ts_ms seen (None before the first event),
     "nodes": sorted node names known on the partition,
     "next": {size_ms: start of the oldest window not closed yet},
     "idle": True after an idle close, until the next event}

A window closes when the watermark (max − allowed lateness) reaches its end, or, after the
idle timeout (wall clock, decided by the caller), every window up to the one holding `max`.
Every node known on the partition gets every window closed from its first window on, so the
set of partials the cluster stage receives does not depend on timing.
"""

from __future__ import annotations

from bisect import insort

from streams.config import StreamSettings
from streams.windows import watermark, window_start


def new_partition_state() -> dict:
    return {"max": None, "nodes": [], "next": {}, "idle": False}


def observe(state: dict, ts_ms: int, node: str, settings: StreamSettings) -> None:
    """An event of `node` at `ts_ms` (late or not): raise the max, learn the node."""
    if state["max"] is None or ts_ms > state["max"]:
        state["max"] = ts_ms
    if node not in state["nodes"]:
        insort(state["nodes"], node)
    for size in settings.sizes_ms:
        state["next"].setdefault(str(size), window_start(ts_ms, size))


def late_reason(state: dict, ts_ms: int, settings: StreamSettings) -> str | None:
    """Why a scrape at ts_ms cannot be counted any more, or None."""
    for size in settings.sizes_ms:
        nxt = state["next"].get(str(size))
        if nxt is not None and window_start(ts_ms, size) < nxt:
            wm = None if state["max"] is None else watermark(state["max"], settings.lateness_ms)
            return (f"window [{window_start(ts_ms, size)}, {window_start(ts_ms, size) + size}) of size "
                    f"{size // 1000} s already closed (partition watermark {wm}, "
                    f"allowed lateness {settings.lateness_ms // 1000} s)")
    return None


def due_windows(state: dict, settings: StreamSettings, *, idle: bool = False) -> list[tuple[int, int]]:
    """(size_ms, start_ms) of the windows to close now, by end time then size.

    By watermark: windows with end ≤ max − lateness. When `idle`: every window up to and
    including the one holding `max` (data really stopped)."""
    if state["max"] is None:
        return []
    wm = watermark(state["max"], settings.lateness_ms)
    due: list[tuple[int, int, int]] = []
    for size in settings.sizes_ms:
        start = state["next"].get(str(size))
        if start is None:
            continue
        limit = window_start(state["max"], size) + size if idle else wm
        while start + size <= limit:
            due.append((start + size, size, start))
            start += size
    due.sort()
    return [(size, start) for _end, size, start in due]


def mark_closed(state: dict, size: int, start: int) -> None:
    key = str(size)
    if state["next"].get(key, start) <= start:
        state["next"][key] = start + size


def progress(state: dict) -> dict[str, int]:
    """What the partition tells the cluster stage: every window ending at or before
    `through[size]` has been closed and its partials sent."""
    return {size: nxt for size, nxt in sorted(state["next"].items())}
