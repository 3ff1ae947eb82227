"""The late-record contract (contracts/late.py) and its JSON Schema agree with each other and
with what the stream stages write: every late record of every stage and reason validates,
decodes and re-encodes to the same bytes; a malformed record is a DecodeError naming what is
wrong (and the schema refuses it too); the two cannot drift apart field by field."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from contracts import late
from contracts.codec import DecodeError
from contracts.late import LateRecord, late_partial, late_scrape
from streams.config import StreamSettings
from streams.stages import ClusterStage, NodeStage
from tests.streams.golden import batched
from tests.streams.reference import FakeClock, cluster_messages
from tests.streams.simdata import START_S, scrape_records

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA = json.loads((SCHEMAS / "kube-proxy.late.v1.json").read_text())
SAMPLES_SCHEMA = json.loads((SCHEMAS / "kube-proxy.samples.v1.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)

SETTINGS = StreamSettings(topic_prefix="u", partitions=2)
NOW_MS = START_S * 1000 + 600_000  # the node stage's trusted clock: 10 min after the first scrape


def _recording(sent: list):
    async def send(topic, key, value, ts_ms, part):
        sent.append((topic, key, value, ts_ms, part))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut
    return send


def stage_outputs() -> list[tuple[str, bytes | None, bytes, int | None, int | None]]:
    """What both stages send for: node-000 on partition 0, node-001 on partition 1, then on
    partition 0 a scrape into a closed window, one far ahead of the trusted clock and one at
    the epoch; the cluster stage hears partition 1 only after partition 0 has closed windows
    with partition 1 idle, so partition 1's partials for them are late."""
    records = scrape_records(nodes=2, minutes=5, seed=3)
    sent: list = []
    node_stage = NodeStage(SETTINGS, {}, _recording(sent), clock=FakeClock(), trusted_clock_ms=lambda: NOW_MS)
    first = next(r for r in records if r.node == "node-000")

    async def run() -> None:
        offsets = [0, 0]
        for r in records + [dataclasses.replace(first, scrape_ts_ms=ts) for ts in
                            (first.scrape_ts_ms, NOW_MS + 2 * 3600_000, 0)]:
            part = 0 if r.node == "node-000" else 1
            await node_stage.on_sample(part, offsets[part], r.key, r.encode())
            offsets[part] += 1
        cluster_sent = [m for m in sent if m[0] == SETTINGS.cluster_partials_topic]
        from_src = {0: [], 1: []}
        for _topic, key, value, _ts, _part in cluster_sent:
            from_src[cluster_messages(value)[0]["src"]].append((key, value))
        idle = orjson.dumps({"type": "progress", "src": 1, "through": {}, "idle": True})
        partials_of_1 = [(k, v) for k, v in from_src[1] if cluster_messages(v)[0]["type"] == "partial"]
        cluster_stage = ClusterStage(SETTINGS, {}, _recording(sent), clock=FakeClock())
        for offset, (key, value) in enumerate([(None, idle)] + from_src[0] + partials_of_1):
            await cluster_stage.on_message(0, offset, key, value)

    asyncio.run(run())
    return sent


@pytest.fixture(scope="module")
def late_messages() -> list[tuple[bytes | None, bytes]]:
    """Every `.late` message of the scenario above and of the golden dataset `batched`."""
    ours = [(key, value) for topic, key, value, _ts, _part in stage_outputs() if topic == SETTINGS.topics.late]
    golden = [(key, value) for topic, key, value in batched() if topic.endswith(".late")]
    assert golden, "the golden dataset has a late scrape"
    return ours + golden


def test_the_schema_is_valid_and_names_the_contracts_fields_reasons_and_stages() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$id"] == late.LATE_SCHEMA
    assert set(SCHEMA["properties"]) == late._FIELDS[late.NODE_STAGE] | late._FIELDS[late.CLUSTER_STAGE]
    assert set(SCHEMA["required"]) | set(SCHEMA["then"]["required"]) == late._FIELDS[late.NODE_STAGE]
    assert set(SCHEMA["required"]) | set(SCHEMA["else"]["required"]) == late._FIELDS[late.CLUSTER_STAGE]
    assert tuple(SCHEMA["properties"]["reason"]["enum"]) == late.REASONS
    assert tuple(SCHEMA["properties"]["stage"]["enum"]) == late.STAGES
    assert set(SCHEMA["properties"]["partial"]["required"]) == set(late.PARTIAL_FIELDS)


