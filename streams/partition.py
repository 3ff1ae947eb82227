"""Per-partition event-time bookkeeping for the node stage: watermark, the nodes known on the
partition, and which windows are due to close.

State (one table key per source partition, `partition:<n>`, written only from events of
that partition so its changelog stays co-partitioned):

    {"max": highest scrape_ts_ms seen (None before the first event),
     "nodes": sorted node names known on the partition,
     "next": {size_ms: start of the oldest window not closed yet},
     "idle": True after an idle close, until the next event,
     "gaps": [[quiet_from, resume], ...]  (only while a jump in event time is not closed past)}

A window closes when the watermark (max − allowed lateness) reaches its end, or, after the
idle timeout (wall clock, decided by the caller), every window up to the one holding `max`.
Every node known on the partition gets every window closed from its first window on, so the
set of partials the cluster stage receives does not depend on timing.

Event time is bounded, so that no input can make the stage enumerate unbounded windows:
* a scrape stamped more than `max_clock_skew` ahead of the trusted clock (`reject_reason`) or
  not after the epoch never reaches `observe`: it goes to `<prefix>.late` as `clock_skew` /
  `too_old`, so one producer with a fast clock cannot move the watermark past everyone else's
  scrapes, and a record stamped in 2100 cannot ask for every window until then;
* a legitimate jump (data resuming after a long pause, a first scrape from long ago) leaves a
  "gap": windows that start `node_gone_after + 2 x largest window` after the newest data before
  the jump cannot hold anything (every node known then has left by that time, see
  node_state.close_window), so `due_windows` skips them instead of closing them one by one;
* `due_windows` returns at most MAX_DUE_WINDOWS windows per call; the rest close on the next
  event or tick (a state restored from before these bounds still makes progress).
"""

from __future__ import annotations

from bisect import bisect_left

# the reasons of `<prefix>.late` records: the late-record contract's closed set
from contracts.late import CLOCK_SKEW, TOO_OLD, WINDOW_CLOSED
from streams.config import StreamSettings
from streams.windows import watermark, window_start


#: Most windows one `due_windows` call returns (all sizes together).
MAX_DUE_WINDOWS = 10_000


def new_partition_state() -> dict:
    return {"max": None, "nodes": [], "next": {}, "idle": False}


def quiet_horizon_ms(settings: StreamSettings) -> int:
    """After this much event time without data every node known on a partition has left
    (its last "left" window closed), so later windows hold nothing until data resumes."""
    return settings.node_gone_after_ms + 2 * max(settings.sizes_ms)


def reject_reason(ts_ms: int, trusted_now_ms: int, settings: StreamSettings) -> tuple[str, str] | None:
    """(reason, detail) when a scrape's time cannot be believed, before it touches any state."""
    if ts_ms <= 0:
        return TOO_OLD, f"scrape time {ts_ms} ms is not after the Unix epoch"
    ahead = ts_ms - trusted_now_ms
    if ahead > settings.max_clock_skew_ms:
        return CLOCK_SKEW, (f"scrape time {ts_ms} ms is {ahead / 1000:.0f} s ahead of the trusted clock "
                            f"({trusted_now_ms} ms; max clock skew {settings.max_clock_skew_s:g} s)")
    return None


def observe(state: dict, ts_ms: int, node: str, settings: StreamSettings) -> None:
    """An event of `node` at `ts_ms` (late or not): raise the max, learn the node, and note
    a jump past the quiet horizon as a gap whose windows `due_windows` skips."""
    prev = state["max"]
    if prev is None or ts_ms > prev:
        state["max"] = ts_ms
    nodes = state["nodes"]  # sorted: found by bisection (a partition may know thousands)
    at = bisect_left(nodes, node)
    if at == len(nodes) or nodes[at] != node:
        nodes.insert(at, node)
    for size in settings.sizes_ms:
        state["next"].setdefault(str(size), window_start(ts_ms, size))
    horizon = quiet_horizon_ms(settings)
    gaps = state.get("gaps")
    if gaps:
        # data inside a gap: the windows up to its own horizon may hold output again
        for gap in gaps:
            if ts_ms < gap[1]:
                gap[0] = max(gap[0], ts_ms + horizon)
        gaps[:] = [g for g in gaps if g[0] < g[1]]
        if not gaps:
            del state["gaps"]
    if prev is not None and ts_ms - prev > horizon:
        state.setdefault("gaps", []).append([prev + horizon, ts_ms])


def late_reason(state: dict, ts_ms: int, settings: StreamSettings) -> tuple[str, str] | None:
    """(reason, detail) when a scrape at ts_ms cannot be counted any more, or None: its
    window closed (`too_old` when even a node gone that long would have left)."""
    for size in settings.sizes_ms:
        nxt = state["next"].get(str(size))
        if nxt is not None and window_start(ts_ms, size) < nxt:
            wm = None if state["max"] is None else watermark(state["max"], settings.lateness_ms)
            reason = TOO_OLD if wm is not None and ts_ms < wm - quiet_horizon_ms(settings) else WINDOW_CLOSED
            return reason, (f"window [{window_start(ts_ms, size)}, {window_start(ts_ms, size) + size}) of size "
                            f"{size // 1000} s already closed (partition watermark {wm}, "
                            f"allowed lateness {settings.lateness_ms // 1000} s)")
    return None


def _past_gaps(start: int, size: int, gaps: list) -> int:
    for quiet_from, resume in gaps:  # in order of time: a jump can land in the next gap
        resume_start = window_start(resume, size)
        if quiet_from <= start < resume_start:
            start = resume_start
    return start


def due_windows(state: dict, settings: StreamSettings, *, idle: bool = False) -> list[tuple[int, int]]:
    """(size_ms, start_ms) of the windows to close now, by end time then size.

    By watermark: windows with end ≤ max − lateness. When `idle`: every window up to and
    including the one holding `max` (data really stopped). Windows inside a gap are skipped
    (closing them would publish nothing); at most MAX_DUE_WINDOWS, the oldest."""
    if state["max"] is None:
        return []
    wm = watermark(state["max"], settings.lateness_ms)
    if not idle and not state.get("gaps"):
        # the common case, on every scrape: no gap to skip, and no size's next window ends by
        # the watermark (what the loop below would find, without its lists)
        nxt = state["next"]
        for size in settings.sizes_ms:
            start = nxt.get(str(size))
            if start is not None and start + size <= wm:
                break
        else:
            return []
    gaps = sorted(state.get("gaps", ()))
    due: list[tuple[int, int, int]] = []
    for size in settings.sizes_ms:
        start = state["next"].get(str(size))
        if start is None:
            continue
        limit = window_start(state["max"], size) + size if idle else wm
        for _ in range(MAX_DUE_WINDOWS):
            start = _past_gaps(start, size, gaps)
            if start + size > limit:
                break
            due.append((start + size, size, start))
            start += size
    due.sort()
    return [(size, start) for _end, size, start in due[:MAX_DUE_WINDOWS]]


def mark_closed(state: dict, size: int, start: int) -> None:
    key = str(size)
    if state["next"].get(key, start) <= start:
        state["next"][key] = start + size
    gaps = state.get("gaps")
    if gaps:  # a gap every size has closed past is done
        nxt = state["next"]
        gaps[:] = [g for g in gaps if any(nxt[n] < window_start(g[1], int(n)) for n in nxt)]
        if not gaps:
            del state["gaps"]


def progress(state: dict) -> dict[str, int]:
    """What the partition tells the cluster stage: every window ending at or before
    `through[size]` has been closed and its partials sent."""
    return {size: nxt for size, nxt in sorted(state["next"].items())}
