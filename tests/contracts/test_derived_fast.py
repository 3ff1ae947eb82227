"""The contract's fast check of derived records (contracts/derived_fast.py) against
DerivedRecord.decode: every record it accepts decodes to the same fields; every record the
contract refuses, it refuses too."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings

from contracts.derived import DerivedRecord
from contracts.derived_fast import NotCommonShape, check_series, number, read_common
from tests.contracts.derived_json import derived_json


def fast_fields(value: bytes) -> dict:
    """What a consumer of the fast check sees, as DerivedRecord fields; raises where it refuses."""
    key, values, end = read_common(value)
    check_series(key)
    metric, cluster, node, scope, size_s, label_items, value_keys = key
    obj = orjson.loads(value)
    return {
        "metric": metric, "cluster": cluster, "node": node, "scope": scope, "window_end_ms": end,
        "window_size_s": size_s, "labels": dict(label_items), "value_keys": value_keys,
        "values": {k: None if v is None else number(v) for k, v in values.items()},
        "window_start_ms": obj["window"]["start_ms"],
    }


def contract_fields(record: DerivedRecord) -> dict:
    return {
        "metric": record.metric, "cluster": record.cluster, "node": record.node, "scope": record.scope,
        "window_end_ms": record.window_end_ms, "window_size_s": record.window_size_s, "labels": record.labels,
        "value_keys": tuple(record.values), "values": record.values, "window_start_ms": record.window_start_ms,
    }


def same(a: dict, b: dict) -> bool:
    """Equal, NaN equal to NaN (and of the same types: 1 and 1.0 differ)."""
    def norm(v):  # noqa: ANN001, ANN202
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, float) and math.isnan(v):
            return "NaN"
        return (type(v).__name__, v)
    return norm(a) == norm(b)


@settings(max_examples=1500, deadline=None)
@given(derived_json())
def test_what_the_fast_check_accepts_decodes_to_the_same_fields(obj: dict) -> None:
    value = orjson.dumps(obj)
    try:
        fast = fast_fields(value)
    except Exception:  # noqa: BLE001 (refused: the contract decides; nothing to compare)
        return
    record = DerivedRecord.decode(value)  # must not raise: the fast check accepted it
    assert same(fast, contract_fields(record))


@pytest.mark.parametrize("value", [b"", b"\xff\xfe", b"[]", b"null", b'"x"', b"{}", b'{"schema": 1}',
                                   b'{"schema": "kube-proxy.rates/v1"}'])
def test_not_a_record_is_refused(value: bytes) -> None:
    with pytest.raises(Exception):  # noqa: B017 (any exception: the contract decides)
        fast_fields(value)


@pytest.mark.parametrize("change, why", [
    (lambda o: o.update(cluster=5), "a number where a string belongs"),
    (lambda o: o.update(scope="pod"), "an unknown scope"),
    (lambda o: o.update(node=None), "a node-scope record without its node"),
    (lambda o: o["labels"].update(x=1), "a label value that is not a string"),
    (lambda o: o["values"].update(v=True), "a boolean value"),
    (lambda o: o["values"].update(v="inf"), "an unknown spelling of infinity"),
    (lambda o: o["window"].update(end_ms=1.5), "a float window end"),
])
def test_records_the_contract_refuses_or_may_refuse_are_refused(change, why: str) -> None:  # noqa: ANN001
    obj = {"schema": "kube-proxy.rates/v1", "scope": "node", "cluster": "c", "node": "n",
           "window": {"start_ms": 0, "end_ms": 60_000}, "metric": "m", "labels": {"a": "b"},
           "values": {"rate": 1.0}}
    fast_fields(orjson.dumps(obj))  # the unchanged record is accepted
    change(obj)
    with pytest.raises((NotCommonShape, KeyError)):
        fast_fields(orjson.dumps(obj))
