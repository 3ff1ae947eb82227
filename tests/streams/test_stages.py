"""The stream stages in-process (dict tables): pure logic of node state, partitions, cluster
close rule, aggregation and SLO, and the guarantees that do not need a broker."""

from __future__ import annotations

import json
import math

import orjson
import pytest

from contracts.derived import DerivedRecord
from contracts.records import Sample, ScrapeRecord
from streams import aggregate, cluster, node_state, partition
from streams.aggregators import HistogramDeltas
from streams.config import StreamSettings, quantile_name
from tests.streams import record_reference
from tests.streams.reference import cluster_messages, run_reference
from tests.streams.simdata import reference_bucket_deltas, reference_quantile, scrape_records

S = StreamSettings(topic_prefix="u", partitions=2)


def msgs(records):
    return [(r.key, r.encode()) for r in records]


def decoded(sent, kind=None):
    return [DerivedRecord.decode(v) for t, _k, v in sent if kind is None or t == f"u.{kind}"]


def record(node="n1", ts=60_000, samples=(), families=None, up=1, kpm=True, cluster_name="c"):
    return ScrapeRecord(node=node, cluster=cluster_name, target="t", scrape_ts_ms=ts, up=up, scrape_duration_s=0.0,
                        body_bytes=0, samples=tuple(samples), families=families or {}, kube_proxy_metrics=kpm)


def test_quantile_names_and_settings_validation():
    assert [quantile_name(q) for q in (0.5, 0.9, 0.99, 0.999)] == ["p50", "p90", "p99", "p999"]
    with pytest.raises(ValueError):
        StreamSettings(window_sizes_s=(60, 300), slo_window_s=90)
    assert StreamSettings(window_sizes_s=(300, 60, 60)).window_sizes_s == (60, 300)


def test_group_samples_converts_legacy_microseconds_and_strips_prefix():
    fam = "kubeproxy_sync_proxy_rules_latency_microseconds"
    samples = [Sample(fam + "_bucket", {"le": "1000"}, 2.0), Sample(fam + "_bucket", {"le": "+Inf"}, 3.0),
               Sample(fam + "_sum", {}, 5000.0), Sample(fam + "_count", {}, 3.0),
               Sample("kubeproxy_sync_proxy_rules_endpoint_changes_total", {}, 7.0)]
    scrape = node_state.group_samples(record(samples=samples, families={
        fam: "histogram", "kubeproxy_sync_proxy_rules_endpoint_changes_total": "counter"}))
    snap = scrape.hists["sync_proxy_rules_duration_seconds|{}"]
    assert snap.buckets == {0.001: 2.0, math.inf: 3.0} and snap.sum == 0.005 and snap.count == 3.0
    assert scrape.counters == {"sync_proxy_rules_endpoint_changes_total|{}": 7.0}


def test_counter_reset_duplicates_and_windows():
    fams = {"kubeproxy_x_total": "counter"}
    state = node_state.new_state(record())
    for ts, value in ((15_000, 10.0), (30_000, 15.0), (45_000, 3.0), (75_000, 4.0)):
        node_state.apply_scrape(state, record(ts=ts, samples=[Sample("kubeproxy_x_total", {}, value)],
                                              families=fams), S)
    node_state.count_duplicate(state, 75_000, S)
    first = state["win"]["60000"]["0"]
    assert first["c"]["x_total|{}"] == 0 + 5 + 3  # first sample no increase; reset counts the new value
    assert state["win"]["60000"]["60000"]["c"]["x_total|{}"] == 1 and state["win"]["60000"]["60000"]["dups"] == 1
    closed = node_state.close_window(state, 60_000, 0, S)
    assert closed["status"] == "present" and closed["scrapes"] == 3 and "slo" in closed
    missing = node_state.close_window(state, 60_000, 120_000, S)
    assert missing["status"] == "missing" and not missing["left"]


def test_partition_watermark_due_windows_and_late():
    p = partition.new_partition_state()
    partition.observe(p, 15_000, "a", S)
    partition.observe(p, 89_000, "b", S)
    assert partition.due_windows(p, S) == []  # watermark 59 s < 60 s
    partition.observe(p, 90_000, "a", S)
    assert partition.due_windows(p, S) == [(60_000, 0)]
    partition.mark_closed(p, 60_000, 0)
    assert partition.late_reason(p, 59_000, S) and partition.late_reason(p, 60_000, S) is None
    assert partition.due_windows(p, S, idle=True) == [(60_000, 60_000), (300_000, 0)]
    assert p["nodes"] == ["a", "b"]


