"""Message records, one contract per topic, each versioned and described by a JSON Schema in
`schemas/`. A record encodes to deterministic bytes (sorted keys) and decodes with a
`DecodeError` that names the field that is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

from contracts.codec import DecodeError, check_string_labels, dumps, float_from_json, float_to_json, loads

SCRAPE_SCHEMA = "kube-proxy.samples/v1"


class Sample(NamedTuple):
    """One Prometheus sample as scraped: name, labels, value, optional exposition timestamp.
    A small named tuple, like prometheus_client's: a scrape holds hundreds of them."""

    name: str
    labels: dict[str, str]
    value: float
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class ScrapeRecord:
    """One scrape of one kube-proxy: topic `<prefix>.samples`, key = node name (raw UTF-8).

    `up` is 1 when the target answered with a parseable body (Prometheus' meaning), else 0
    and `error` says why. `samples` holds only the selected (`kubeproxy_*`) samples;
    `families` maps each selected family to its TYPE so consumers know histograms.
    `kube_proxy_metrics` is False when the target serves none (userspace mode).
    """

    node: str
    cluster: str
    target: str
    scrape_ts_ms: int
    up: int
    scrape_duration_s: float
    body_bytes: int
    samples: tuple[Sample, ...] = ()
    families: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None
    kube_proxy_metrics: bool = True
    schema: str = SCRAPE_SCHEMA

    @property
    def key(self) -> bytes:
        # Raw UTF-8, never JSON-quoted: Faust and kafka-python hash the raw bytes (murmur2).
        return self.node.encode("utf-8")

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "node": self.node,
            "cluster": self.cluster,
            "target": self.target,
            "scrape_ts_ms": self.scrape_ts_ms,
            "up": self.up,
            "scrape_duration_s": self.scrape_duration_s,
            "body_bytes": self.body_bytes,
            "sample_count": len(self.samples),
            "error": self.error,
            "kube_proxy_metrics": self.kube_proxy_metrics,
            "labels": dict(self.labels),
            "families": dict(self.families),
            # Compact rows [name, labels, value, timestamp_ms]: a scrape has ~150 of them.
            "samples": [[s.name, dict(s.labels), float_to_json(s.value), s.timestamp_ms] for s in self.samples],
        }

    def encode(self) -> bytes:
        return dumps(self.to_json())

    @classmethod
    def decode(cls, data: bytes | str) -> "ScrapeRecord":
        return cls.from_json(loads(data))

    @classmethod
    def from_json(cls, obj: Any) -> "ScrapeRecord":
        if not isinstance(obj, dict):
            raise DecodeError(f"a scrape record is a JSON object, got {type(obj).__name__}")
        schema = obj.get("schema")
        if schema != SCRAPE_SCHEMA:
            raise DecodeError(f"unknown schema {schema!r} (this version reads {SCRAPE_SCHEMA!r})")
        try:
            samples = tuple(_sample(row, i) for i, row in enumerate(_typed(obj, "samples", list)))
            record = cls(
                node=_typed(obj, "node", str),
                cluster=_typed(obj, "cluster", str),
                target=_typed(obj, "target", str),
                scrape_ts_ms=_typed(obj, "scrape_ts_ms", int),
                up=_typed(obj, "up", int),
                scrape_duration_s=float(_typed(obj, "scrape_duration_s", (int, float))),
                body_bytes=_typed(obj, "body_bytes", int),
                samples=samples,
                families=_str_map(obj, "families"),
                labels=_str_map(obj, "labels"),
                error=obj.get("error"),
                kube_proxy_metrics=bool(obj.get("kube_proxy_metrics", True)),
            )
        except DecodeError:
            raise
        if not record.node:
            raise DecodeError("field 'node' is empty")
        return record


def _typed(obj: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in obj:
        raise DecodeError(f"field {name!r} is missing")
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DecodeError(f"field {name!r} has the wrong type ({type(value).__name__})")
    return value


def _str_map(obj: Mapping[str, Any], name: str) -> dict[str, str]:
    value = obj.get(name, {})
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise DecodeError(f"field {name!r} must map strings to strings")
    return value


def _sample(row: Any, index: int) -> Sample:
    if not isinstance(row, list) or len(row) != 4:
        raise DecodeError(f"samples[{index}] must be [name, labels, value, timestamp_ms]")
    name, labels, value, timestamp_ms = row
    if not isinstance(name, str) or not isinstance(labels, dict):
        raise DecodeError(f"samples[{index}] has a bad name or labels")
    check_string_labels(labels, f"samples[{index}]")
    if timestamp_ms is not None and (not isinstance(timestamp_ms, int) or isinstance(timestamp_ms, bool)):
        raise DecodeError(f"samples[{index}] timestamp_ms must be an integer or null")
    try:
        number = float_from_json(value)
    except DecodeError as exc:
        raise DecodeError(f"samples[{index}] value: {exc}") from None
    return Sample(name, labels, number, timestamp_ms)
