"""What the stream stages keep in memory beyond their tables: nothing that grows with nodes x
windows (bench/profile_streams.py --rss measures the whole process)."""

from __future__ import annotations

import gc
import tracemalloc

from streams.aggregators import entry_quantile, slo_entry
from streams.config import StreamSettings
from tests.streams import record_reference
from tests.streams.reference import run_reference
from tests.streams.simdata import scrape_records

S = StreamSettings(topic_prefix="m", partitions=1)


def retained_by_stages(nodes: int, minutes: int) -> int:
    """Bytes allocated by streams/ code during a run and still held once its tables and
    outputs are gone."""
    messages = [(r.key, r.encode()) for r in scrape_records(nodes=nodes, minutes=minutes, version="1.28")]
    tracemalloc.start()
    try:
        sent = run_reference(S, messages, batch=500)
        assert sent
        del sent
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = snapshot.filter_traces([tracemalloc.Filter(True, "*/streams/*")])
    return sum(stat.size for stat in held.statistics("filename"))


def test_a_run_leaves_no_memory_growing_with_nodes_and_windows():
    # each node's step windows' SLO quantiles were once remembered process-wide (~4 kB a
    # node-window, 250 MiB of a 5,000-node worker after 3 minutes); now they live in the
    # node's SLO history and go with its state
    assert retained_by_stages(nodes=40, minutes=8) < 400_000


def test_slo_history_written_by_the_earlier_version_gives_the_same_record():
    windows = [(0, {"1.0": 1.0, "+Inf": 1.0}, 1.0), (60_000, {"1.0": 0.0, "100.0": 10.0, "+Inf": 10.0}, 10.0),
               (120_000, {}, 0.0), (180_000, {"0.5": 3.0, "40.0": 4.0, "+Inf": 4.0}, 4.0)]
    earlier = [[start, buckets, count] for start, buckets, count in windows]
    now = [slo_entry(start, buckets, count, S.slo_quantile) for start, buckets, count in windows]
    assert [len(e) for e in now] == [5] * 4 and now[2][4] is None
    records = [record_reference.slo_record("cluster", "c", None, 240_000, h, S, {}) for h in (earlier, now)]
    assert records[0].encode() == records[1].encode()
    assert records[0].values["windows_with_data"] == 3


def test_a_remembered_window_quantile_is_used_only_for_its_own_quantile():
    entry = slo_entry(0, {"1.0": 1.0, "100.0": 9.0, "+Inf": 10.0}, 10.0, 0.99)
    assert entry_quantile(entry, 0.99) == entry[4]
    assert entry_quantile(entry, 0.5) == entry_quantile([0, entry[1], 10.0], 0.5) != entry[4]