def test_cluster_close_rule_waits_for_every_partition_or_idle_or_silent():
    idx, members = cluster.new_index(), {}
    cluster.add_partial(idx, "c", 60_000, 0, "n1", members)
    assert not cluster.add_partial(idx, "c", 60_000, 0, "n1", members)  # re-emission ignored
    cluster.apply_progress(idx, 0, {"60000": 60_000}, False)
    assert cluster.due_windows(idx, S) == []  # partition 1 not heard from
    assert cluster.due_windows(idx, S, silent=[1]) == [("c", 60_000, 0)]  # cluster_timeout fallback
    cluster.apply_progress(idx, 1, {"60000": 0}, True)  # idle partition is not waited for
    assert cluster.due_windows(idx, S) == [("c", 60_000, 0)]
    cluster.apply_progress(idx, 1, {"60000": 0}, False)
    assert cluster.due_windows(idx, S) == []
    cluster.apply_progress(idx, 1, {"60000": 60_000}, False)
    assert cluster.take_window(idx, "c", 60_000, 0, members) == ["n1"] and not members
    assert cluster.late_reason(idx, "c", 60_000, 0) and cluster.late_reason(idx, "c", 60_000, 60_000) is None


def test_quantiles_null_without_observations_and_merge_is_order_independent():
    values = HistogramDeltas.flush([{"1.0": 0.0, "+Inf": 0.0}, 0.0, 0.0], (0.5, 0.99))
    assert values == {"p50": None, "p99": None, "mean": None, "count": 0.0, "sum": 0.0}
    p1 = {"node": "a", "scrapes": 1, "up": 1, "dups": 0, "left": False, "last": {"up": 1, "kpm": 1, "since_sync": 1.0,
          "stall": 0.0}, "c": {"x|{}": 0.1}, "h": {"h|{}": [{"1.0": 1.0, "+Inf": 2.0}, 2.0, 0.3]},
          "g": {"g|{}": [1.0, 1.0, 2.0]}}
    p2 = dict(p1, node="b", c={"x|{}": 0.2}, h={"h|{}": [{"1.0": 3.0, "+Inf": 3.0}, 3.0, 0.7]})
    p3 = dict(p1, node="c", c={"x|{}": 0.3})
    m1 = aggregate.merge([p1, p2, p3], S)
    m2 = aggregate.merge([p3, p1, p2], S)
    assert orjson.dumps(m1) == orjson.dumps(m2)
    assert m1["h"]["h|{}"][0] == {"1.0": 5.0, "+Inf": 7.0} and m1["g"]["g|{}"] == [3.0, 1.0, 2.0]


def test_slo_share_within():
    history = [[0, {"1.0": 1.0, "+Inf": 1.0}, 1.0], [60_000, {"1.0": 0.0, "100.0": 10.0, "+Inf": 10.0}, 10.0],
               [120_000, {}, 0.0]]
    rec = record_reference.slo_record("cluster", "c", None, 180_000, history, S, {})
    assert rec.window_start_ms == 180_000 - 300_000 and rec.values["share_within"] == 0.5
    assert rec.values["windows"] == 3 and rec.values["windows_with_data"] == 2 and rec.values["within"] == 0


def test_node_quantiles_equal_reference_histogram_quantile():
    records = scrape_records(nodes=2, minutes=5)
    sent = run_reference(S, msgs(records))
    ref = reference_bucket_deltas(records, "kubeproxy_network_programming_duration_seconds", 60)
    checked = 0
    for r in decoded(sent, "quantiles"):
        if r.scope == "node" and r.metric == "network_programming_duration_seconds" and r.window_size_s == 60:
            assert r.values["p99"] == pytest.approx(reference_quantile(0.99, ref[(r.node, r.window_start_ms)]),
                                                    rel=1e-12)
            checked += 1
    assert checked >= 8


