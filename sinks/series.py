"""Series naming: pure functions from records to points (name, labels, value, timestamp).

Derived records become Prometheus recording-rule style series
`kubeproxy:<metric>:<value key>` with the labels `cluster`, `node` (node scope only),
`scope`, `window`, then the user's `--label`s, then the record's own labels. Raw scrapes
(`--raw`) become one series per kube-proxy sample under its own name, with `cluster` and
`node` added. The rules are documented as a table in sinks/README.md.
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Mapping, NamedTuple

from contracts.derived import DerivedRecord
from contracts.errors import ConfigError
from contracts.records import ScrapeRecord

PREFIX = "kubeproxy"

# Labels the pipeline sets itself. A label of the same name from a record (or from --label,
# for a record's label) is kept as `exported_<name>`, like Prometheus' honor_labels=false.
PIPELINE_LABELS = ("cluster", "node", "scope", "window")

_LABEL_NAME_OK = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_LABEL_NAME_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_METRIC_NAME_OK = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_METRIC_NAME_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_:]")


class Point(NamedTuple):
    """One sample to write. `labels` is sorted by name and never holds `__name__`."""

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float
    timestamp_ms: int


def sanitize_label_name(name: str) -> str:
    """A valid Prometheus label name for any string, deterministically:
    every character outside [a-zA-Z0-9_] becomes `_`; a leading digit (or an empty name)
    gets a `_` in front; names starting with `__` (reserved for the store) get `label` in front."""
    if _LABEL_NAME_OK.match(name) and not name.startswith("__"):
        return name
    clean = _LABEL_NAME_BAD_CHARS.sub("_", name)
    if not clean or clean[0].isdigit():
        clean = "_" + clean
    if clean.startswith("__"):
        clean = "label" + clean
    return clean


def sanitize_name_part(part: str) -> str:
    """One `:`-separated part of a series name: [a-zA-Z0-9_] kept, anything else (`:` too) → `_`."""
    clean = _LABEL_NAME_BAD_CHARS.sub("_", part)
    return clean or "_"


def sanitize_metric_name(name: str) -> str:
    """A valid Prometheus metric name: [a-zA-Z0-9_:] kept, others → `_`, leading digit → `_`."""
    if _METRIC_NAME_OK.match(name):
        return name
    clean = _METRIC_NAME_BAD_CHARS.sub("_", name)
    if not clean or clean[0].isdigit():
        clean = "_" + clean
    return clean


def derived_series_name(metric: str, value_key: str) -> str:
    return f"{PREFIX}:{sanitize_name_part(metric)}:{sanitize_name_part(value_key)}"


def parse_extra_labels(pairs: Iterable[str]) -> dict[str, str]:
    """`--label NAME=VALUE` pairs; a name must be a valid label name and not a pipeline label."""
    labels: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--label {pair!r} is not NAME=VALUE")
        if not _LABEL_NAME_OK.match(name) or name.startswith("__"):
            raise ConfigError(f"--label {name!r} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*, no __ prefix)")
        if name in PIPELINE_LABELS:
            raise ConfigError(f"--label {name!r}: the sink sets {', '.join(PIPELINE_LABELS)} itself")
        labels[name] = value
    return labels


def merge_labels(own: Mapping[str, str], extra: Mapping[str, str],
                 record_labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Pipeline labels win over --label, which win over the record's (sanitized) labels; a
    loser is kept as `exported_<name>`. Empty values are left out (in Prometheus an empty
    label is an absent label). Sorted by name."""
    out: dict[str, str] = {k: v for k, v in own.items() if v != ""}
    for name, value in extra.items():
        if value == "":
            continue
        if name in out:
            name = "exported_" + name
        out[name] = value
    for raw_name, value in sorted(record_labels.items()):
        if value == "":
            continue
        name = sanitize_label_name(str(raw_name))
        while name in out:
            name = "exported_" + name
        out[name] = str(value)
    return tuple(sorted(out.items()))


_LABELS_CACHE: dict[tuple, tuple[tuple[str, str], ...]] = {}
_LABELS_CACHE_MAX = 100_000


def derived_points(record: DerivedRecord, extra_labels: Mapping[str, str] | None = None) -> list[Point]:
    """Points of one derived record: one per non-null value, timestamp = window end."""
    # The same series' labels come back every window: merge them once and hand out the same
    # tuple (the encoders cache their escaped text by it).
    window = f"{record.window_size_s}s"
    key = (record.cluster, record.node, record.scope, window, tuple(record.labels.items()),
           tuple(extra_labels.items()) if extra_labels else ())
    labels = _LABELS_CACHE.get(key)
    if labels is None:
        own = {"cluster": record.cluster, "scope": record.scope, "window": window}
        if record.scope == "node" and record.node is not None:
            own["node"] = record.node
        labels = merge_labels(own, extra_labels or {}, record.labels)
        if len(_LABELS_CACHE) >= _LABELS_CACHE_MAX:
            _LABELS_CACHE.clear()
        _LABELS_CACHE[key] = labels
    points = []
    for key in sorted(record.values):
        value = record.values[key]
        if value is None:
            continue
        points.append(Point(derived_series_name(record.metric, key), labels, float(value), record.window_end_ms))
    return points


def raw_points(record: ScrapeRecord, extra_labels: Mapping[str, str] | None = None) -> list[Point]:
    """Points of one raw scrape: every sample under its kube-proxy name with its labels plus
    `cluster`, `node` and the scrape's static labels; timestamp = scrape time."""
    own = {"cluster": record.cluster, "node": record.node}
    extra = dict(extra_labels or {})
    for name, value in record.labels.items():  # the producer's --label pairs
        extra.setdefault(sanitize_label_name(name), value)
    points = []
    for sample in record.samples:
        labels = merge_labels(own, extra, sample.labels)
        points.append(Point(sanitize_metric_name(sample.name), labels, float(sample.value), record.scrape_ts_ms))
    return points


def is_finite(value: float) -> bool:
    return math.isfinite(value)
