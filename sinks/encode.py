"""Pure encoders: points → request-body bytes for each protocol, with the escaping that keeps
a hostile label value from injecting or corrupting series.

Every encoder turns a list of points into a *fragment* whose concatenation with other
fragments is again a valid body (lines for the text protocols; repeated `timeseries` fields
for the remote-write protobuf). The sink pre-encodes every record once and a batch is just
the fragments joined, so splitting a rejected batch costs no re-encoding.
"""

from __future__ import annotations

import math
import struct
from typing import Iterable, Sequence

from sinks.series import Point


class Unrepresentable(ValueError):
    """A record the protocol cannot carry faithfully (a newline in an Influx tag value,
    text that is not valid UTF-8); it goes to the DLQ with this message."""


# -- numbers --------------------------------------------------------------------------------


def format_float(value: float) -> str:
    """Prometheus' spelling: shortest round-trip repr, NaN, +Inf, -Inf."""
    if value != value:
        return "NaN"
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


# Escaped label sets by labels tuple: series repeat every window, escaping them once is enough.
_CACHE_MAX = 100_000
_PROM_LABELS_CACHE: dict[tuple, str] = {}
_RW_LABELS_CACHE: dict[tuple, bytes] = {}


def _remember(cache: dict, key: tuple, value: object) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value


# -- Prometheus text exposition (VictoriaMetrics /api/v1/import/prometheus) -------------------


def escape_prometheus_label_value(value: str) -> str:
    """The exposition format's three escapes: backslash, double quote, line feed."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def prometheus_labels_text(labels: tuple[tuple[str, str], ...]) -> str:
    """`a="x",b="y"` for a sorted labels tuple, escaped; cached (series repeat every window)."""
    text = _PROM_LABELS_CACHE.get(labels)
    if text is None:
        text = ",".join(f'{k}="{escape_prometheus_label_value(v)}"' for k, v in labels)
        _remember(_PROM_LABELS_CACHE, labels, text)
    return text


def prometheus_line_prefix(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    """Everything of a text line before the value: `name{labels} `."""
    return f"{name}{{{prometheus_labels_text(labels)}}} "


def encode_prometheus_text(points: Iterable[Point]) -> bytes:
    """`name{a="x",b="y"} value timestamp_ms` lines. Names are already sanitized; values are
    escaped; NaN and ±Inf are written as NaN, +Inf, -Inf."""
    lines = []
    last_labels: tuple | None = None
    labels = ""
    for point in points:
        if point.labels is not last_labels:  # a record's points share one labels tuple
            last_labels = point.labels
            labels = prometheus_labels_text(point.labels)
        lines.append(f"{point.name}{{{labels}}} {format_float(point.value)} {point.timestamp_ms}\n")
    try:
        return "".join(lines).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Unrepresentable(f"text is not valid UTF-8: {exc.reason}") from None


# -- Prometheus remote write 1.0 (protobuf, snappy block format) ------------------------------


def varint(value: int) -> bytes:
    """Protobuf base-128 varint; negative numbers as 64-bit two's complement (10 bytes)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + varint(len(payload)) + payload


_PACK_DOUBLE = struct.Struct("<d").pack


def _label(name: str, value: str) -> bytes:
    # Label{1: name, 2: value}
    n = name.encode("utf-8")
    v = value.encode("utf-8")
    return _length_delimited(0x0A, n) + _length_delimited(0x12, v)


def remote_write_labels(labels: tuple[tuple[str, str], ...]) -> bytes:
    """The repeated `TimeSeries.labels` fields of a sorted labels tuple; cached."""
    encoded = _RW_LABELS_CACHE.get(labels)
    if encoded is None:
        encoded = b"".join(_length_delimited(0x0A, _label(n, v)) for n, v in labels)
        _remember(_RW_LABELS_CACHE, labels, encoded)
    return encoded


def remote_write_series_head(name: str, labels: tuple[tuple[str, str], ...]) -> bytes:
    """A TimeSeries' labels, `__name__` first (it sorts first: `_` < `a`)."""
    return _length_delimited(0x0A, _label("__name__", name)) + remote_write_labels(labels)


def remote_write_series(head: bytes, value: float, timestamp_varint: bytes) -> bytes:
    """One `WriteRequest.timeseries` field: the head (labels) and one Sample."""
    # Sample{1: double value (fixed64), 2: int64 timestamp (varint)}
    sample = b"\x09" + _PACK_DOUBLE(value) + b"\x10" + timestamp_varint
    series = head + _length_delimited(0x12, sample)
    return _length_delimited(0x0A, series)  # WriteRequest.timeseries = 1