def test_output_independent_of_interleaving_and_cluster_delivery_order():
    data = msgs(scrape_records(nodes=5, minutes=7, seed=3))
    base = sorted(run_reference(S, data))
    for seed in (1, 2, 3):
        assert sorted(run_reference(S, data, seed=seed)) == base


def test_replay_after_restore_is_idempotent():
    """Simulated crash: tables restored from a snapshot taken mid-stream, then every message
    from an earlier offset processed again → the union of outputs equals an uncrashed run."""
    data = msgs(scrape_records(nodes=3, minutes=6, seed=9))
    settings = StreamSettings(topic_prefix="u", partitions=1)
    full = set(run_reference(settings, data))
    node_t, cluster_t = {}, {}
    first = run_reference(settings, data[:40], tables=(node_t, cluster_t), finish_idle=False)
    # "committed" offset 30: the state already includes 30..39, which are processed again
    second = run_reference(settings, data[30:], tables=(dict(node_t), dict(cluster_t)), first_offset=30)
    got = first + second
    assert set(got) == full
    by_id = {}
    for t, _k, v in got:
        o = json.loads(v)
        ident = (t, o["scope"], o["node"], o["window"]["start_ms"], o["window"]["end_ms"], o["metric"],
                 json.dumps(o["labels"], sort_keys=True))
        assert by_id.setdefault(ident, v) == v


def test_bad_input_goes_to_dlq_and_down_scrapes_are_health():
    good = scrape_records(nodes=1, minutes=3)
    down = record(node="node-000", ts=good[-1].scrape_ts_ms + 15_000, up=0, cluster_name="sim")
    sent = run_reference(S, [(b"node-000", b"\xff\xfe"), *msgs(good), (down.key, down.encode())])
    dlq = [json.loads(v) for t, _k, v in sent if t == "u.dlq"]
    assert len(dlq) == 1 and "value_base64" in dlq[0] and dlq[0]["reason"]
    last = max((r for r in decoded(sent, "health") if r.scope == "node" and r.window_size_s == 60),
               key=lambda r: r.window_start_ms)
    assert last.values["down"] == 1 and last.values["up"] == 0


def test_node_alone_on_a_silent_partition_does_not_block_cluster_windows():
    """node-002 is alone on partition 1 and stops: its partition goes idle (wall clock), the
    cluster stage stops waiting for it and closes every window of the others."""
    stop = 1_700_000_000 + 120
    records = scrape_records(nodes=3, minutes=8, stop={"node-002": stop})
    sent = run_reference(S, msgs(records))
    cl = sorted(r.window_start_ms for r in decoded(sent, "health") if r.scope == "cluster" and r.window_size_s == 60)
    n0 = sorted(r.window_start_ms for r in decoded(sent, "health") if r.node == "node-000" and r.window_size_s == 60)
    assert cl == n0


# -- batching (how the Faust agents drive the stages) ------------------------------------------

def test_batched_processing_is_byte_identical_to_one_event_at_a_time():
    """The agents process a batch of events and flush once: outputs, their order and the
    final tables equal one-event-at-a-time processing, whatever the batch size."""
    settings = StreamSettings(topic_prefix="u", partitions=2, node_gone_after_s=180)
    records = scrape_records(nodes=5, minutes=12, seed=3, stop={"node-002": 1_700_000_000 + 240})
    data = msgs(records)
    data.insert(17, (b"node-001", b"{broken"))
    data.append(msgs(records[2:3])[0])  # late
    tables = ({}, {})
    expected = run_reference(settings, data, seed=4, tables=tables)
    for batch in (1, 3, 50, 10_000):
        batched_tables = ({}, {})
        got = run_reference(settings, data, seed=4, batch=batch, tables=batched_tables)
        assert got == expected, batch
        assert batched_tables == tables, batch


# Crashes between any two table writes: tests/streams/test_crash_model.py.


# -- end of data without a wall clock --------------------------------------------------------

