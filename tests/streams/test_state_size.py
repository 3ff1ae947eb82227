"""Every state value and node partial the stages write stays under what one Kafka record may
hold (streams/statecodec.py), for a node serving 10,000 series of one family and for a cluster
window of 50,000 nodes; a scrape that would still take a node's state over it is dead-lettered;
values written before compression existed still decode."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import dataclasses
import json
import random
import sys

import orjson
import pytest

from contracts.records import Sample, ScrapeRecord
from streams import cluster, statecodec
from streams.config import StreamSettings
from streams.stages import ClusterStage, NodeStage
from tests.streams.reference import FakeClock, recording_send, run_reference
from tests.streams.simdata import scrape_records

S = StreamSettings(topic_prefix="u", partitions=2)
S1 = StreamSettings(topic_prefix="u", partitions=1)
WIDE_FAMILY = "kubeproxy_sync_proxy_rules_iptables_total"
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588


def wide(record: ScrapeRecord, series: int = 10_000, kind: str = "gauge", step: int = 0) -> ScrapeRecord:
    """`record` plus `series` series of one family (values moving with `step`)."""
    extra = tuple(Sample(WIDE_FAMILY, {"chain": f"KUBE-SEP-{k:08X}"}, float(k * 3 + step * (k % 7)))
                  for k in range(series))
    return dataclasses.replace(record, samples=record.samples + extra, families={**record.families, WIDE_FAMILY: kind})


def ec2_name(i: int) -> str:
    """45 characters, like EC2's private DNS names."""
    return f"ip-172-{i // 65536 % 256:03d}-{i // 256 % 256:03d}-{i % 256:03d}.eu-west-1.compute.internal"


class SizeTable(dict):
    """A dict table that remembers the largest value written per kind of key."""

    def __init__(self) -> None:
        super().__init__()
        self.largest: dict[str, int] = {}

    def __setitem__(self, key, value) -> None:
        kind = key.split(":", 1)[0]
        self.largest[kind] = max(self.largest.get(kind, 0), len(value))
        super().__setitem__(key, value)


@pytest.mark.parametrize("kind", ["gauge", "counter"])
def test_a_node_serving_10000_series_of_one_family_keeps_every_record_under_the_limit(kind):
    records = [wide(r, kind=kind, step=i) if r.node == "node-000" else r
               for i, r in enumerate(scrape_records(nodes=2, minutes=7))]
    messages = [(r.key, r.encode()) for r in records]
    assert max(len(v) for _k, v in messages) < 1_000_000  # a scrape the producer publishes
    node_table, cluster_table = SizeTable(), SizeTable()
    partials: list[bytes] = []
    sent = run_reference(S, messages, tables=(node_table, cluster_table), batch=7)
    for _key, value in cluster_table.items():
        partials.append(value)

    assert node_table.largest["node"] <= statecodec.MAX_VALUE_BYTES < KAFKA_DEFAULT_MAX_MESSAGE_BYTES
    assert cluster_table.largest["partial"] <= statecodec.MAX_VALUE_BYTES
    assert cluster_table.largest["index"] <= statecodec.MAX_VALUE_BYTES
    # the wide family reached the outputs, for the node and for the cluster
    scopes = {json.loads(v)["scope"] for t, _k, v in sent
              if t != "u.dlq" and json.loads(v).get("metric") == WIDE_FAMILY.removeprefix("kubeproxy_")}
    assert scopes == {"node", "cluster"}
    assert not [v for t, _k, v in sent if t in ("u.dlq", "u.late")]


