"""The close's encoded outputs (streams/aggregate.py node_outputs / cluster_outputs) against the
records' plain statement: DerivedRecords (tests/streams/record_reference.py node_records /
cluster_records) encoded and ordered by encoded_records. Same send order, topics, keys, bytes and timestamps, over varied
windows: NaN/±Inf as JSON strings, int values, missing +Inf buckets, changed layouts, series
ids with and without labels (a `node` label renamed at cluster scope), gauges reported as
health, missing/left/rejected nodes, SLO histories of this and earlier versions."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from streams import aggregate
from streams.aggregators import slo_entry
from streams.config import StreamSettings
from streams.node_state import NETPROG, sid
from tests.streams.record_reference import cluster_records, encoded_records, node_records

SETTINGS = StreamSettings(topic_prefix="t")
ODD_SETTINGS = StreamSettings(topic_prefix="o", quantiles=(0.0, 0.25, 1.0), slo_quantile=0.5, slo_threshold_s=0.1)

json_float = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-5, 10**6),
                       st.sampled_from(["NaN", "+Inf", "-Inf", 0.0, -0.0, 1.0]))
count = st.one_of(st.integers(0, 1000).map(float), st.integers(0, 5), st.sampled_from([0.0, math.nan, math.inf, 1e12]))
labels = st.dictionaries(st.sampled_from(["ip_family", "node", "exported_node", "le_x", "é"]),
                         st.sampled_from(["IPv4", "IPv6", "n1", "", '"q"']), max_size=3)
metrics = st.sampled_from(["sync_proxy_rules_duration_seconds", NETPROG, "rules_total",
                           "sync_proxy_rules_last_timestamp_seconds", "x"])
series = st.builds(sid, metrics, labels)
le_keys = st.sampled_from(["0", "0.001", "0.5", "1", "1.0", "2.5", "+Inf", "+Inf", "+Inf"])
buckets = st.dictionaries(le_keys, count, max_size=6)


@st.composite
def ordinary_buckets(draw: st.DrawFn) -> dict[str, float]:
    keys = ["0.001", "0.5", "1", "2.5", "+Inf"]
    total, out = 0.0, {}
    for key in keys:
        total += draw(st.integers(0, 50))
        out[key] = total
    return out


histogram = st.tuples(buckets | ordinary_buckets(), count, json_float).map(list)
gauge = st.tuples(json_float, json_float, json_float).map(list)
history_entry = st.one_of(
    st.builds(lambda start, b, c: slo_entry(start, b, c, 0.99), st.integers(0, 10) .map(lambda i: i * 60_000),
              buckets | ordinary_buckets(), count),
    st.tuples(st.integers(0, 10).map(lambda i: i * 60_000), buckets | ordinary_buckets(), count).map(list),  # earlier
)
last = st.none() | st.fixed_dictionaries({
    "up": st.sampled_from([0, 1]), "kpm": st.sampled_from([0, 1, True]),
    "since_sync": st.none() | json_float.filter(lambda v: not isinstance(v, str)),
    "stall": st.none() | st.floats(0, 1e4) | st.integers(0, 100)})


@st.composite
def node_partials(draw: st.DrawFn) -> dict:
    scrapes = draw(st.integers(0, 20))
    partial = {
        "cluster": draw(st.sampled_from(["prod", "c-é"])), "node": draw(st.sampled_from(["n1", "node-2", ""])),
        "size_ms": draw(st.sampled_from([60_000, 300_000])), "start_ms": draw(st.integers(0, 10**6)) * 1000,
        "status": "present" if scrapes else "missing", "left": draw(st.booleans()), "scrapes": scrapes,
        "up": draw(st.integers(0, scrapes)), "dups": draw(st.integers(0, 3)), "last": draw(last),
        "c": draw(st.dictionaries(series, json_float.filter(lambda v: not isinstance(v, str)) | count, max_size=4)),
        "h": draw(st.dictionaries(series, histogram, max_size=4)),
        "g": draw(st.dictionaries(series, gauge, max_size=4)),
    }
    if draw(st.booleans()):
        partial["rej"] = draw(st.integers(1, 3))
    if draw(st.booleans()):
        partial["slo"] = draw(st.lists(history_entry, max_size=6))
    return partial


@settings(max_examples=400, deadline=None)
@given(partial=node_partials(), odd=st.booleans())
def test_node_outputs_are_the_encoded_node_records(partial: dict, odd: bool) -> None:
    s = ODD_SETTINGS if odd else SETTINGS
    assert aggregate.node_outputs(partial, s) == encoded_records(node_records(partial, s), s.topics)


@settings(max_examples=200, deadline=None)
@given(partials=st.lists(node_partials(), min_size=1, max_size=4), with_slo=st.booleans(), odd=st.booleans())
def test_cluster_outputs_are_the_encoded_cluster_records(partials: list[dict], with_slo: bool, odd: bool) -> None:
    s = ODD_SETTINGS if odd else SETTINGS
    histories = [p.pop("slo") for p in partials if "slo" in p]
    merged = aggregate.merge(partials, s)
    history = (histories[0] if histories else []) if with_slo else None
    expected = encoded_records(cluster_records("prod", 60_000, 120_000, merged, s, history), s.topics)
    assert aggregate.cluster_outputs("prod", 60_000, 120_000, merged, s, history) == expected


def test_send_order_sorts_alike() -> None:
    """Entries of several windows and nodes sort as their records do (the close sends them sorted)."""
    partials = [
        {"cluster": "c", "node": node, "size_ms": size, "start_ms": start, "status": "present", "left": False,
         "scrapes": 1, "up": 1, "dups": 0, "last": {"up": 1, "kpm": 1, "since_sync": 1.0, "stall": 0.0},
         "c": {sid("a", {"z": "1"}): 1.0, sid("a", {"y": "2"}): 2.0, sid("a", {}): 0.0},
         "h": {sid(NETPROG, {}): [{"1": 1.0, "+Inf": 2.0}, 2.0, 0.5]}, "g": {sid("g", {"node": "x"}): [1, 1, 1]},
         "slo": [slo_entry(0, {"1": 1.0, "+Inf": 2.0}, 2.0, 0.99)]}
        for node in ("b", "a") for size, start in ((60_000, 240_000), (300_000, 0))]
    records = [r for p in partials for r in node_records(p, SETTINGS)]
    expected = [(topic, key, value) for _o, topic, key, value, _t in
                sorted(encoded_records(records, SETTINGS.topics), key=lambda e: e[0])]
    entries = [e for p in partials for e in aggregate.node_outputs(p, SETTINGS)]
    assert [(topic, key, value) for _o, topic, key, value, _t in sorted(entries, key=lambda e: e[0])] == expected
