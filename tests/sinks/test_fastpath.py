"""The hot decode path (sinks/fastpath.py) against the contract path (DerivedRecord.decode →
derived_points → writer.encode): the same fragment, points and skipped points for every
record, and the same DLQ reason and message for every record the contract refuses."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.derived import KINDS, DerivedRecord
from kafka_io.connection import KafkaConnection
from sinks.loop import LoopSettings, SinkLoop
from sinks.sink import BatchingSink, Item
from sinks.writers import WRITERS, VictoriaMetricsWriter, WriterSettings
from tests.contracts.derived_json import derived_json

EXTRA = {"env": "prod", "ip_family": "from-flag"}
HOSTILE = ['a"b', "back\\slash", "new\nline", "com,ma", "sp ace", "eq=ual", "ünï©ødé ☃", '"} evil 1\n',
           "trailing\\", "🙂", "", "x:y"]


def loops(extra: dict[str, str]) -> dict[str, SinkLoop]:
    out = {}
    for name, cls in WRITERS.items():
        writer = cls(WriterSettings(url="http://127.0.0.1:1"))
        out[name] = SinkLoop(KafkaConnection(bootstrap="127.0.0.1:1"), writer, BatchingSink(writer),
                             LoopSettings(topics=("t",), group_id="g", dlq_topic="d", extra_labels=extra))
    return out


LOOPS = loops(EXTRA)


def both_paths(loop: SinkLoop, value: bytes | None) -> tuple[Item, Item]:
    fast = loop.to_item("t", 0, 7, b"k", value)
    saved, loop._fast = loop._fast, None
    try:
        contract = loop.to_item("t", 0, 7, b"k", value)
    finally:
        loop._fast = saved
    return fast, contract


def typical_records() -> list[DerivedRecord]:
    records = []
    for i, text in enumerate(HOSTILE):
        for scope, node in (("node", f"node {text}"), ("cluster", None)):
            records.append(DerivedRecord(
                kind=KINDS[i % len(KINDS)], scope=scope, cluster=f"c{text}", node=node,
                window_start_ms=1_700_000_000_000, window_end_ms=1_700_000_060_000 + i,
                metric=f"sync_proxy_rules{text}", labels={"ip_family": text, "bad-name.x": text, "__name__": "n"},
                values={"p50": i * 0.1, "p99": math.inf if i % 3 == 0 else 1e-7, "count": float(i),
                        "mean": None, "nan": math.nan, "ninf": -math.inf, "big": 1e300, "int": 12345.0},
                contributors={"scrapes": 4, "nodes": 1}))
    return records


@pytest.mark.parametrize("to", list(WRITERS))
def test_typical_records_take_the_fast_path_with_the_contract_paths_bytes(to: str) -> None:
    loop = LOOPS[to]
    for record in typical_records():
        value = record.encode()
        if to != "influx" or "\n" not in record.cluster + (record.node or "") + record.labels["ip_family"]:
            loop._fast(value)  # taken: does not raise
        fast, contract = both_paths(loop, value)
        assert fast == contract


def test_a_writer_with_its_own_encode_gets_no_fast_path() -> None:
    class Custom(VictoriaMetricsWriter):
        def encode(self, points):  # noqa: ANN001, ANN201
            return b"custom\n", 0

    writer = Custom(WriterSettings(url="http://127.0.0.1:1"))
    loop = SinkLoop(KafkaConnection(bootstrap="127.0.0.1:1"), writer, BatchingSink(writer),
                    LoopSettings(topics=("t",), group_id="g", dlq_topic="d"))
    assert loop._fast is None
    assert loop.to_item("t", 0, 0, None, typical_records()[0].encode()).fragment == b"custom\n"


# -- any JSON: well-formed, odd and malformed (tests/contracts/derived_json.py) ---------------


@settings(max_examples=600, deadline=None)
@given(derived_json(), st.sampled_from(list(WRITERS)), st.booleans())
def test_fast_path_and_contract_path_agree_on_any_record(obj: dict, to: str, with_extra: bool) -> None:
    loop = LOOPS[to] if with_extra else NO_EXTRA[to]
    fast, contract = both_paths(loop, orjson.dumps(obj))
    assert fast == contract


NO_EXTRA = loops({})


@pytest.mark.parametrize("to", list(WRITERS))
@pytest.mark.parametrize("value", [None, b"", b"\xff\xfe", b"[]", b"null", b'"x"', b"{}", b'{"schema": 1}',
                                   b'{"schema": "kube-proxy.rates/v1"}'])
def test_not_a_record_goes_the_same_way(to: str, value: bytes | None) -> None:
    fast, contract = both_paths(LOOPS[to], value)
    assert fast == contract and fast.dlq_reason == "malformed"


def test_a_number_where_a_string_belongs_is_dead_lettered_not_fatal() -> None:
    """The contract lets `"cluster": 5` through, the encoder cannot escape it: before, the
    sink loop died on it (and again after every restart)."""
    obj = {"schema": "kube-proxy.rates/v1", "scope": "cluster", "cluster": 5, "node": None,
           "window": {"start_ms": 0, "end_ms": 60_000}, "metric": "m", "values": {"rate": 1.0}}
    for to in WRITERS:
        fast, contract = both_paths(LOOPS[to], orjson.dumps(obj))
        assert fast == contract and fast.dlq_reason == "malformed"


def test_the_inlined_number_spelling_is_format_floats() -> None:
    """The Prometheus fast path spells numbers itself (format_float inlined): the same text for
    the edges of its rules (integral below 1e15, NaN/±Inf, repr otherwise)."""
    from sinks.encode import format_float

    edges = [0.0, -0.0, 1.0, -2.0, 0.1 + 0.2, 1e15 - 1, -(1e15 - 1), 1e15, -1e15, 1e16, 123456789.125, 5e-324,
             1e-7, 1e300, -1e300, 2.0 ** 53, math.nan, math.inf, -math.inf]
    loop = NO_EXTRA["victoriametrics"]
    for i, v in enumerate(edges):
        record = DerivedRecord(kind="gauges", scope="cluster", cluster="c", node=None,
                               window_start_ms=1_700_000_040_000, window_end_ms=1_700_000_100_000, metric="m",
                               values={"v": v})
        fragment, points, _ = loop._fast(record.encode())
        assert points == 1 and fragment.decode().split(" ")[1] == format_float(v), v
        fast, contract = both_paths(loop, record.encode())
        assert fast == contract
