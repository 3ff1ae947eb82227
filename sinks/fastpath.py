"""The hot path of derived records: Kafka value bytes straight to the writer's body fragment.

The contract path (`DerivedRecord.decode` → `derived_points` → `writer.encode`) builds a
frozen dataclass, copies `values`, `labels` and `contributors`, builds a `Point` per value and
sanitizes and escapes names and labels on every record. Here the parsed JSON is checked and
encoded directly, and everything that repeats every window (the merged labels, the series
names, the escaped line prefix / protobuf head / Influx head) is computed once per series
group with the very functions of the contract path, and cached.

Equivalence with the contract path is by construction:
- `encode(value)` accepts a record only if it has the common shape the contract's own fast
  check accepts (contracts/derived_fast.py: `read_common`, `check_series` once per series
  group, `number` per value; tests/contracts/test_derived_fast.py proves it decodes to the
  same fields) and a window end inside the store's accepted range. Anything else raises, and
  the caller hands the record to the contract path, which decides (same points, or the same
  DLQ reason and message).
- The output is what `writer.encode(derived_points(DerivedRecord.decode(value), extra))`
  gives, byte for byte (tests/sinks/test_fastpath.py checks it with hypothesis).
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

from contracts.derived_fast import NotCommonShape, SeriesKey, check_series, number, read_common
from sinks.encode import (
    influx_head, influx_split, escape_influx_tag, prometheus_line_prefix, remote_write_series,
    remote_write_series_head, varint,
)
from sinks.series import derived_series_name, merge_labels
from sinks.timerange import TimestampLimits
from sinks.writers import InfluxWriter, RemoteWriteWriter, VictoriaMetricsWriter, Writer

# (fragment, points written, points skipped)
Encoded = tuple[bytes, int, int]

_CACHE_MAX = 100_000
_isfinite = math.isfinite


class NotFast(NotCommonShape):
    """The record is not for the fast path: the contract path decides."""


class DerivedFastPath:
    """`encode(value) -> (fragment, points, skipped)` for one writer protocol and one set of
    `--label`s; raises (anything) when the contract path must decide."""

    def __init__(self, extra_labels: Mapping[str, str], limits: TimestampLimits | None = None) -> None:
        self.extra_labels = dict(extra_labels)
        self.limits = limits
        self._groups: dict[tuple, object] = {}

    # -- per series group (cached) -------------------------------------------------------------

    def _group(self, key: SeriesKey) -> object:
        check_series(key)
        metric, cluster, node, scope, size_s, label_items, value_keys = key
        # What derived_points does.
        own = {"cluster": cluster, "scope": scope, "window": f"{size_s}s"}
        if scope == "node":
            own["node"] = node
        labels = merge_labels(own, self.extra_labels, dict(label_items))
        names = [(k, derived_series_name(metric, k)) for k in sorted(value_keys)]
        group = self.build(metric, labels, names)
        if len(self._groups) >= _CACHE_MAX:
            self._groups.clear()
        self._groups[key] = group
        return group

    def build(self, metric: str, labels: tuple[tuple[str, str], ...], names: list[tuple[str, str]]) -> object:
        raise NotImplementedError

    def emit(self, group: object, values: dict, timestamp_ms: int) -> Encoded:
        raise NotImplementedError

    # -- per record ----------------------------------------------------------------------------

    def encode(self, value: bytes) -> Encoded:
        key, values, end = read_common(value)
        limits = self.limits
        if limits is not None and not limits.lo <= end <= limits.hi:
            raise NotFast("a timestamp the store would drop")  # the contract path dead-letters it
        group = self._groups.get(key)
        if group is None:
            group = self._group(key)
        return self.emit(group, values, end)


class PrometheusTextFastPath(DerivedFastPath):
    def build(self, metric, labels, names):  # noqa: ANN001, ANN201
        return [(k, prometheus_line_prefix(name, labels)) for k, name in names]

    def emit(self, group, values, timestamp_ms):  # noqa: ANN001, ANN201
        # format_float inlined (a function call per value was a tenth of the record's time):
        # integral values below 1e15 as integers, NaN/±Inf spelled as Prometheus does, the
        # others as repr(); test_fastpath checks it against format_float.
        tail = f" {timestamp_ms}\n"
        parts = []
        for k, prefix in group:
            value = values[k]
            if value is None:
                continue
            if type(value) is not float:
                value = number(value)
            if value.is_integer():
                text = str(int(value)) if -1e15 < value < 1e15 else repr(value)
            else:
                text = repr(value)
                if text[-1] in "nf":  # nan, inf, -inf
                    text = _PROMETHEUS_SPECIAL[text]
            parts += (prefix, text, tail)
        return "".join(parts).encode("utf-8"), len(parts) // 3, 0


_PROMETHEUS_SPECIAL = {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}


class RemoteWriteFastPath(DerivedFastPath):
    def build(self, metric, labels, names):  # noqa: ANN001, ANN201
        return [(k, remote_write_series_head(name, labels)) for k, name in names]

    def emit(self, group, values, timestamp_ms):  # noqa: ANN001, ANN201
        ts = varint(timestamp_ms)
        out = []
        for k, head in group:
            value = values[k]
            if value is None:
                continue
            if type(value) is not float:
                value = number(value)
            out.append(remote_write_series(head, value, ts))
        return b"".join(out), len(out), 0


class InfluxFastPath(DerivedFastPath):
    def build(self, metric, labels, names):  # noqa: ANN001, ANN201
        # All points of a derived record share measurement, tags and timestamp: one line.
        fields = []
        measurement = None
        for k, name in names:
            head, field = influx_split(name)
            if measurement is None:
                measurement = head
            elif head != measurement:
                raise NotFast("more than one measurement")  # cannot happen: one metric per record
            fields.append((k, escape_influx_tag(field) + "="))
        return (influx_head(measurement, labels) + " " if measurement is not None else "", fields)

    def emit(self, group, values, timestamp_ms):  # noqa: ANN001, ANN201
        head, keys = group
        fields = []
        skipped = 0
        for k, field in keys:
            value = values[k]
            if value is None:
                continue
            if type(value) is not float:
                value = number(value)
            if not _isfinite(value):
                skipped += 1
                continue
            fields.append(field + repr(value))
        if not fields:
            return b"", 0, skipped
        return f"{head}{','.join(fields)} {timestamp_ms}\n".encode("utf-8"), len(fields), skipped


_FAST_PATHS: dict[type[Writer], type[DerivedFastPath]] = {
    VictoriaMetricsWriter: PrometheusTextFastPath,
    RemoteWriteWriter: RemoteWriteFastPath,
    InfluxWriter: InfluxFastPath,
}


def fast_path_for(writer: Writer, extra_labels: Mapping[str, str],
                  limits: TimestampLimits | None = None) -> Callable[[bytes], Encoded] | None:
    """The fast encoder for the writer's protocol, or None when the writer's `encode` is not the
    protocol's own (a subclass that changed it): then every record takes the contract path.
    A record whose timestamp is outside `limits` is left to the contract path."""
    for base, fast in _FAST_PATHS.items():
        if isinstance(writer, base) and type(writer).encode is base.encode:
            return fast(extra_labels, limits).encode
    return None
