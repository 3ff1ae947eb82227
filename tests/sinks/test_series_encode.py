"""Pure parts: series naming, label sanitizing, escaping round trips, the protobuf encoder,
batching and the split of a rejected batch."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from contracts.derived import DerivedRecord
from contracts.errors import ConfigError
from sinks.encode import (
    Unrepresentable, encode_influx, encode_prometheus_text, encode_remote_write, escape_influx_tag, format_float,
    influx_split, snappy_compress, unescape_influx, varint,
)
from sinks.series import Point, derived_points, merge_labels, parse_extra_labels, sanitize_label_name
from sinks.sink import Backoff, BatchingSink, BatchLimits, Item
from sinks.writers import StoreRejected, StoreUnavailable, VictoriaMetricsWriter, WriterSettings

RECORD = DerivedRecord(
    kind="quantiles", scope="node", cluster="prod", node="node-7", window_start_ms=1_000, window_end_ms=61_000,
    metric="sync_proxy_rules_duration_seconds", labels={"ip_family": "IPv4"},
    values={"p50": 0.012, "p99": 0.5, "count": 42.0, "mean": None},
)


def test_derived_series_names_labels_and_timestamp() -> None:
    points = derived_points(RECORD, {"env": "prod"})
    labels = (("cluster", "prod"), ("env", "prod"), ("ip_family", "IPv4"), ("node", "node-7"),
              ("scope", "node"), ("window", "60s"))
    assert points == [
        Point("kubeproxy:sync_proxy_rules_duration_seconds:count", labels, 42.0, 61_000),
        Point("kubeproxy:sync_proxy_rules_duration_seconds:p50", labels, 0.012, 61_000),
        Point("kubeproxy:sync_proxy_rules_duration_seconds:p99", labels, 0.5, 61_000),
    ]  # the null mean is not written


def test_cluster_scope_has_no_node_label() -> None:
    record = DerivedRecord(kind="slo", scope="cluster", cluster="c", node=None, window_start_ms=0,
                           window_end_ms=300_000, metric="network_programming_duration_seconds",
                           values={"p99": 1.0})
    [point] = derived_points(record)
    assert dict(point.labels) == {"cluster": "c", "scope": "cluster", "window": "300s"}


@pytest.mark.parametrize("raw, clean", [
    ("ip_family", "ip_family"), ("ip-family", "ip_family"), ("1abc", "_1abc"), ("", "_"),
    ("__name__", "label__name__"), ("a.b/c d", "a_b_c_d"), ("ü", "_"), ("_x", "_x"),
])
def test_label_name_sanitizing(raw: str, clean: str) -> None:
    assert sanitize_label_name(raw) == clean


def test_record_labels_never_override_the_pipeline_labels() -> None:
    labels = dict(merge_labels({"node": "n1", "cluster": "c"}, {"env": "e"},
                               {"node": "evil", "env": "x", "__name__": "evil", "empty": ""}))
    assert labels == {"node": "n1", "cluster": "c", "env": "e", "exported_node": "evil", "exported_env": "x",
                      "label__name__": "evil"}


def test_extra_labels_are_checked() -> None:
    assert parse_extra_labels(["env=prod", "team=a=b"]) == {"env": "prod", "team": "a=b"}
    for bad in (["node=x"], ["1x=y"], ["noequals"], ["__x=y"]):
        with pytest.raises(ConfigError):
            parse_extra_labels(bad)


def test_float_spelling() -> None:
    assert [format_float(v) for v in (1.0, 0.5, math.inf, -math.inf, math.nan, 1e-5, 1e20)] == \
        ["1", "0.5", "+Inf", "-Inf", "NaN", "1e-05", "1e+20"]


# -- escaping round trips -----------------------------------------------------------------------

hostile_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
HOSTILE = ['a"b', "back\\slash", "new\nline", "com,ma", "sp ace", "eq=ual", "ünï©ødé ☃", '"} evil 1\n',
           "trailing\\", '\\"', "x\\,y", "tab\there"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), hostile_text, max_size=4),
       st.floats(allow_nan=False))
def test_prometheus_text_round_trips_any_label_value(labels: dict[str, str], value: float) -> None:
    labels = {k: v for k, v in labels.items() if v}
    point = Point("kubeproxy:m:p99", tuple(sorted(labels.items())), value, 1_700_000_000_000)
    [family] = text_string_to_metric_families(encode_prometheus_text([point]).decode())
    [sample] = family.samples
    assert sample.name == "kubeproxy:m:p99"
    assert sample.labels == labels
    assert sample.value == value or (value == 0 and sample.value == 0)
    assert sample.timestamp * 1000 == pytest.approx(1_700_000_000_000)


@settings(max_examples=300, deadline=None)
@given(hostile_text)
def test_influx_escaping_round_trips_without_line_breaks(text: str) -> None:
    if "\n" in text or "\r" in text:
        with pytest.raises(Unrepresentable):
            escape_influx_tag(text)
        return
    escaped = escape_influx_tag(text)
    assert unescape_influx(escaped) == text
    # No unescaped separator survives: splitting on them yields one token.
    stripped = escaped.replace("\\\\", "").replace("\\,", "").replace("\\=", "").replace("\\ ", "")
    assert "," not in stripped and "=" not in stripped and " " not in stripped


def test_influx_lines_group_one_record_and_skip_non_finite() -> None:
    points = derived_points(DerivedRecord(
        kind="quantiles", scope="node", cluster="c", node="a b,c=d", window_start_ms=0, window_end_ms=60_000,
        metric="m", values={"p50": 1.5, "p99": math.inf, "count": 3.0}))
    body, skipped = encode_influx(points)
    assert skipped == 1
    assert body == b"kubeproxy:m,cluster=c,node=a\\ b\\,c\\=d,scope=node,window=60s count=3.0,p50=1.5 60000\n"
    assert influx_split("kubeproxy_sync_x_bucket") == ("kubeproxy", "sync_x_bucket")
    assert influx_split("up") == ("up", "value")


# -- remote write -------------------------------------------------------------------------------


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _fields(data: bytes):  # noqa: ANN202
    i = 0
    while i < len(data):
        tag, i = _read_varint(data, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _read_varint(data, i)
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 2:
            length, i = _read_varint(data, i)
            value, i = data[i:i + length], i + length
        else:
            raise AssertionError(f"wire type {wire}")
        yield field, wire, value


def decode_write_request(data: bytes) -> list[tuple[dict[str, str], list[tuple[float, int]]]]:
    out = []
    for field, _, ts in _fields(data):
        assert field == 1
        labels: dict[str, str] = {}
        samples = []
        for f, _, v in _fields(ts):
            if f == 1:
                parts = {ff: vv.decode() for ff, _, vv in _fields(v)}
                labels[parts.get(1, "")] = parts.get(2, "")
            elif f == 2:
                parts = {ff: vv for ff, _, vv in _fields(v)}
                timestamp = parts.get(2, 0)
                if timestamp >= 1 << 63:
                    timestamp -= 1 << 64
                samples.append((struct.unpack("<d", parts[1])[0], timestamp))
        out.append((labels, samples))
    return out


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True), hostile_text, max_size=4),
       st.floats(), st.integers(-(2**63), 2**63 - 1))
def test_remote_write_protobuf_round_trips(labels: dict[str, str], value: float, timestamp: int) -> None:
    point = Point("kubeproxy:m:p99", tuple(sorted(labels.items())), value, timestamp)
    fragment = encode_remote_write([point])
    [(got_labels, [(got_value, got_ts)])] = decode_write_request(fragment + b"")
    assert got_labels == {"__name__": "kubeproxy:m:p99", **labels}
    assert list(got_labels) == sorted(got_labels)  # remote write wants labels sorted by name
    assert struct.pack("<d", got_value) == struct.pack("<d", value) and got_ts == timestamp
    # Fragments concatenate into one valid WriteRequest.
    assert len(decode_write_request(fragment + fragment)) == 2


def test_varint_and_snappy() -> None:
    import cramjam

    assert varint(0) == b"\x00" and varint(300) == b"\xac\x02" and len(varint(-1)) == 10
    data = encode_remote_write([Point("a", (), 1.0, 1)] * 100)
    assert bytes(cramjam.snappy.decompress_raw(snappy_compress(data))) == data


# -- batching, splitting a rejected batch, backoff ---------------------------------------------


class FakeWriter(VictoriaMetricsWriter):
    """The network edge replaced: rejects any body holding b"BAD", fails while `down`."""

    def __init__(self) -> None:
        super().__init__(WriterSettings(url="http://127.0.0.1:1"))
        self.bodies: list[bytes] = []
        self.down = False

    def send(self, body: bytes) -> None:
        if self.down:
            raise StoreUnavailable("down")
        if b"BAD" in body:
            raise StoreRejected(400, "cannot parse BAD")
        self.bodies.append(body)


def _item(offset: int, fragment: bytes, partition: int = 0) -> Item:
    return Item("t", partition, offset, b"k", b"v", fragment=fragment, points=1)


def test_flush_splits_a_rejected_batch_until_the_culprit_stands_alone() -> None:
    writer = FakeWriter()
    sink = BatchingSink(writer, BatchLimits(max_points=100))
    for offset in range(10):
        sink.add(_item(offset, b"BAD\n" if offset == 6 else b"ok%d\n" % offset))
    sink.add(Item("t", 1, 5, None, b"\xff", dlq_reason="malformed", dlq_error="cannot decode"))
    result = sink.flush()
    assert b"".join(writer.bodies) == b"".join(b"ok%d\n" % i for i in range(10) if i != 6)
    assert [(r.item.offset, r.reason, r.status, r.answer) for r in result.rejected if r.reason == "rejected"] == \
        [(6, "rejected", 400, "cannot parse BAD")]
    assert [(r.item.offset, r.reason) for r in result.rejected if r.reason != "rejected"] == [(5, "malformed")]
    assert result.commit == {("t", 0): 10, ("t", 1): 6}
    assert result.written_records == 9 and len(sink) == 0


def test_flush_keeps_the_batch_while_the_store_is_down() -> None:
    writer = FakeWriter()
    writer.down = True
    sink = BatchingSink(writer, BatchLimits(max_points=3, max_age_s=60))
    for offset in range(3):
        sink.add(_item(offset, b"x\n"))
    assert sink.full() and sink.due()
    with pytest.raises(StoreUnavailable):
        sink.flush()
    assert len(sink) == 3
    writer.down = False
    assert sink.flush().commit == {("t", 0): 3}


def test_drop_partitions_forgets_only_revoked_ones() -> None:
    sink = BatchingSink(FakeWriter())
    for partition in (0, 1, 0, 1):
        sink.add(_item(partition, b"x\n", partition))
    assert sink.drop_partitions([("t", 1)]) == 2
    assert len(sink) == 2 and sink.buffered_points == 2


def test_backoff_grows_with_jitter_and_caps() -> None:
    import random

    backoff = Backoff(base_s=0.5, cap_s=4.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(8)]
    assert all(0.25 <= d < 0.5 for d in delays[:1]) and all(2.0 <= d < 4.0 for d in delays[4:])
    backoff.reset()
    assert backoff.next_delay() < 0.5


def test_writer_endpoints() -> None:
    from sinks.writers import InfluxWriter, RemoteWriteWriter

    assert VictoriaMetricsWriter.endpoint("http://vm:8428") == "http://vm:8428/api/v1/import/prometheus"
    assert RemoteWriteWriter.endpoint("http://p:9090/") == "http://p:9090/api/v1/write"
    assert InfluxWriter.endpoint("http://i:8086/write?db=k") == "http://i:8086/write?db=k&precision=ms"
    with pytest.raises(ConfigError):
        VictoriaMetricsWriter.endpoint("vm:8428")
