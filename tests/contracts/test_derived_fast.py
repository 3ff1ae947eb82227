"""The contract's fast check of derived records (contracts/derived_fast.py) against
DerivedRecord.decode: every record it accepts decodes to the same fields; every record the
contract refuses, it refuses too. And its encoder against DerivedRecord.encode: the same bytes."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.codec import dumps
from contracts.derived import KINDS, DerivedRecord
from contracts.derived_fast import NotCommonShape, RecordEncoder, check_series, number, read_common
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


# -- RecordEncoder against DerivedRecord.encode ------------------------------------------------

any_text = st.text(max_size=6) | st.sampled_from(["prod", "node-007", 'qu"ote\\', "é\u2028", "\x00"])
float_value = (st.floats() | st.integers(-(2**63), 2**63) | st.integers(2**1100, 2**1101) | st.none() | st.just("x")
               | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.1 + 0.2, 1e300, True]))


@settings(max_examples=1000, deadline=None)
@given(kind=st.sampled_from(KINDS), node=st.none() | any_text, cluster=any_text, metric=any_text,
       start=st.integers(-(2**40), 2**45), length=st.integers(-5_000, 10**9),
       labels=st.dictionaries(any_text, any_text | st.integers(0, 9), max_size=4),
       values=st.dictionaries(any_text, float_value, max_size=7),
       contributors=st.dictionaries(st.sampled_from(["scrapes", "nodes", "members", "x"]), st.integers(0, 10**6)))
def test_the_encoder_writes_the_contract_bytes(kind, node, cluster, metric, start, length, labels, values,  # noqa: ANN001
                                               contributors) -> None:
    scope = "cluster" if node is None else "node"
    record = DerivedRecord(kind=kind, scope=scope, cluster=cluster, node=node, window_start_ms=start,
                           window_end_ms=start + length, metric=metric, values=values, labels=labels,
                           contributors=contributors)
    encoder = RecordEncoder(scope, cluster, node, start, start + length, contributors)
    assert outcome(encoder.encode, kind, dumps(metric), dumps(dict(labels)), values) == outcome(record.encode)
    assert encoder.key == record.key


def outcome(f, *args):  # noqa: ANN001, ANN201
    """f's bytes, or the type of what it raised (orjson refuses an int past 64 bits)."""
    try:
        return f(*args)
    except Exception as exc:  # noqa: BLE001
        return type(exc)


@pytest.mark.parametrize(("scope", "node"), [("pod", "n"), ("node", None), ("cluster", "n")])
def test_the_encoder_refuses_what_the_contract_refuses(scope: str, node) -> None:  # noqa: ANN001
    with pytest.raises(ValueError):
        DerivedRecord(kind="rates", scope=scope, cluster="c", node=node, window_start_ms=0, window_end_ms=1,
                      metric="m", values={})
    with pytest.raises(ValueError):
        RecordEncoder(scope, "c", node, 0, 1, {})