def test_close_idle_and_finish_close_open_windows_without_a_clock():
    """close_idle(partition) closes what a partition has open at once (no idle timeout, no
    clock), idle marker included; finish() does it for every partition, flushed: a run ending
    with finish() equals the reference's end of data."""
    import asyncio

    from streams.stages import NodeStage
    from tests.streams.reference import recording_send

    records = scrape_records(nodes=3, minutes=2)
    sent, partials = [], {0: [], 1: []}

    async def run():
        frozen = lambda: 0.0  # noqa: E731 - a wall clock that never moves
        stage = NodeStage(S, {}, recording_send(S, sent, partials), clock=frozen)
        for offset, r in enumerate(records):
            await stage.on_sample(0, offset, r.key, r.encode())
        open_before = len(sent)
        await stage.close_idle(0)
        await stage.flush()
        closed_now = len(sent) - open_before
        again = len(sent)
        await stage.finish()
        return stage, closed_now, len(sent) - again

    stage, closed_now, after_finish = asyncio.run(run())
    # the 60 s window holding the last scrapes and the 300 s window: closed, health records out
    healths = [r for r in decoded(sent, "health") if r.window_end_ms > records[-1].scrape_ts_ms]
    assert closed_now > 0 and {r.window_size_s for r in healths} == {60, 300}
    assert after_finish == 0  # partition 0 idle already; partition 1 had nothing open
    markers = [m for q in (0, 1) for _k, v in partials[q] for m in cluster_messages(v) if m["type"] == "progress"]
    assert markers[-1]["idle"] and {m["src"] for m in markers if m["idle"]} == {0, 1}
    assert json.loads(stage.table["partition:1"])["idle"] is True


def test_grouping_by_a_remembered_scrape_shape_equals_grouping_each_sample():
    """A scrape of a shape seen before is grouped by that shape's plan: the same counters,
    gauges and histograms, in the same order, as classifying every sample; a change of
    family TYPE, of a label or of a value is honoured."""
    fam = "kubeproxy_h"
    fams = {fam: "histogram", "kubeproxy_c_total": "counter", "kubeproxy_g": "gauge"}
    rows = [Sample(fam + "_bucket", {"le": "1"}, 1.0), Sample(fam + "_bucket", {"le": "+Inf"}, 2.0),
            Sample(fam + "_sum", {}, 0.5), Sample(fam + "_count", {}, 2.0),
            Sample("kubeproxy_c_total", {"code": "200"}, 7.0), Sample("kubeproxy_c_total", {"code": "200"}, 8.0),
            Sample("kubeproxy_g", {}, 3.0), Sample("kubeproxy_x", {}, 1.0)]

    def grouped(scrape):
        return (list(scrape.counters.items()), list(scrape.gauges.items()),
                [(k, h.buckets, h.count, h.sum) for k, h in scrape.hists.items()])

    variants = [record(samples=rows, families=fams),
                record(samples=[*rows[:6], Sample("kubeproxy_g", {}, 4.0), rows[7]], families=fams),
                record(samples=rows, families={**fams, "kubeproxy_g": "counter"}),
                record(samples=[*rows[:4], Sample("kubeproxy_c_total", {"code": "500"}, 7.0), *rows[5:]],
                       families=fams)]
    for rec in variants * 2:  # the second round goes by the remembered plans
        assert grouped(node_state.group_samples(rec)) == grouped(node_state._group_rows(rec))
    assert grouped(node_state.group_samples(variants[2]))[1] == []  # kubeproxy_g now a counter


def test_node_states_past_the_decoded_bound_go_back_to_bytes_with_identical_output(monkeypatch):
    """Past MAX_DECODED_STATES a batch encodes back the node state changed longest ago (a
    batch or a close over thousands of nodes does not hold them all decoded): outputs, their
    order and the tables equal a run that holds every state decoded until the batch ends."""
    from streams import stages

    settings = StreamSettings(topic_prefix="u", partitions=2, node_gone_after_s=180)
    records = scrape_records(nodes=5, minutes=12, seed=3, stop={"node-002": 1_700_000_000 + 240})
    data = msgs(records)
    expected_tables: tuple[dict, dict] = ({}, {})
    expected = run_reference(settings, data, seed=4, batch=50, tables=expected_tables)
    monkeypatch.setattr(stages.StateCache.__init__, "__defaults__", (None, 1))
    got_tables: tuple[dict, dict] = ({}, {})
    got = run_reference(settings, data, seed=4, batch=50, tables=got_tables)
    assert got == expected and got_tables == expected_tables
    assert any(t == "u.quantiles" for t, _k, _v in got)
