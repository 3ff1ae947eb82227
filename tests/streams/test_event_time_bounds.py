"""Event time is bounded: a scrape stamped far ahead of the trusted clock, or not after the
epoch, goes to `.late` (clock_skew / too_old) without moving the watermark; no input makes the
node stage enumerate unbounded windows; the stream stages' dead letters are the bounded DLQ
contract; cluster-scope records carry no `node` label of the target's own.

The node stage is driven in-process over dict tables with a fake trusted clock."""

from __future__ import annotations

import asyncio
import random
import time

import orjson
import pytest

from contracts.dlq import DLQ_SCHEMA, MAX_ENVELOPE_BYTES, MAX_ORIGINAL_BYTES
from contracts.records import Sample
from streams import aggregate, partition
from streams.config import StreamSettings
from streams.stages import ClusterStage, NodeStage
from streams.replay import trusted_clock_ms
from tests.streams import record_reference
from tests.streams.reference import FakeClock, run_reference
from tests.streams.simdata import START_S, scrape_records
from tests.streams.test_stages import record

S = StreamSettings(topic_prefix="u", partitions=1)
NOW = START_S * 1000 + 600_000  # the trusted clock: 10 min after the first simulated scrape
INT64_MAX = 2**63 - 1
INT64_MIN = -2**63


class Run:
    """A NodeStage over a dict table; every send recorded as (topic, key, value, timestamp)."""

    def __init__(self, settings: StreamSettings = S, now_ms: int = NOW) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, int | None]] = []
        self.now_ms = now_ms
        self.table: dict = {}
        self.offset = 0

        async def send(topic, key, value, ts_ms, part):
            self.sent.append((topic, key, value, ts_ms))
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

        self.stage = NodeStage(settings, self.table, send, clock=FakeClock(), trusted_clock_ms=lambda: self.now_ms)

    def feed(self, *records) -> None:
        async def go():
            for r in records:
                await self.stage.on_sample(0, self.offset, r.key, r.encode())
                self.offset += 1
        asyncio.run(go())

    def feed_raw(self, value: bytes, key: bytes | None = b"k") -> None:
        asyncio.run(self.stage.on_sample(0, self.offset, key, value))
        self.offset += 1

    def on(self, topic: str) -> list:
        return [(k, orjson.loads(v), ts) for t, k, v, ts in self.sent if t == topic]

    def late(self) -> list[dict]:
        return [v for _k, v, _ts in self.on("u.late")]


def scrapes(node: str, first_s: int, count: int, step_s: int = 15) -> list:
    return [record(node=node, ts=(first_s + i * step_s) * 1000) for i in range(count)]


def interleaved(*series):
    return [r for group in zip(*series) for r in group]


def test_one_producer_with_a_fast_clock_does_not_make_the_other_nodes_late():
    run = Run()
    t0 = NOW // 1000 - 300
    run.feed(*interleaved(scrapes("a", t0, 4), scrapes("b", t0, 4)))
    ahead = record(node="fast", ts=NOW + 50 * 60_000)  # 50 min ahead of the trusted clock
    run.feed(ahead)
    run.feed(*interleaved(scrapes("a", t0 + 60, 12), scrapes("b", t0 + 60, 12)))
    late = run.late()
    assert [(x["node"], x["reason"]) for x in late] == [("fast", "clock_skew")]
    assert "ahead of the trusted clock" in late[0]["detail"]
    assert run.stage.stats["clock_skew"] == 1 and run.stage.rejected == {"fast": {"clock_skew": 1}}
    # the watermark follows the good scrapes only
    pstate = orjson.loads(run.table["partition:0"])
    assert pstate["max"] == (t0 + 60 + 11 * 15) * 1000
    health = [v for _k, v, _ts in run.on("u.health")]
    assert health and all(h["window"]["end_ms"] <= NOW for h in health)


@pytest.mark.parametrize("ts, reason", [(NOW + 2 * 3600_000, "clock_skew"), (INT64_MAX, "clock_skew"),
                                        (INT64_MIN, "too_old"), (0, "too_old"), (-1, "too_old")])
