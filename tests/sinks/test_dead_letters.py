"""The sink's dead letters are the pipeline's one dead-letter contract (contracts/dlq.py,
schemas/kube-proxy.dlq.v1.json): the same bytes `dead_letter()` gives, valid against the
schema, for records that do not decode, cannot be encoded, or that the store refused."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from contracts.dlq import DLQ_SCHEMA, dead_letter
from kafka_io.connection import KafkaConnection
from sinks.loop import SinkLoop, LoopSettings
from sinks.sink import BatchingSink, Item, Rejection
from sinks.writers import InfluxWriter, VictoriaMetricsWriter, WriterSettings

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "kube-proxy.dlq.v1.json").read_text())


def loop_for(writer_class=VictoriaMetricsWriter) -> SinkLoop:  # noqa: ANN001
    writer = writer_class(WriterSettings(url="http://127.0.0.1:1"))
    return SinkLoop(KafkaConnection(bootstrap="127.0.0.1:1"), writer, BatchingSink(writer),
                    LoopSettings(topics=("t",), group_id="g", dlq_topic="d"))


def rejection_of(loop: SinkLoop, value: bytes | None, key: bytes | None = b"node-1") -> Rejection:
    item = loop.to_item("kube-proxy.rates", 2, 41, key, value)
    assert item.dlq_reason is not None
    return Rejection(item, item.dlq_reason, item.dlq_error or item.dlq_reason)


@pytest.mark.parametrize("value", [b"{broken", b"\xff\xfe not UTF-8", b"", None, b'{"schema": "kube-proxy.nope/v1"}'])
def test_undecodable_records_are_dead_lettered_by_the_contract(value: bytes | None) -> None:
    loop = loop_for()
    rejection = rejection_of(loop, value)
    message = loop.dlq_message(rejection)
    body = orjson.loads(message)
    jsonschema.validate(body, SCHEMA)
    assert body["schema"] == DLQ_SCHEMA and body["stage"] == "sink" and body["reason"] == "malformed"
    assert body["source"] == {"topic": "kube-proxy.rates", "partition": 2, "offset": 41, "key": "node-1"}
    assert body["store"] is None and isinstance(body["dead_lettered_ms"], int)
    original = base64.b64decode(body["value_base64"]) if body["value_base64"] is not None else body["value"].encode()
    assert original == (value or b"")
    assert message == dead_letter(stage="sink", reason="malformed", error=rejection.error, topic="kube-proxy.rates",
                                  partition=2, offset=41, key=b"node-1", value=value or b"",
                                  dead_lettered_ms=body["dead_lettered_ms"])


def test_a_record_the_protocol_cannot_carry_is_dead_lettered_by_the_contract() -> None:
    from contracts.derived import DerivedRecord

    loop = loop_for(InfluxWriter)
    record = DerivedRecord(kind="gauges", scope="node", cluster="c", node="new\nline", window_start_ms=0,
                           window_end_ms=60_000, metric="m", values={"max": 1.0})
    body = orjson.loads(loop.dlq_message(rejection_of(loop, record.encode(), key=None)))
    jsonschema.validate(body, SCHEMA)
    assert body["reason"] == "unrepresentable" and body["source"]["key"] is None
    assert DerivedRecord.decode(body["value"]) == record


def test_a_record_the_store_refused_carries_the_stores_answer() -> None:
    loop = loop_for()
    item = Item("kube-proxy.rates", 0, 7, b"\xff", b"\x00binary\xff")
    body = orjson.loads(loop.dlq_message(Rejection(item, "rejected", "store answered 400: bad", 400, "bad")))
    jsonschema.validate(body, SCHEMA)
    assert body["store"] == {"url": loop.writer.url, "status": 400, "answer": "bad"}
    assert body["source"]["key"] is None and body["value"] is None
    assert base64.b64decode(body["value_base64"]) == b"\x00binary\xff"


@pytest.mark.parametrize("writer_class", [VictoriaMetricsWriter, InfluxWriter])
def test_a_derived_label_that_is_not_a_string_is_dead_lettered_naming_it(writer_class) -> None:  # noqa: ANN001
    """It used to be written as the text "5" (by the contract path, which stringified it)."""
    loop = loop_for(writer_class)
    value = orjson.dumps({"schema": "kube-proxy.gauges/v1", "scope": "cluster", "cluster": "c", "node": None,
                          "window": {"start_ms": 1_700_000_040_000, "end_ms": 1_700_000_100_000, "size_s": 60},
                          "metric": "m", "labels": {"table": 5}, "values": {"last": 1.0}, "contributors": {}})
    item = loop.to_item("kube-proxy.gauges", 0, 3, b"c", value)
    assert item.dlq_reason == "malformed" and item.points == 0
    assert "label 'table' must be a string" in item.dlq_error
    body = orjson.loads(loop.dlq_message(Rejection(item, item.dlq_reason, item.dlq_error)))
    jsonschema.validate(body, SCHEMA)
    assert body["value"] == value.decode()
