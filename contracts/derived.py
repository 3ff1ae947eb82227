"""Derived records: what the stream stage publishes on `<prefix>.rates`, `.quantiles`,
`.gauges`, `.health` and `.slo`, and what sinks and users' consumers read.

Every topic shares one shape so that consumers and sinks handle all of them alike; each
topic still has its own versioned contract name (`kube-proxy.quantiles/v1`, ...) and JSON
Schema in `schemas/`:

    {"schema": "kube-proxy.quantiles/v1",
     "scope": "node" | "cluster",
     "cluster": "prod", "node": "node-007" | null,
     "window": {"start_ms": ..., "end_ms": ..., "size_s": 60},
     "metric": "sync_proxy_rules_duration_seconds",
     "labels": {"ip_family": "IPv4"},            # series labels kept from kube-proxy, if any
     "values": {"p50": 0.012, "p99": null, "count": 0, ...},
     "contributors": {"scrapes": 4, "nodes": 1}}

`values` are numbers, null (nothing to compute: e.g. a quantile of zero observations), or
the strings "NaN", "+Inf", "-Inf". The Kafka key is the node name (scope node) or the
cluster name (scope cluster), raw UTF-8. Timestamps of series written from a record are
the window end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from contracts.codec import DecodeError, check_string_labels, dumps, float_from_json, float_to_json, loads

KINDS = ("rates", "quantiles", "gauges", "health", "slo")
SCOPES = ("node", "cluster")
VERSION = 1


def schema_name(kind: str) -> str:
    return f"kube-proxy.{kind}/v{VERSION}"


@dataclass(frozen=True, slots=True)
class DerivedRecord:
    kind: str  # one of KINDS: decides the topic and the schema name
    scope: str  # "node" or "cluster"
    cluster: str
    node: str | None
    window_start_ms: int
    window_end_ms: int
    metric: str
    values: Mapping[str, float | None]
    labels: Mapping[str, str] = field(default_factory=dict)
    contributors: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown derived kind {self.kind!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"unknown scope {self.scope!r}")
        if (self.scope == "node") != (self.node is not None):
            raise ValueError("a node-scope record names its node; a cluster-scope record does not")

    @property
    def key(self) -> bytes:
        return (self.node if self.scope == "node" else self.cluster).encode("utf-8")

    @property
    def window_size_s(self) -> int:
        return (self.window_end_ms - self.window_start_ms) // 1000

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": schema_name(self.kind),
            "scope": self.scope,
            "cluster": self.cluster,
            "node": self.node,
            "window": {"start_ms": self.window_start_ms, "end_ms": self.window_end_ms,
                       "size_s": self.window_size_s},
            "metric": self.metric,
            "labels": dict(self.labels),
            "values": {k: (None if v is None else float_to_json(v)) for k, v in self.values.items()},
            "contributors": dict(self.contributors),
        }

    def encode(self) -> bytes:
        """Deterministic bytes: sorted keys, so a re-emission is byte-identical."""
        return dumps(self.to_json())

    @classmethod
    def decode(cls, data: bytes | str) -> "DerivedRecord":
        return cls.from_json(loads(data))

    @classmethod
    def from_json(cls, obj: Any) -> "DerivedRecord":
        if not isinstance(obj, dict):
            raise DecodeError("a derived record is a JSON object")
        schema = obj.get("schema")
        kind = next((k for k in KINDS if schema == schema_name(k)), None)
        if kind is None:
            raise DecodeError(f"unknown schema {schema!r}")
        try:
            window = obj["window"]
            values = {str(k): (None if v is None else float_from_json(v)) for k, v in obj["values"].items()}
            return cls(
                kind=kind, scope=obj["scope"], cluster=obj["cluster"], node=obj.get("node"),
                window_start_ms=int(window["start_ms"]), window_end_ms=int(window["end_ms"]),
                metric=obj["metric"], values=values, labels=_labels(obj.get("labels", {})),
                contributors=dict(obj.get("contributors", {})),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise DecodeError(f"{schema} record is missing or has a malformed field: {exc}") from None
        except ValueError as exc:
            raise DecodeError(f"{schema} record: {exc}") from None


def _labels(labels: Any) -> dict[str, str]:
    """The record's series labels: an object of strings (a number would be written as text by
    one sink and break another stage; the contract says strings)."""
    if not isinstance(labels, dict):
        raise DecodeError(f"field 'labels' must be an object, got {type(labels).__name__}")
    check_string_labels(labels, "field 'labels':")
    return dict(labels)
