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
     "open": {cluster: {size: {start: number of member buckets}}},
     "closed": {cluster: {size: highest end closed}},
     "slo": {cluster: [[start, pooled netprog buckets, count, q, q-quantile], ...]}}

the nodes received for an open window under `members:<cluster>|<size>|<start>|<bucket>`
(sorted names; the bucket is a hash of the name), and the partials themselves under
`partial:<cluster>|<size>|<start>|<node>`. The names are kept out of the index because a
window of 50,000 nodes named like `ip-10-123-45-67.eu-west-1.compute.internal` lists 2.4 MB of
them, more than one Kafka record takes; in MEMBER_BUCKETS buckets it is ~75 kB per record.
An index written by an earlier version lists the nodes in place of the bucket count
(`{start: [nodes]}`); such a window is read, extended and closed as it is.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left, insort
from typing import Iterable, Protocol

from streams.config import StreamSettings
from streams.aggregators import slo_entry
from streams.node_state import pooled_netprog


#: Buckets the node names of one open cluster window are spread over (see above).
MEMBER_BUCKETS = 32


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


class Members(Protocol):
    """Where the member buckets live: the stage's table (a dict in tests)."""

    def get(self, key: str) -> list | None: ...

    def __setitem__(self, key: str, names: list) -> None: ...

    def __delitem__(self, key: str) -> None: ...


def members_key(cluster: str, size: int, start: int, bucket: int) -> str:
    return f"members:{cluster}|{size}|{start}|{bucket}"


def member_bucket(node: str, buckets: int) -> int:
    return zlib.crc32(node.encode("utf-8", "surrogatepass")) % buckets


def add_partial(index: dict, cluster: str, size: int, start: int, node: str,
                members: Members) -> bool:
    """Record that node's partial arrived (in `members`, the member buckets' table). False when
    it is a re-emission (already there)."""
    starts = index["open"].setdefault(cluster, {}).setdefault(str(size), {})
    entry = starts.setdefault(str(start), MEMBER_BUCKETS)
    if isinstance(entry, list):  # an index of an earlier version: the names in place
        if node in entry:
            return False
        insort(entry, node)
        return True
    key = members_key(cluster, size, start, member_bucket(node, entry))
    names = members.get(key)
    if names is None:
        names = []
    at = bisect_left(names, node)
    if at < len(names) and names[at] == node:
        return False
    names.insert(at, node)
    members[key] = names
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


def take_window(index: dict, cluster: str, size: int, start: int, members: Members) -> list[str]:
    """Remove an open window from the index and its member buckets from `members`, mark it
    closed, return its nodes (sorted)."""
    per_size = index["open"].get(cluster, {})
    starts = per_size.get(str(size), {})
    entry = starts.pop(str(start), [])
    if isinstance(entry, list):
        nodes = entry
    else:
        nodes = []
        for bucket in range(entry):
            key = members_key(cluster, size, start, bucket)
            names = members.get(key)
            if names is not None:
                nodes.extend(names)
                del members[key]
        nodes.sort()
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
    history.append(slo_entry(start, buckets, count, settings.slo_quantile))
    index["slo"][cluster] = history
    return history
