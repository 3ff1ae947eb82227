from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest

from contracts.codec import DecodeError, loads
from contracts.derived import KINDS, DerivedRecord

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def sample(kind: str = "quantiles", scope: str = "node", **overrides) -> DerivedRecord:
    fields = dict(kind=kind, scope=scope, cluster="prod", node="node-001" if scope == "node" else None,
                  window_start_ms=1_700_000_040_000, window_end_ms=1_700_000_100_000,
                  metric="sync_proxy_rules_duration_seconds",
                  values={"p50": 0.012, "p99": None, "count": 0.0, "weird": math.inf},
                  labels={"ip_family": "IPv4"}, contributors={"scrapes": 4, "nodes": 1})
    fields.update(overrides)
    return DerivedRecord(**fields)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("scope", ["node", "cluster"])
def test_round_trip_and_schema(kind: str, scope: str) -> None:
    record = sample(kind, scope)
    data = record.encode()
    back = DerivedRecord.decode(data)
    assert back == record and back.encode() == data
    schema = json.loads((SCHEMAS / f"kube-proxy.{kind}.v1.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(loads(data), schema)
    assert loads(data)["window"]["size_s"] == 60
    assert record.key == (b"node-001" if scope == "node" else b"prod")


def test_schema_rejects_wrong_scope_and_null_node() -> None:
    schema = json.loads((SCHEMAS / "kube-proxy.rates.v1.json").read_text())
    obj = loads(sample("rates").encode())
    obj["node"] = None
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(obj, schema)


def test_invariants_and_decode_errors() -> None:
    with pytest.raises(ValueError):
        sample(node=None)
    with pytest.raises(ValueError):
        sample(kind="latency")
    obj = loads(sample().encode())
    obj["schema"] = "kube-proxy.quantiles/v7"
    with pytest.raises(DecodeError, match="unknown schema"):
        DerivedRecord.from_json(obj)
    obj = loads(sample().encode())
    del obj["window"]
    with pytest.raises(DecodeError, match="missing or has a malformed field"):
        DerivedRecord.from_json(obj)
