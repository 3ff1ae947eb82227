from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, strategies as st

from contracts.codec import DecodeError, dumps, float_from_json, float_to_json, loads
from contracts.records import SCRAPE_SCHEMA, Sample, ScrapeRecord

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def record(**overrides) -> ScrapeRecord:
    fields = dict(
        node="node-001", cluster="c1", target="http://127.0.0.1:10249/metrics", scrape_ts_ms=1_700_000_000_000,
        up=1, scrape_duration_s=0.012, body_bytes=4096,
        samples=(Sample("kubeproxy_sync_proxy_rules_duration_seconds_bucket", {"le": "+Inf"}, 12.0, None),
                 Sample("kubeproxy_x", {"a": 'q"uo\\te\n'}, math.nan, 1_700_000_000_123),
                 Sample("kubeproxy_y", {}, -math.inf, None)),
        families={"kubeproxy_sync_proxy_rules_duration_seconds": "histogram"},
        labels={"env": "prod"},
    )
    fields.update(overrides)
    return ScrapeRecord(**fields)


@pytest.mark.parametrize("value, encoded", [(math.inf, "+Inf"), (-math.inf, "-Inf"), (1.5, 1.5), (0.0, 0.0)])
def test_special_floats_are_explicit(value: float, encoded) -> None:
    assert float_to_json(value) == encoded
    assert float_from_json(float_to_json(value)) == value


def test_nan_round_trips() -> None:
    assert float_to_json(math.nan) == "NaN"
    assert math.isnan(float_from_json("NaN"))


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_any_float_survives_orjson(value: float) -> None:
    back = float_from_json(loads(dumps([float_to_json(value)]))[0])
    assert (math.isnan(back) and math.isnan(value)) or back == value


@pytest.mark.parametrize("bad", [None, "nan", "inf", True, [1], {"a": 1}])
def test_bad_float_is_named(bad) -> None:
    with pytest.raises(DecodeError, match="expected a number"):
        float_from_json(bad)


def test_record_round_trip_and_determinism() -> None:
    original = record()
    data = original.encode()
    back = ScrapeRecord.decode(data)
    assert back.encode() == data
    assert back.samples[0] == original.samples[0]
    assert math.isnan(back.samples[1].value) and back.samples[1].labels == {"a": 'q"uo\\te\n'}
    assert back.samples[2].value == -math.inf
    raw_values = [row[2] for row in loads(data)["samples"]]
    assert raw_values == [12.0, "NaN", "-Inf"]  # no special float became null
    assert original.key == b"node-001"


def test_record_matches_json_schema() -> None:
    schema = json.loads((SCHEMAS / "kube-proxy.samples.v1.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    validator.validate(loads(record().encode()))
    validator.validate(loads(record(up=0, samples=(), families={}, error="HTTP 500").encode()))
    broken = loads(record().encode())
    broken["samples"][0][2] = None
    assert list(validator.iter_errors(broken)), "null value must not validate"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda o: o.pop("node"), "field 'node' is missing"),
        (lambda o: o.update(schema="kube-proxy.samples/v9"), "unknown schema"),
        (lambda o: o.update(scrape_ts_ms="yesterday"), "'scrape_ts_ms' has the wrong type"),
        (lambda o: o["samples"].append(["x", {}, "fast", None]), "samples[3] value"),
        (lambda o: o["samples"].append(["x", {}]), "samples[3] must be"),
        (lambda o: o.update(labels={"a": 1}), "'labels' must map strings"),
    ],
)
def test_decode_errors_name_the_field(mutate, message) -> None:
    obj = loads(record().encode())
    mutate(obj)
    with pytest.raises(DecodeError) as err:
        ScrapeRecord.from_json(obj)
    assert message in str(err.value)


def test_decode_rejects_non_json() -> None:
    with pytest.raises(DecodeError, match="not valid JSON"):
        ScrapeRecord.decode(b"{not json")
    assert SCRAPE_SCHEMA.endswith("/v1")
