"""Benchmark: the cluster stage's state for one window of a very large cluster.

    python bench/bench_cluster_state.py [--nodes N] [--out FILE]

Feeds an in-process ClusterStage (dict tables, flushed every 2,000 messages as the Faust agent
does) the partials of N nodes named like EC2's private DNS names (45 characters) for one 60 s
window, one of them a node serving 10,000 series of one family, then the progress marker that
closes the window. Reports the time, the peak RSS, and the largest record the stage wrote per
kind of state key against the 1 MB a Kafka record may hold; as the baseline, the size the
index would have had with the node names inline (the layout before the member buckets).
Not a test; `make bench` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import resource
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.machine import describe, emit  # noqa: E402
from contracts.records import Sample  # noqa: E402
from streams import statecodec  # noqa: E402
from streams.config import StreamSettings  # noqa: E402
from streams.stages import ClusterStage, NodeStage  # noqa: E402
from tests.streams.reference import FakeClock, recording_send  # noqa: E402
from tests.streams.simdata import scrape_records  # noqa: E402

BATCH = 2000  # streams/agents.py BATCH_MAX
SETTINGS = StreamSettings(topic_prefix="bench", partitions=1, window_sizes_s=(60,))


def ec2_name(i: int) -> str:
    return f"ip-172-{i // 65536 % 256:03d}-{i // 256 % 256:03d}-{i % 256:03d}.eu-west-1.compute.internal"


class SizeTable(dict):
    """A dict table that remembers the largest value written per kind of key."""

    def __init__(self) -> None:
        super().__init__()
        self.largest: dict[str, int] = collections.defaultdict(int)

    def __setitem__(self, key, value) -> None:
        kind = key.split(":", 1)[0]
        self.largest[kind] = max(self.largest[kind], len(value))
        super().__setitem__(key, value)


def node_partials(wide_series: int) -> tuple[dict, bytes]:
    """A real node partial of the first 60 s window (from the simulator through a NodeStage), and
    the encoded partial of a node that served `wide_series` series of one gauge family."""
    records = scrape_records(nodes=1, minutes=2)
    family = "kubeproxy_sync_proxy_rules_iptables_total"
    partials: dict[int, list] = collections.defaultdict(list)

    async def run(wide: bool) -> bytes:
        partials.clear()
        stage = NodeStage(SETTINGS, {}, recording_send(SETTINGS, [], partials), clock=FakeClock())
        for offset, record in enumerate(records):
            if wide:
                extra = tuple(Sample(family, {"chain": f"KUBE-SEP-{k:08X}"}, float(k + offset))
                              for k in range(wide_series))
                record = dataclasses.replace(record, samples=record.samples + extra,
                                             families={**record.families, family: "gauge"})
            await stage.on_sample(0, offset, record.key, record.encode())
        return next(v for k, v in partials[0] if k is not None)

    return orjson.loads(asyncio.run(run(False))), asyncio.run(run(True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=50_000)
    parser.add_argument("--wide-series", type=int, default=10_000)
    parser.add_argument("--out", type=Path, help="also write the markdown report to FILE")
    args = parser.parse_args(argv)

    template, wide = node_partials(args.wide_series)
    names = [ec2_name(i) for i in range(args.nodes)]
    messages = []
    for i, name in enumerate(names):
        if i == args.nodes // 2:
            messages.append(wide.replace(b"node-000", name.encode()))
        else:
            messages.append(orjson.dumps(dict(template, node=name)))
    size, start = template["size_ms"], template["start_ms"]
    marker = orjson.dumps({"type": "progress", "src": 0, "through": {str(size): start + size}, "idle": False})
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    table, sent = SizeTable(), []
    stage = ClusterStage(SETTINGS, table, recording_send(SETTINGS, sent, {0: []}), clock=FakeClock())

    async def run() -> tuple[float, float]:
        t0 = time.perf_counter()
        for offset, value in enumerate(messages):
            await stage.message(0, offset, b"big", value)
            if (offset + 1) % BATCH == 0:
                await stage.flush()
        await stage.flush()
        t1 = time.perf_counter()
        await stage.message(0, len(messages), None, marker)
        await stage.flush()
        return t1 - t0, time.perf_counter() - t1

    ingest_s, close_s = asyncio.run(run())
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    health = [orjson.loads(v) for t, _k, v in sent if t == SETTINGS.topics.health and b'"scope":"cluster"' in v]
    if [h["values"]["nodes"] for h in health] != [args.nodes] or stage.stats["partials"] != args.nodes:
        print(f"bench_cluster_state: the window closed with {health and health[0]['values']['nodes']} nodes, "
              f"not {args.nodes}", file=sys.stderr)
        return 1
    inline_index = len(orjson.dumps({"open": {"big": {str(size): {str(start): sorted(names)}}}}))
    limit = statecodec.MAX_VALUE_BYTES
    rows = [
        ("index (`index:<q>`)", table.largest["index"]),
        ("member bucket (`members:…`, largest of 32)", table.largest["members"]),
        (f"node partial (`partial:…`, largest: the {args.wide_series:,}-series node)", table.largest["partial"]),
        ("baseline: the index with the names inline (earlier layout)", inline_index),
    ]
    report = [
        "# Cluster stage state: one window of a very large cluster",
        "",
        *describe(),
        f"- command: `bench/bench_cluster_state.py --nodes {args.nodes} --wide-series {args.wide_series}`",
        f"- input: {args.nodes:,} node partials of one 60 s window (names of 45 characters like EC2's; "
        f"simulator partials of {len(orjson.dumps(template)):,} bytes; one node with a {args.wide_series:,}-series "
        f"gauge family, {len(wide):,} bytes compressed), in-process ClusterStage over dict tables, "
        f"flushed every {BATCH} messages",
        f"- time: {ingest_s:.1f} s to take the partials ({args.nodes / ingest_s:,.0f}/s), "
        f"{close_s:.1f} s to close and merge the window",
        f"- peak RSS: {rss_peak / 1024:,.0f} MB ({rss_before / 1024:,.0f} MB with the input built, before the stage ran)",
        "",
        f"| largest record | bytes | share of the {limit:,}-byte limit |",
        "|---|---:|---:|",
        *(f"| {label} | {size_:,} | {size_ / limit:.0%} |" for label, size_ in rows),
    ]
    emit("\n".join(report) + "\n", args.out)
    return 0 if max(size_ for _label, size_ in rows[:3]) <= limit else 1


if __name__ == "__main__":
    sys.exit(main())