def test_an_unbelievable_scrape_time_goes_to_late_with_a_sendable_timestamp(ts, reason):
    run = Run()
    good = scrapes("a", NOW // 1000 - 120, 8)
    run.feed(*good[:4], record(node="b", ts=ts), *good[4:])
    [(key, late, kafka_ts)] = run.on("u.late")
    assert late["reason"] == reason and late["scrape_ts_ms"] == ts and late["node"] == "b" and key == b"b"
    assert kafka_ts is None  # the producer stamps it: never a timestamp the broker refuses
    assert run.stage.stats[reason] == 1
    pstate = orjson.loads(run.table["partition:0"])
    assert pstate["max"] == good[-1].scrape_ts_ms and pstate["nodes"] == ["a"]


def test_zero_first_on_a_fresh_partition_does_not_enumerate_windows_from_the_epoch():
    run = Run()
    run.feed(record(node="a", ts=0), *scrapes("a", NOW // 1000 - 120, 8))
    assert [x["reason"] for x in run.late()] == ["too_old"]
    assert len(run.on("u.health")) <= 4  # windows of the good data only


def test_a_jump_in_event_time_skips_the_windows_nobody_can_be_in():
    settings = StreamSettings(topic_prefix="u", partitions=1, max_clock_skew_s=10**12)
    p = partition.new_partition_state()
    partition.observe(p, 1, "a", settings)  # a first scrape 1 ms after the epoch
    partition.observe(p, NOW, "a", settings)
    due = partition.due_windows(p, settings)
    horizon = partition.quiet_horizon_ms(settings)
    assert due and all(start < 1 + horizon for _size, start in due)
    assert len(due) <= horizon // 60_000 + horizon // 300_000 + 2
    for size, start in due:
        partition.mark_closed(p, size, start)
    assert partition.due_windows(p, settings) == []  # the gap is skipped: nothing more to close
    partition.observe(p, NOW + 120_000, "a", settings)
    assert partition.due_windows(p, settings)[0][1] == partition.window_start(NOW, 60_000)


def test_due_windows_never_returns_more_than_the_cap():
    p = partition.new_partition_state()
    partition.observe(p, 60_000, "a", S)
    p["max"] = INT64_MAX  # a state restored from before the bounds
    due = partition.due_windows(p, S)
    assert len(due) == partition.MAX_DUE_WINDOWS and due[0] == (60_000, 60_000)


def test_data_inside_a_gap_shrinks_it():
    p = partition.new_partition_state()
    partition.observe(p, 60_000, "a", S)
    partition.observe(p, 100 * 3600_000, "a", S)
    partition.observe(p, 50 * 3600_000, "b", S)  # a scrape inside the gap: its windows must close
    [(quiet, resume)] = p["gaps"]
    assert quiet == 50 * 3600_000 + partition.quiet_horizon_ms(S) and resume == 100 * 3600_000


def test_gap_skipping_publishes_exactly_what_closing_every_window_publishes(monkeypatch):
    # a node pausing for an hour, another leaving: the records equal those of a run that
    # closes every window one by one (no gap noted)
    settings = StreamSettings(topic_prefix="u", partitions=2, node_gone_after_s=120, max_clock_skew_s=10**9)
    first = scrape_records(nodes=3, minutes=4)
    later = scrape_records(nodes=2, minutes=4, start_s=START_S + 3600)
    messages = [(r.key, r.encode()) for r in first + later]
    skipped = run_reference(settings, messages)
    monkeypatch.setattr(partition, "quiet_horizon_ms", lambda _s: 10**15)
    every = run_reference(settings, messages)
    assert skipped == every and len(skipped) > 100


def test_a_rejected_scrape_of_a_known_node_shows_in_its_health():
    run = Run()
    good = scrapes("a", NOW // 1000 - 300, 20)
    run.feed(*good[:6], record(node="a", ts=NOW + 3600_000), *good[6:])
    health = [v for _k, v, _ts in run.on("u.health") if v["scope"] == "node"]
    rejected = [h for h in health if "scrapes_rejected" in h["values"]]
    assert sorted((h["window"]["size_s"], h["values"]["scrapes_rejected"]) for h in rejected) == [(60, 1), (300, 1)]


def test_a_rejected_scrape_of_a_known_node_shows_in_the_cluster_health():
    partial = {"node": "a", "scrapes": 1, "up": 1, "dups": 0, "left": False, "rej": 2,
               "last": {"up": 1, "kpm": 1, "since_sync": 1.0, "stall": 0.0}, "c": {}, "h": {}, "g": {}}
    merged = aggregate.merge([partial, dict(partial, node="b", rej=3)], S)
    assert merged["health"]["scrapes_rejected"] == 5
    assert "scrapes_rejected" not in aggregate.merge([dict(partial, rej=0)], S)["health"]


def test_good_input_publishes_no_rejection_field():
    sent = run_reference(S, [(r.key, r.encode()) for r in scrape_records(nodes=2, minutes=6)])
    assert sent and not any(b"scrapes_rejected" in v or t == "u.late" for t, _k, v in sent)


def test_cluster_scope_records_carry_no_node_label_of_the_target():
    merged = {"c": {'x_total|{"node":"evil","exported_node":"y","zone":"z"}': 1.0}, "h": {}, "g": {},
              "health": {"nodes": 1, "scrapes": 1}, "present": 1}
    [rate] = [r for r in record_reference.cluster_records("c", 60_000, 0, merged, S) if r.kind == "rates"]
    assert rate.labels == {"exported_node": "y", "exported_exported_node": "evil", "zone": "z"}
    partial = {"cluster": "c", "node": "n1", "size_ms": 60_000, "start_ms": 0, "scrapes": 1, "up": 1, "dups": 0,
               "left": False, "last": {"up": 1, "kpm": 1, "since_sync": 1.0, "stall": 0.0},
               "c": {'x_total|{"node":"evil"}': 1.0}, "h": {}, "g": {}}
    node_rate = [r for r in record_reference.node_records(partial, S) if r.kind == "rates"][0]
    assert node_rate.labels == {"node": "evil"}  # node scope: the sink renames it (sinks/series.py)


def test_cluster_scope_labels_from_real_samples():
    fams = {"kubeproxy_x_total": "counter"}
    recs = [record(node="n1", ts=t * 1000, families=fams,
                   samples=[Sample("kubeproxy_x_total", {"node": "other"}, float(t))]) for t in (15, 30, 75, 130)]
    sent = run_reference(S, [(r.key, r.encode()) for r in recs])
    rates = [orjson.loads(v) for t, _k, v in sent if t == "u.rates"]
    assert {tuple(r["labels"]) for r in rates if r["scope"] == "cluster"} == {("exported_node",)}
    assert {tuple(r["labels"]) for r in rates if r["scope"] == "node"} == {("node",)}


def test_a_huge_undecodable_sample_is_dead_lettered_bounded_by_the_contract():
    run = Run()
    value = b"{" + b"x" * (3 << 20)
    run.feed_raw(value, key=b"k" * 5000)
    [(key, letter, ts)] = run.on("u.dlq")
    raw = [v for t, _k, v, _ts in run.sent if t == "u.dlq"][0]
    assert len(raw) <= MAX_ENVELOPE_BYTES and len(key) <= 1024 and ts is None
    assert letter["schema"] == DLQ_SCHEMA and letter["stage"] == "node" and letter["reason"] == "malformed"
    assert letter["source"] == {"topic": "u.samples", "partition": 0, "offset": 0, "key": "k" * 1024}
    assert letter["value_truncated"] and letter["value_bytes"] == len(value) and len(letter["value"]) == MAX_ORIGINAL_BYTES
    assert "JSON" in letter["error"]


def test_a_bad_cluster_partial_is_dead_lettered_by_the_contract():
    sent = []

    async def send(topic, key, value, ts_ms, part):
        sent.append((topic, key, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    stage = ClusterStage(S, {}, send, clock=FakeClock())
    asyncio.run(stage.on_message(0, 7, b"c", b"not json"))
    [(topic, _key, value)] = sent
    letter = orjson.loads(value)
    assert topic == "u.dlq" and letter["stage"] == "cluster" and letter["reason"] == "malformed"
    assert letter["source"]["topic"] == "u.cluster-partials" and letter["source"]["offset"] == 7


def test_replay_trusts_the_kafka_timestamp_up_to_the_range_end():
    assert trusted_clock_ms(1_000, None, S) == 1_000
    assert trusted_clock_ms(1_000, 5_000, S) == 1_000
    assert trusted_clock_ms(INT64_MAX, 5_000, S) == 5_000 + S.lateness_ms


def test_the_live_trusted_clock_is_the_wall_clock():
    stage = NodeStage(S, {}, None)  # type: ignore[arg-type]
    assert abs(stage.trusted_clock_ms() - time.time() * 1000) < 5_000


def test_observe_keeps_the_partitions_nodes_sorted_and_each_once() -> None:
    rng = random.Random(11)
    names = [f"node-{rng.randrange(300):03d}" for _ in range(2000)]
    p = partition.new_partition_state()
    for i, name in enumerate(names):
        partition.observe(p, NOW + i, name, S)
    assert p["nodes"] == sorted(set(names))


def test_due_windows_by_watermark_are_every_window_from_next_ending_by_it() -> None:
    rng = random.Random(12)
    for _ in range(2000):
        # the watermark often on a window boundary, or a millisecond either side of one
        mx = rng.randrange(0, 40) * 60_000 + S.lateness_ms + rng.choice((0, 0, 1, -1, rng.randrange(60_000)))
        nxt = {str(size): partition.window_start(max(0, mx - rng.randrange(0, 700_000)), size) for size in S.sizes_ms
               if rng.random() < 0.9}
        state = {"max": mx, "nodes": [], "next": nxt, "idle": False}
        wm = mx - S.lateness_ms
        expected = sorted((start + size, size, start) for size in S.sizes_ms if str(size) in nxt
                          for start in range(nxt[str(size)], wm - size + 1, size))
        assert partition.due_windows(state, S) == [(size, start) for _end, size, start in expected]