def encode_remote_write(points: Iterable[Point]) -> bytes:
    """Protobuf `WriteRequest{timeseries: [TimeSeries{labels, samples: [Sample]}]}`, one
    TimeSeries per point, labels sorted with `__name__` first (it sorts first: `_` < `a`)."""
    out = bytearray()
    try:
        for point in points:
            out += remote_write_series(remote_write_series_head(point.name, point.labels), point.value,
                                       varint(point.timestamp_ms))
    except UnicodeEncodeError as exc:
        raise Unrepresentable(f"text is not valid UTF-8: {exc.reason}") from None
    return bytes(out)


def snappy_compress(data: bytes) -> bytes:
    """Snappy *block* format (what remote write uses), via cramjam."""
    import cramjam

    return bytes(cramjam.snappy.compress_raw(data))


# -- Influx line protocol (VictoriaMetrics /write, InfluxDB 1.x /write) ----------------------

_INFLUX_TAG_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ "})
_INFLUX_MEASUREMENT_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", " ": "\\ "})


def escape_influx_tag(text: str) -> str:
    """Tag keys, tag values and field keys: backslash, comma, equals sign and space are
    backslash-escaped. A line break cannot be escaped in line protocol at all."""
    if "\n" in text or "\r" in text:
        raise Unrepresentable("Influx line protocol cannot carry a line break in a tag value or key")
    return text.translate(_INFLUX_TAG_ESCAPES)


def escape_influx_measurement(text: str) -> str:
    if "\n" in text or "\r" in text:
        raise Unrepresentable("Influx line protocol cannot carry a line break in a measurement")
    return text.translate(_INFLUX_MEASUREMENT_ESCAPES)


def influx_split(name: str) -> tuple[str, str]:
    """Series name → (measurement, field). Derived names split at the last `:`
    (`kubeproxy:m:p99` → `kubeproxy:m`, `p99`); raw names at the first `_`
    (`kubeproxy_sync_proxy_rules_duration_seconds_bucket` → `kubeproxy`,
    `sync_proxy_rules_duration_seconds_bucket`); a name with neither → (name, `value`).
    VictoriaMetrics joins them back as measurement + separator + field."""
    head, sep, tail = name.rpartition(":")
    if sep and head and tail:
        return head, tail
    head, sep, tail = name.partition("_")
    if sep and head and tail:
        return head, tail
    return name, "value"


def influx_head(measurement: str, labels: tuple[tuple[str, str], ...]) -> str:
    """Measurement and tags of a line, escaped (raises Unrepresentable on a line break)."""
    tags = "".join(f",{escape_influx_tag(k)}={escape_influx_tag(v)}" for k, v in labels)
    return escape_influx_measurement(measurement) + tags


def encode_influx(points: Sequence[Point]) -> tuple[bytes, int]:
    """Line protocol with millisecond timestamps (send with precision=ms). Consecutive points
    with the same measurement, tags and timestamp share one line (one field each). NaN and
    ±Inf have no spelling in line protocol: they are left out and counted (second result)."""
    lines: list[str] = []
    skipped = 0
    current_key: tuple | None = None
    fields: list[str] = []
    head = ""
    timestamp = 0

    def close() -> None:
        if fields:
            lines.append(f"{head} {','.join(fields)} {timestamp}\n")

    for point in points:
        if not math.isfinite(point.value):
            skipped += 1
            continue
        measurement, field = influx_split(point.name)
        key = (measurement, point.labels, point.timestamp_ms)
        if key != current_key:
            close()
            current_key = key
            fields = []
            head = influx_head(measurement, point.labels)
            timestamp = point.timestamp_ms
        fields.append(f"{escape_influx_tag(field)}={_influx_float(point.value)}")
    close()
    try:
        return "".join(lines).encode("utf-8"), skipped
    except UnicodeEncodeError as exc:
        raise Unrepresentable(f"text is not valid UTF-8: {exc.reason}") from None


def _influx_float(value: float) -> str:
    # repr() is the shortest round-trip form; line protocol floats accept 1e-05 and 1.5e+20.
    text = repr(value)
    return text


# -- decoders used by tests and tools ---------------------------------------------------------


def unescape_influx(text: str) -> str:
    """Inverse of escape_influx_tag, with VictoriaMetrics' rules (a backslash escapes a
    backslash, comma, equals sign or space; any other backslash is literal)."""
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in "\\,= ":
            out.append(text[i + 1])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)