def cluster_window(nodes: int, batch: int = 2000) -> tuple[SizeTable, list, ClusterStage]:
    """The partials of `nodes` nodes for the first 60 s and 300 s windows of cluster "big"
    through a ClusterStage over a dict table (flushed every `batch` messages, as the agent
    does), then the progress marker that closes both windows."""
    table, sent = SizeTable(), []
    stage = ClusterStage(S1, table, recording_send(S1, sent, {0: []}), clock=FakeClock())

    async def run() -> None:
        offset = 0
        for i in range(nodes):
            for size in S1.sizes_ms:
                partial = {"type": "partial", "src": 0, "cluster": "big", "node": ec2_name(i), "size_ms": size,
                           "start_ms": 0, "status": "missing", "left": False, "scrapes": 0, "up": 0, "dups": 0,
                           "last": None, "c": {}, "h": {}, "g": {}}
                await stage.message(0, offset, b"big", orjson.dumps(partial))
                offset += 1
                if offset % batch == 0:
                    await stage.flush()
        await stage.message(0, offset, None, orjson.dumps({"type": "progress", "src": 0, "idle": False,
                                                           "through": {"60000": 60_000, "300000": 300_000}}))
        await stage.flush()

    asyncio.run(run())
    return table, sent, stage


@pytest.mark.parametrize("nodes", [15_000, 50_000])
def test_a_cluster_window_of_many_ec2_named_nodes_keeps_every_record_under_the_limit(nodes):
    table, sent, stage = cluster_window(nodes)
    assert len(ec2_name(nodes - 1)) == 45
    assert max(table.largest.values()) <= statecodec.MAX_VALUE_BYTES
    health = [json.loads(v) for t, _k, v in sent if t == "u.health"]
    assert [(h["window"]["size_s"], h["values"]["nodes"]) for h in health] == [(60, nodes), (300, nodes)]
    assert stage.stats["windows"] == 2 and stage.stats["partials"] == 2 * nodes
    assert dict(table) == {"index:0": table["index:0"]}  # the windows' buckets and partials are gone


def test_a_re_emitted_partial_is_recognised_in_its_member_bucket():
    index, members = cluster.new_index(), {}
    names = [ec2_name(i) for i in range(300)]
    assert all(cluster.add_partial(index, "c", 60_000, 0, n, members) for n in reversed(names))
    assert not any(cluster.add_partial(index, "c", 60_000, 0, n, members) for n in names)
    assert index["open"] == {"c": {"60000": {"0": cluster.MEMBER_BUCKETS}}}
    assert cluster.take_window(index, "c", 60_000, 0, members) == sorted(names) and members == {}


def test_an_index_written_by_the_earlier_version_still_closes_its_windows():
    """Before the member buckets, an open window listed its nodes in the index."""
    settings = S1
    old_partial = {"type": "partial", "src": 0, "cluster": "c", "size_ms": 60_000, "start_ms": 0,
                   "status": "missing", "left": False, "scrapes": 0, "up": 0, "dups": 0, "last": None,
                   "c": {}, "h": {}, "g": {}}
    table = {"index:0": orjson.dumps({"off": 1, "progress": {}, "open": {"c": {"60000": {"0": ["a", "b"]}}},
                                      "closed": {}, "slo": {}}),
             **{cluster.partial_key("c", 60_000, 0, n): orjson.dumps(dict(old_partial, node=n)) for n in "ab"}}
    sent: list = []
    stage = ClusterStage(settings, table, recording_send(settings, sent, {0: []}), clock=FakeClock())

    async def run() -> None:
        await stage.on_message(0, 2, b"c", orjson.dumps(dict(old_partial, node="c")))
        await stage.on_message(0, 3, b"c", orjson.dumps(dict(old_partial, node="a")))  # a re-emission
        await stage.on_message(0, 4, None, orjson.dumps({"type": "progress", "src": 0,
                                                         "through": {"60000": 60_000}, "idle": False}))

    asyncio.run(run())
    (health,) = [json.loads(v) for t, _k, v in sent if t == "u.health"]
    assert health["values"]["nodes"] == 3 and stage.stats["partials"] == 1
    assert list(table) == ["index:0"]


