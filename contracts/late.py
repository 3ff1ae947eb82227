"""The late-record contract (`<prefix>.late`, JSON Schema `schemas/kube-proxy.late.v1.json`):
what the stream stage could not count, with the reason and the input itself, so a late or
unbelievable scrape is never dropped without a trace.

Two stages write it:
* the node stage, for a scrape from `<prefix>.samples` whose window had closed
  (`window_closed`), or whose time was not believed (`clock_skew`: too far ahead of the trusted
  clock; `too_old`: not after the epoch, or older than anything the partition still holds).
  It carries `scrape_ts_ms` and the whole scrape as `record` (kube-proxy.samples/v1).
  Kafka key: the node name.
* the cluster stage, for a node's partial from `<prefix>.cluster-partials` whose cluster
  window had closed (always `window_closed`). It carries the partial as `partial` (the
  stream stage's internal message: only `type`, `src`, `cluster`, `node`, `size_ms` and
  `start_ms` are part of this contract). Kafka key: the cluster name.

Unlike the other topics, a v1 record carries no `schema` field (the records were published
before this contract was written down, and replays compare bytes): the version is the
schema's `$id`, LATE_SCHEMA. A later version adds `"schema": "kube-proxy.late/v2"`; this
decoder refuses any record that has a `schema` field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from contracts.codec import DecodeError, dumps, loads
from contracts.records import ScrapeRecord

LATE_SCHEMA = "kube-proxy.late/v1"

#: Why a record is on `<prefix>.late` (field "reason"; "detail" says more): a closed set.
WINDOW_CLOSED = "window_closed"  # its window had closed (later than the allowed lateness)
CLOCK_SKEW = "clock_skew"  # stamped more than max_clock_skew ahead of the trusted clock
TOO_OLD = "too_old"  # not after the epoch, or older than anything the partition still holds
REASONS = (WINDOW_CLOSED, CLOCK_SKEW, TOO_OLD)

NODE_STAGE = "node"
CLUSTER_STAGE = "cluster"
STAGES = (NODE_STAGE, CLUSTER_STAGE)

_COMMON = ("reason", "detail", "stage", "topic", "partition", "offset", "node", "cluster")
_FIELDS = {NODE_STAGE: frozenset(_COMMON + ("scrape_ts_ms", "record")),
           CLUSTER_STAGE: frozenset(_COMMON + ("partial",))}
#: What of a cluster partial the contract names (the rest is the stream stage's own).
PARTIAL_FIELDS = {"type": str, "src": int, "cluster": str, "node": str, "size_ms": int, "start_ms": int}


@dataclass(frozen=True, slots=True)
class LateRecord:
    """One `<prefix>.late` message. Build it with `late_scrape` or `late_partial`."""

    reason: str  # one of REASONS
    detail: str
    stage: str  # one of STAGES
    topic: str  # the input topic
    partition: int
    offset: int
    node: str
    cluster: str
    scrape_ts_ms: int | None = None  # node stage only
    record: ScrapeRecord | None = None  # node stage only
    partial: Mapping[str, Any] | None = None  # cluster stage only

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"field 'reason' is {self.reason!r}, not one of {', '.join(REASONS)}")
        if self.stage not in STAGES:
            raise ValueError(f"field 'stage' is {self.stage!r}, not one of {', '.join(STAGES)}")
        if self.stage == NODE_STAGE and (self.record is None or self.scrape_ts_ms is None or self.partial is not None):
            raise ValueError("a node-stage late record has 'scrape_ts_ms' and 'record' and no 'partial'")
        if self.stage == CLUSTER_STAGE and (self.partial is None or self.record is not None
                                            or self.scrape_ts_ms is not None):
            raise ValueError("a cluster-stage late record has 'partial' and no 'scrape_ts_ms' or 'record'")
        if self.stage == CLUSTER_STAGE and self.reason != WINDOW_CLOSED:
            raise ValueError(f"a cluster-stage late record's reason is {WINDOW_CLOSED!r}, not {self.reason!r}")

    @property
    def key(self) -> bytes:
        """The Kafka key: the node name (node stage) or the cluster name (cluster stage), raw UTF-8."""
        return (self.node if self.stage == NODE_STAGE else self.cluster).encode("utf-8")

    def to_json(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "reason": self.reason, "detail": self.detail, "stage": self.stage, "topic": self.topic,
            "partition": self.partition, "offset": self.offset, "node": self.node, "cluster": self.cluster,
        }
        if self.stage == NODE_STAGE:
            obj["scrape_ts_ms"] = self.scrape_ts_ms
            obj["record"] = self.record.to_json()  # type: ignore[union-attr]
        else:
            obj["partial"] = self.partial
        return obj

    def encode(self) -> bytes:
        """Deterministic bytes (sorted keys): a replay writes the same late records."""
        return dumps(self.to_json())

    @classmethod
    def decode(cls, data: bytes | str) -> "LateRecord":
        return cls.from_json(loads(data))

    @classmethod
    def from_json(cls, obj: Any) -> "LateRecord":
        if not isinstance(obj, dict):
            raise DecodeError(f"a late record is a JSON object, got {type(obj).__name__}")
        if "schema" in obj:
            raise DecodeError(f"unknown schema {obj['schema']!r} (this version reads {LATE_SCHEMA!r} records, "
                              "which carry no 'schema' field)")
        stage = _field(obj, "stage", str)
        if stage not in STAGES:
            raise DecodeError(f"late record: field 'stage' is {stage!r}, not one of {', '.join(STAGES)}")
        extra = sorted(set(obj) - _FIELDS[stage])
        if extra:
            raise DecodeError(f"late record ({stage} stage): unknown field(s) {', '.join(map(repr, extra))}")
        common = dict(
            reason=_field(obj, "reason", str), detail=_field(obj, "detail", str), stage=stage,
            topic=_field(obj, "topic", str), partition=_field(obj, "partition", int),
            offset=_field(obj, "offset", int), node=_field(obj, "node", str), cluster=_field(obj, "cluster", str))
        for name in ("partition", "offset"):
            if common[name] < 0:
                raise DecodeError(f"late record: field {name!r} is negative ({common[name]})")
        if stage == NODE_STAGE:
            try:
                record = ScrapeRecord.from_json(_field(obj, "record", dict))
            except DecodeError as exc:
                raise DecodeError(f"late record: field 'record': {exc}") from None
            extras: dict[str, Any] = dict(scrape_ts_ms=_field(obj, "scrape_ts_ms", int), record=record)
        else:
            partial = _field(obj, "partial", dict)
            for name, kind in PARTIAL_FIELDS.items():
                _field(partial, name, kind, where="field 'partial': ")
            if partial["type"] != "partial":
                raise DecodeError(f"late record: field 'partial': 'type' is {partial['type']!r}, not 'partial'")
            extras = dict(partial=partial)
        try:
            return cls(**common, **extras)
        except ValueError as exc:
            raise DecodeError(f"late record: {exc}") from None


def late_scrape(reason: str, detail: str, topic: str, partition: int, offset: int,
                record: ScrapeRecord) -> LateRecord:
    """The node stage's late record for `record`, read at `topic`[`partition`]@`offset`."""
    return LateRecord(reason=reason, detail=detail, stage=NODE_STAGE, topic=topic, partition=partition,
                      offset=offset, node=record.node, cluster=record.cluster, scrape_ts_ms=record.scrape_ts_ms,
                      record=record)


def late_partial(detail: str, topic: str, partition: int, offset: int, partial: Mapping[str, Any]) -> LateRecord:
    """The cluster stage's late record for a node's partial whose cluster window had closed."""
    return LateRecord(reason=WINDOW_CLOSED, detail=detail, stage=CLUSTER_STAGE, topic=topic, partition=partition,
                      offset=offset, node=partial["node"], cluster=partial["cluster"], partial=partial)


def _field(obj: Mapping[str, Any], name: str, kind: type, where: str = "") -> Any:
    if name not in obj:
        raise DecodeError(f"late record: {where}field {name!r} is missing")
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DecodeError(f"late record: {where}field {name!r} should be {_KIND_NAMES[kind]}, "
                          f"got {type(value).__name__} {value!r:.80}")
    return value


_KIND_NAMES = {str: "a string", int: "an integer", dict: "an object"}
