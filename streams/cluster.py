"""Cluster stage, framework-free: accumulate node partials per (cluster, size, window) and
decide when a cluster window is complete.

THE CLOSE RULE. Node partials reach `<prefix>.cluster-partials` keyed by cluster. Each node
stage partition also broadcasts a progress marker to every cluster-partials partition after
the partials of each close: "source partition p has closed (and sent the partials of) every
window ending at or before through[size]". Since every node known on a source partition
sends a partial for every window from its first one (status "missing" when it had no
scrape, "left" once it has been missing for `node_gone_after`), the partials of window W
are complete once every source partition 0..P-1 has reported through ≥ W.end. A cluster
window therefore closes when, for every source partition, either

  1. its progress marker says through ≥ end (deterministic: independent of interleaving
     across partitions, of worker count and of processing speed), or
  2. its last marker said `idle`: the node stage saw no event on it for `idle_timeout`
     (wall clock) and closed everything it had — its data really stopped, or it never had
     any, or
  3. the cluster worker has heard nothing at all from that partition (no partial, no
     marker) for `cluster_timeout` wall-clock seconds while others progress (a node-stage
     worker that died and was not replaced).

(2) and (3) only fire when data stopped; a replay of complete data keeps every partition
progressing, so only (1) closes windows and the output is byte-identical.

A partial for a cluster window already closed goes to the late topic, unless its source
partition had already reported the window complete: then it is a re-emission after a crash,
identical to one the close included, and is skipped.

State per cluster-partials partition (one table key `index:<q>`):

    {"off": offset of the last message applied (replays after a restart are skipped),
     "progress": {src: {"through": {size: end}, "idle": bool}},
     "open": {cluster: {size: {start: [nodes received]}}},
     "closed": {cluster: {size: highest end closed}},
     "slo": {cluster: [[start, pooled netprog buckets, count], ...]}}

and the partials themselves under `partial:<cluster>|<size>|<start>|<node>`.
"""

from __future__ import annotations

from bisect import insort
from typing import Iterable

from streams.config import StreamSettings
from streams.node_state import pooled_netprog


def new_index() -> dict:
    return {"off": -1, "progress": {}, "open": {}, "closed": {}, "slo": {}}


def partial_key(cluster: str, size: int, start: int, node: str) -> str:
    return f"partial:{cluster}|{size}|{start}|{node}"


def apply_progress(index: dict, src: int, through: dict[str, int], idle: bool) -> None:
    prog = index["progress"].setdefault(str(src), {"through": {}, "idle": False})
    for size, end in through.items():
        if end > prog["through"].get(size, end - 1):
            prog["through"][size] = end
    prog["idle"] = bool(idle)


def late_reason(index: dict, cluster: str, size: int, start: int) -> str | None:
    closed = index["closed"].get(cluster, {}).get(str(size))
    if closed is not None and start + size <= closed:
        return (f"cluster window [{start}, {start + size}) of {cluster!r} already closed "
                f"(through {closed}): a source partition was idle or silent when it closed")
    return None


def reemitted(index: dict, src: int, size: int, start: int) -> bool:
    """A partial for a window its source partition already reported complete (progress
    through >= end): a node stage re-closing windows after a crash re-sends identical
    partials, which the close already included. Truly late partials come from a source the
    close did not wait for (idle or silent), whose progress was still before the end."""
    prog = index["progress"].get(str(src))
    return prog is not None and prog["through"].get(str(size), start) >= start + size


def add_partial(index: dict, cluster: str, size: int, start: int, node: str) -> bool:
    """Record that node's partial arrived. False when it is a re-emission (already there)."""
    nodes = index["open"].setdefault(cluster, {}).setdefault(str(size), {}).setdefault(str(start), [])
    if node in nodes:
        return False
    insort(nodes, node)
    return True


def ready(index: dict, size: int, end: int, partitions: int, silent: Iterable[int] = ()) -> bool:
    silent = set(silent)
    for src in range(partitions):
        prog = index["progress"].get(str(src))
        if src in silent:
            continue
        if prog is None:
            return False
        if prog["idle"]:
            continue
        if prog["through"].get(str(size), end - 1) < end:
            return False
    return True


def due_windows(index: dict, settings: StreamSettings, silent: Iterable[int] = ()) -> list[tuple[str, int, int]]:
    """(cluster, size, start) of the open cluster windows the close rule allows, ordered by
    end, then size, then cluster — windows of a cluster close in time order."""
    silent = set(silent)
    due = []
    for cluster, per_size in index["open"].items():
        for size, starts in per_size.items():
            for start in starts:
                s, b = int(size), int(start)
                if ready(index, s, b + s, settings.partitions, silent):
                    due.append((b + s, s, cluster, b))
    due.sort()
    return [(cluster, size, start) for _end, size, cluster, start in due]


def take_window(index: dict, cluster: str, size: int, start: int) -> list[str]:
    """Remove an open window from the index, mark it closed, return its nodes (sorted)."""
    per_size = index["open"].get(cluster, {})
    starts = per_size.get(str(size), {})
    nodes = starts.pop(str(start), [])
    if not starts:
        per_size.pop(str(size), None)
    if not per_size:
        index["open"].pop(cluster, None)
    closed = index["closed"].setdefault(cluster, {})
    closed[str(size)] = max(closed.get(str(size), start + size), start + size)
    return nodes


def roll_slo(index: dict, cluster: str, start: int, merged: dict, settings: StreamSettings) -> list:
    """Add a closed step window's pooled network-programming buckets to the cluster's rolling
    history and return the part covering [end − slo_window, end)."""
    end = start + settings.step_s * 1000
    buckets, count = pooled_netprog(merged)
    history = [h for h in index["slo"].get(cluster, []) if h[0] >= end - settings.slo_window_s * 1000]
    history.append([start, buckets, count])
    index["slo"][cluster] = history
    return history