def test_state_values_compress_when_large_and_plain_json_still_decodes():
    small = {"cluster": "c", "node": "n", "cb": {"x|{}": 1.0}}
    assert statecodec.encode(small) == orjson.dumps(small)  # what earlier versions wrote, unchanged
    large = {"g": {f"s|{{\"i\":\"{i}\"}}": [1.0, 1.0, 1.0] for i in range(20_000)}}
    raw = statecodec.encode(large)
    assert raw.startswith(statecodec.HEADER) and len(raw) < len(orjson.dumps(large)) // 5
    assert statecodec.decode(raw) == large and statecodec.decode(orjson.dumps(large)) == large
    with pytest.raises(ValueError, match="does not decompress"):
        statecodec.decode(statecodec.HEADER + b"garbage")


def _malloc_usable_size():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        usable = libc.malloc_usable_size
    except (OSError, AttributeError):
        return None
    usable.argtypes, usable.restype = [ctypes.c_void_p], ctypes.c_size_t
    return usable


@pytest.mark.skipif(_malloc_usable_size() is None, reason="the C library has no malloc_usable_size")
def test_state_values_held_in_the_table_take_no_more_memory_than_their_size():
    # the bytes objects of a node's state, its partition state and the cluster stage's partials
    # are held for every node between batches: each must be its own size, not the buffer the
    # JSON encoder grew while writing it (bytes objects this size are malloc'd, at their id)
    usable = _malloc_usable_size()
    node_table: dict = {}
    cluster_table: dict = {}
    records = scrape_records(nodes=4, minutes=4, version="1.28")
    run_reference(S1, [(r.key, r.encode()) for r in records], tables=(node_table, cluster_table),
                  finish_idle=False)
    values = [v for v in [*node_table.values(), *cluster_table.values()] if len(v) > 512]
    assert len([k for k in node_table if k.startswith("node:")]) == 4 and values
    for value in values:
        assert usable(id(value)) <= sys.getsizeof(value) + 64, (len(value), usable(id(value)))


def test_a_scrape_that_would_take_the_node_state_over_the_limit_is_dead_lettered(monkeypatch, caplog):
    """With a limit below the compressed state of a 10,000-series node, its wide scrape goes to
    the DLQ (reason state_too_large), the node's state stays as it was, the pipeline goes on:
    the derived records are those of the input without that scrape."""
    monkeypatch.setattr(statecodec, "MAX_VALUE_BYTES", 60_000)
    records = scrape_records(nodes=2, minutes=4)
    at = [i for i, r in enumerate(records) if r.node == "node-000"][4]  # one in the middle of a window
    messages = [(r.key, r.encode()) for r in records]
    wide_message = (records[at].key, wide(records[at]).encode())
    with_wide = messages[:at] + [wide_message] + messages[at + 1:]
    without = messages[:at] + messages[at + 1:]

    node_table = SizeTable()
    sent = run_reference(S, with_wide, tables=(node_table, {}))
    dead = [json.loads(v) for t, _k, v in sent if t == "u.dlq"]
    assert [d["reason"] for d in dead] == ["state_too_large"]
    assert dead[0]["source"]["topic"] == "u.samples" and dead[0]["value_truncated"]
    assert "node-000" in dead[0]["error"] and "60000 bytes" in dead[0]["error"]
    assert "dead-lettered" in caplog.text and "node-000" in caplog.text
    assert node_table.largest["node"] <= 60_000
    assert sorted(x for x in sent if x[0] != "u.dlq") == sorted(run_reference(S, without))


def test_a_state_value_over_the_limit_is_refused_with_its_key_before_kafka_is_asked():
    settings = StreamSettings(topic_prefix="u", partitions=1)
    stage = NodeStage(settings, {}, recording_send(settings, [], {0: []}), clock=FakeClock())
    noise = random.Random(1).randbytes(1_500_000).hex()  # compresses to about half: ~1.5 MB
    stage.cache.put(0, "node:huge", {"x": noise})
    with pytest.raises(statecodec.StateTooLarge, match="node:huge"):
        asyncio.run(stage.flush())