def test_every_late_record_the_stages_write_validates_and_round_trips(late_messages) -> None:
    kinds = set()
    for key, value in late_messages:
        obj = orjson.loads(value)
        VALIDATOR.validate(obj)
        decoded = LateRecord.decode(value)
        assert decoded.encode() == value and decoded.key == key
        if decoded.stage == late.NODE_STAGE:
            jsonschema.validate(obj["record"], SAMPLES_SCHEMA)
            assert decoded.record.scrape_ts_ms == decoded.scrape_ts_ms
        kinds.add((decoded.stage, decoded.reason))
    assert kinds == {("node", "window_closed"), ("node", "clock_skew"), ("node", "too_old"),
                     ("cluster", "window_closed")}


def test_a_record_built_through_the_contract_round_trips() -> None:
    scrape = scrape_records(nodes=1, minutes=1)[0]
    node = late_scrape(late.CLOCK_SKEW, "ahead", "u.samples", 2, 7, scrape)
    again = LateRecord.decode(node.encode())
    assert again.encode() == node.encode() and again.record.encode() == scrape.encode()
    assert (again.node, again.cluster, again.scrape_ts_ms, again.key) == (scrape.node, scrape.cluster,
                                                                          scrape.scrape_ts_ms, scrape.key)
    partial = {"type": "partial", "src": 1, "cluster": "c", "node": "n", "size_ms": 60_000, "start_ms": 0, "c": {}}
    cluster = late_partial("closed", "u.cluster-partials", 0, 3, partial)
    assert LateRecord.decode(cluster.encode()) == cluster and cluster.key == b"c"
    VALIDATOR.validate(orjson.loads(cluster.encode()))
    with pytest.raises(ValueError, match="not one of window_closed, clock_skew, too_old"):
        late_scrape("early", "", "u.samples", 0, 0, scrape)


def _node_record() -> dict:
    scrape = scrape_records(nodes=1, minutes=1)[0]
    return late_scrape(late.WINDOW_CLOSED, "closed", "u.samples", 0, 5, scrape).to_json()


def _cluster_record() -> dict:
    partial = {"type": "partial", "src": 1, "cluster": "c", "node": "n", "size_ms": 60_000, "start_ms": 0}
    return late_partial("closed", "u.cluster-partials", 0, 3, partial).to_json()


def _without(obj: dict, name: str) -> dict:
    obj.pop(name)
    return obj


@pytest.mark.parametrize("make, message", [
    (lambda: _without(_node_record(), "detail"), "field 'detail' is missing"),
    (lambda: {**_node_record(), "reason": "early"}, "field 'reason' is 'early', not one of window_closed"),
    (lambda: {**_node_record(), "stage": "sink"}, "field 'stage' is 'sink', not one of node, cluster"),
    (lambda: {**_node_record(), "partition": "3"}, "field 'partition' should be an integer, got str '3'"),
    (lambda: {**_node_record(), "offset": -1}, "field 'offset' is negative"),
    (lambda: {**_node_record(), "extra": 1}, "unknown field(s) 'extra'"),
    (lambda: {**_node_record(), "partial": _cluster_record()["partial"]}, "unknown field(s) 'partial'"),
    (lambda: {**_node_record(), "schema": "kube-proxy.late/v2"}, "unknown schema 'kube-proxy.late/v2'"),
    (lambda: _without(_node_record(), "record"), "field 'record' is missing"),
    (lambda: {**_node_record(), "record": {**_node_record()["record"], "schema": "x"}},
     "field 'record': unknown schema 'x'"),
    (lambda: {**_cluster_record(), "reason": "clock_skew"}, "cluster-stage late record's reason is 'window_closed'"),
    (lambda: {**_cluster_record(), "record": _node_record()["record"]}, "unknown field(s) 'record'"),
    (lambda: {**_cluster_record(), "partial": _without(_cluster_record()["partial"], "start_ms")},
     "field 'partial': field 'start_ms' is missing"),
    (lambda: {**_cluster_record(), "partial": {**_cluster_record()["partial"], "type": "progress"}},
     "field 'partial': 'type' is 'progress'"),
    (lambda: [1, 2], "a late record is a JSON object, got list"),
])
def test_a_malformed_record_is_a_decode_error_naming_what_is_wrong_and_fails_the_schema(make, message) -> None:
    obj = make()
    with pytest.raises(DecodeError) as caught:
        LateRecord.decode(orjson.dumps(obj))
    assert message in str(caught.value)
    assert not VALIDATOR.is_valid(obj)


def test_bytes_that_are_not_json_are_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="not valid JSON"):
        LateRecord.decode(b"{broken")
