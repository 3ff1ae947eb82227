"""Realistic scrape records from the deterministic simulator, and an independent reference
computation of window bucket deltas (for accuracy checks)."""

from __future__ import annotations

import math
from collections import defaultdict

from contracts.records import ScrapeRecord
from producers.node import NodeSettings, build_record
from producers.scrape import ScrapeOutcome
from producers.select import Selector
from simulator import Cluster

START_S = 1_700_000_000  # multiple of 300: windows line up with the first scrape


def scrape_records(nodes: int = 3, minutes: float = 6, interval_s: int = 15, seed: int = 7,
                   cluster: str = "sim", version: str = "1.28", start_s: int = START_S,
                   stop: dict[str, int] | None = None) -> list[ScrapeRecord]:
    """One record per node per interval, in time order (nodes interleaved).
    `stop` maps node -> scrape time (s) from which that node sends nothing."""
    sim = Cluster(nodes=nodes, seed=seed, version=version, start=float(start_s))
    selector = Selector()
    out = []
    steps = int(minutes * 60 // interval_s)
    for i in range(1, steps + 1):
        at = start_s + i * interval_s
        for name in sim.node_names:
            if stop and name in stop and at >= stop[name]:
                continue
            body = sim.render(name, at=float(at))
            outcome = ScrapeOutcome(body=body, duration_s=0.01, body_bytes=len(body), reason="ok")
            record, _ = build_record(NodeSettings(node=name, cluster=cluster), f"http://{name}:10249/metrics",
                                     at * 1000, outcome, selector)
            out.append(record)
    return out


def reference_bucket_deltas(records: list[ScrapeRecord], family: str, size_s: int
                            ) -> dict[tuple[str, int], dict[float, float]]:
    """(node, window start ms) -> le -> increase, computed naively from consecutive scrapes
    of each node (no reset in the data), the delta landing in the window of the later scrape."""
    prev: dict[str, dict[float, float]] = {}
    out: dict[tuple[str, int], dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for r in sorted(records, key=lambda r: (r.node, r.scrape_ts_ms)):
        cur = {}
        for s in r.samples:
            if s.name == family + "_bucket":
                le = s.labels["le"]
                cur[math.inf if le == "+Inf" else float(le)] = s.value
        if r.node in prev and cur:
            start = r.scrape_ts_ms - r.scrape_ts_ms % (size_s * 1000)
            for le, v in cur.items():
                out[(r.node, start)][le] += v - prev[r.node][le]
        if cur:
            prev[r.node] = cur
    return {k: dict(v) for k, v in out.items()}


def reference_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """A straightforward histogram_quantile, written independently of streams.quantiles."""
    items = sorted(buckets.items())
    total = items[-1][1]
    if total == 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for i, (le, count) in enumerate(items):
        if count >= rank:
            if le == math.inf:
                return items[-2][0]
            if i == 0 and le <= 0:
                return le
            return lower_bound + (le - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = le, count
    return items[-2][0]
