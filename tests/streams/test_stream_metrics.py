"""The stream worker's own metrics, in-process: what the stages report (windows closed by size
and scope, late and dead-lettered records by reason), the state gauges, and
what /healthz and /readyz say."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams import partition
from streams.config import StreamSettings
from streams.selfmetrics import (StreamMetrics, open_cluster_windows, open_node_windows, stream_health,
                                 stream_ready)
from streams.stages import ClusterStage, NodeStage
from tests.streams.simdata import scrape_records

S = StreamSettings(topic_prefix="m", partitions=1, window_sizes_s=(60, 300))
TP = SimpleNamespace


def samples(metrics: StreamMetrics) -> dict[tuple[str, tuple], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def run_stages(records, extra=()) -> tuple[StreamMetrics, NodeStage, ClusterStage]:
    """Feed scrapes through the node stage and its cluster partials through the cluster stage."""
    metrics = StreamMetrics(clock=lambda: 1_700_000_000.0, samples_topic=S.topics.samples)
    partials: dict[int, list] = defaultdict(list)

    async def send(topic, key, value, ts_ms, part):
        if topic == S.cluster_partials_topic:
            partials[part or 0].append((key, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    node, cluster = NodeStage(S, {}, send), ClusterStage(S, {}, send)
    node.metrics = cluster.metrics = metrics

    async def go() -> None:
        messages = [(r.key, r.encode()) for r in records] + list(extra)
        for offset, (key, value) in enumerate(messages):
            await node.on_sample(0, offset, key, value)
        await cluster.on_message(0, 0, None, b"{not json")
        for offset, (key, value) in enumerate(partials[0], start=1):
            await cluster.on_message(0, offset, key, value)

    asyncio.run(go())
    return metrics, node, cluster


def test_stages_report_closed_windows_late_and_dead_letters() -> None:
    start = 1_700_000_100  # aligned to 300 s
    records = scrape_records(nodes=3, minutes=11, start_s=start)
    late = scrape_records(nodes=3, minutes=1, start_s=start)[0]  # long closed by the end
    metrics, node, _cluster = run_stages(records, [(late.key, late.encode()), (b"n", b"{broken")])
    got = samples(metrics)
    # 11 minutes, lateness 30 s: ten 60 s windows and one 300 s window... per scope
    node_60 = got[("kpp_stream_windows_closed_total", (("scope", "node"), ("window", "60s")))]
    node_300 = got[("kpp_stream_windows_closed_total", (("scope", "node"), ("window", "300s")))]
    assert node_60 >= 9 and node_300 >= 1
    # one cluster window per node-stage window here (one cluster, one partition)
    assert got[("kpp_stream_windows_closed_total", (("scope", "cluster"), ("window", "60s")))] == node_60
    assert got[("kpp_stream_windows_closed_total", (("scope", "cluster"), ("window", "300s")))] == node_300
    assert got[("kpp_stream_late_total", (("reason", partition.WINDOW_CLOSED),))] == 1 == node.stats["late"]
    # the broken scrape (node stage) and the broken partial (cluster stage)
    assert got[("kpp_stream_dlq_total", (("reason", "malformed"),))] == 2
    # the newest closed window ended at a known time; the clock is fixed
    newest_end = max(start + 60 * k for k in range(12) if start + 60 * k <= start + 11 * 60 - 30)
    assert got[("kpp_stream_newest_closed_window_age_seconds", ())] == 1_700_000_000.0 - newest_end
    assert got[("kpp_stream_up", ())] == 1
    assert ("process_cpu_seconds_total", ()) in got


def test_heartbeat_counts_node_states_and_open_windows_of_held_partitions() -> None:
    metrics, node, cluster = run_stages(scrape_records(nodes=3, minutes=4, start_s=1_700_000_100))
    assert metrics.last_beat is None and stream_ready(metrics.last_beat)[0] is False
    metrics.heartbeat(node, cluster, [TP(topic=S.topics.samples, partition=0)])
    got = samples(metrics)
    assert got[("kpp_stream_node_states", ())] == 3
    # newest scrape at +240 s, watermark +210 s: the 60 s window [180, 240) and [240, 300) are
    # open, and the 300 s window [0, 300)
    assert got[("kpp_stream_open_windows", ())] == 3
    # cluster windows wait for every source partition: two open in a held cluster-partials partition
    index = {"open": {"sim": {"60000": {"1700000280000": 1}, "300000": {"1700000100000": 1}}}}
    held = [TP(topic=S.cluster_partials_topic, partition=0)]
    metrics.heartbeat(node, SimpleNamespace(table={"index:0": index}), held)
    got = samples(metrics)
    assert got[("kpp_stream_node_states", ())] == 0  # the node-stage partition is not held any more
    assert got[("kpp_stream_open_windows", ())] == 2
    assert metrics.last_beat == 1_700_000_000.0 and stream_ready(metrics.last_beat)[0] is True


def test_scrapes_are_the_batches_sample_events_not_ticks() -> None:
    metrics = StreamMetrics(samples_topic="m.samples")
    events = [SimpleNamespace(message=SimpleNamespace(topic=t)) for t in ("m.samples", "m.stream-ticks", "m.samples")]
    metrics.batch_done("node", events, 0.0)
    metrics.batch_done("cluster", events[:1], 0.0)
    got = samples(metrics)
    assert got[("kpp_stream_scrapes_total", ())] == 2
    assert got[("kpp_stream_batch_duration_seconds_count", (("stage", "node"),))] == 1
    assert got[("kpp_stream_batch_duration_seconds_count", (("stage", "cluster"),))] == 1


def test_open_window_arithmetic() -> None:
    sizes = (60_000, 300_000)
    assert open_node_windows(None, sizes) == 0
    assert open_node_windows({"max": None, "next": {}}, sizes) == 0
    pstate = {"max": 1_000_250_000, "next": {"60000": 1_000_020_000, "300000": 1_000_200_000}}
    # 60 s windows starting 1_000_020_000 .. 1_000_200_000 (4), the 300 s one at 1_000_200_000 (1)
    assert open_node_windows(pstate, sizes) == 4 + 1
    index = {"open": {"a": {"60000": {"0": 1, "60000": 2}}, "b": {"300000": {"0": 1}}}}
    assert open_cluster_windows(index) == 3 and open_cluster_windows(None) == 0


def test_health_tolerates_an_idle_worker_and_fails_a_stalled_loop() -> None:
    assert stream_health(100.0, None) == (True, "starting")
    assert stream_health(100.0, 95.0) == (True, "ok: last heartbeat 5.0 s ago")
    ok, text = stream_health(500.0, 300.0, stall_after_s=120.0)
    assert not ok and "no heartbeat for 200 s" in text


def test_a_state_the_heartbeat_cannot_read_is_warned_once_and_still_beats(caplog) -> None:
    metrics = StreamMetrics(clock=lambda: 50.0)
    broken = SimpleNamespace(settings=S, table={"partition:0": b"\x00not a state"})
    for _ in range(3):
        metrics.heartbeat(broken, broken, [TP(topic=S.topics.samples, partition=0)])
    assert caplog.text.count("could not count the open windows") == 1
    assert metrics.last_beat == 50.0 and stream_health(51.0, metrics.last_beat)[0]


def test_every_late_reason_is_exposed_at_zero_before_the_first_late_record() -> None:
    # a series that appears with its first burst is invisible to increase(); the alert on late
    # records needs each reason's series to exist at 0 from the start
    from contracts.late import REASONS

    exposed = samples(StreamMetrics())
    for reason in REASONS:
        assert exposed[("kpp_stream_late_total", (("reason", reason),))] == 0.0
