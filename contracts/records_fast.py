"""A faster decoder for `<prefix>.samples` messages (the stream stage's), producing the very
ScrapeRecord the contract's `ScrapeRecord.decode` produces. It lives beside the contract it
speeds up (contracts/records.py), and tests/contracts/test_records_fast.py holds it equal.

The contract validates every sample row through a few function calls (~0.3-0.5 ms for a
150-sample scrape); here the common case is checked inline with exact type tests on what
orjson returns. Anything the fast path does not positively recognise as valid goes to the
contract's own decoder, which then raises its DecodeError (the DLQ reason) or returns the
record: the accepted inputs, the records and the error messages are the contract's.

`decode_scrape` goes further for the stream stage: a node sends the same samples (names and
labels, in order) and families scrape after scrape, so the skeleton of its last valid scrape
is remembered (a ScrapeShape) and a scrape equal to it is checked column by column (values,
timestamps) with a few C-level operations; no Sample is built unless the record is asked
for. tests/contracts/test_records_fast.py holds it equal to the contract over variants of
every field of a remembered shape.
"""

from __future__ import annotations

import math

import orjson

from contracts.records import SCRAPE_SCHEMA, Sample, ScrapeRecord

_SPECIAL = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf, "Inf": math.inf}
_new_sample = tuple.__new__
_NONE_OR_INT = {type(None), int}
_FLOAT = {float}


class ScrapeShape:
    """What a node's scrapes repeat: the samples' names and labels, in order, and the
    record's families and labels, as validated once. Consumers may key what they derive
    from the samples' layout (a grouping plan) by the shape object itself."""

    __slots__ = ("names", "labels", "families", "record_labels")

    def __init__(self, names: tuple, labels: tuple, families: dict, record_labels: dict) -> None:
        self.names = names  # str per sample
        self.labels = labels  # {str: str} per sample (copies: never a decoded record's)
        self.families = families
        self.record_labels = record_labels


class DecodedScrape:
    """A scrape as the stream stage reads it: the record's fields, and for a scrape of a
    known shape the shape and the samples' values (floats, in order); the ScrapeRecord
    itself (`record`) is built when asked for (late records, grouping without a shape)."""

    __slots__ = ("node", "cluster", "scrape_ts_ms", "up", "kube_proxy_metrics", "shape", "values",
                 "_record", "_obj", "_labels", "_stamps")

    def __init__(self, record: ScrapeRecord | None, shape: ScrapeShape | None = None, values: list | None = None,
                 obj: dict | None = None, labels: tuple = (), stamps: tuple = ()) -> None:
        self._record = record
        self.shape = shape
        self.values = values
        self._obj = obj
        self._labels = labels
        self._stamps = stamps
        if record is not None:
            self.node, self.cluster, self.scrape_ts_ms = record.node, record.cluster, record.scrape_ts_ms
            self.up, self.kube_proxy_metrics = record.up, record.kube_proxy_metrics
        else:
            self.node, self.cluster, self.scrape_ts_ms = obj["node"], obj["cluster"], obj["scrape_ts_ms"]
            self.up, self.kube_proxy_metrics = obj["up"], bool(obj.get("kube_proxy_metrics", True))

    @property
    def record(self) -> ScrapeRecord:
        if self._record is None:
            obj = self._obj
            samples = tuple(map(_new_sample, [Sample] * len(self.values),
                                zip(self.shape.names, self._labels, self.values, self._stamps)))
            self._record = ScrapeRecord(
                node=self.node, cluster=self.cluster, target=obj["target"], scrape_ts_ms=self.scrape_ts_ms,
                up=self.up, scrape_duration_s=float(obj["scrape_duration_s"]), body_bytes=obj["body_bytes"],
                samples=samples, families=obj.get("families", {}), labels=obj.get("labels", {}),
                error=obj.get("error"), kube_proxy_metrics=self.kube_proxy_metrics)
            self._obj = None
        return self._record


#: the samples' names of a shape -> the shapes seen with those names
_SHAPES: dict[tuple, list[ScrapeShape]] = {}
_MAX_SHAPES = 1000
_SHAPES_PER_NAMES = 8
#: node -> the shape of its last scrape (a node keeps its shape: no lookup by names)
_NODE_SHAPES: dict[str, ScrapeShape] = {}
_MAX_NODES = 100_000


def fast_decode(data: bytes | str) -> ScrapeRecord:
    """ScrapeRecord.decode(data), faster; raises contracts.codec.DecodeError like it."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return ScrapeRecord.decode(data)  # raises the contract's error
    record = _fast(obj)
    return ScrapeRecord.from_json(obj) if record is None else record


def decode_scrape(data: bytes | str) -> DecodedScrape:
    """fast_decode(data) as a DecodedScrape: a scrape shaped like one decoded before is
    checked only where it can differ (its values and timestamps), in bulk, and no Sample is
    built. Raises contracts.codec.DecodeError like the contract; `.record` is its record."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return DecodedScrape(ScrapeRecord.decode(data))  # raises the contract's error
    decoded = _known_shape(obj)
    if decoded is not None:
        return decoded
    record = _fast(obj)
    if record is None:
        return DecodedScrape(ScrapeRecord.from_json(obj))
    shape = _remember_shape(record)
    return DecodedScrape(record, shape, None if shape is None else [s[2] for s in record.samples])


def _remember_shape(record: ScrapeRecord) -> ScrapeShape | None:
    samples = record.samples
    if not samples:
        return None
    names = tuple([s[0] for s in samples])
    labels = tuple([s[1] for s in samples])
    shapes = _SHAPES.get(names)
    if shapes is None:
        if len(_SHAPES) >= _MAX_SHAPES:
            _SHAPES.clear()
        shapes = _SHAPES[names] = []
    for shape in shapes:
        if shape.labels == labels and shape.families == record.families and shape.record_labels == record.labels:
            break
    else:
        if len(shapes) >= _SHAPES_PER_NAMES:
            _NODE_SHAPES.pop(record.node, None)  # its next scrape goes straight to the row checks
            return None
        shape = ScrapeShape(names, tuple([dict(s) for s in labels]), dict(record.families), dict(record.labels))
        shapes.append(shape)
    if len(_NODE_SHAPES) >= _MAX_NODES:
        _NODE_SHAPES.clear()
    _NODE_SHAPES[record.node] = shape
    return shape


def _known_shape(obj) -> DecodedScrape | None:
    """The decoded scrape when `obj` is certainly valid and has its node's last shape, else
    None.

    Equal to a remembered (validated) skeleton, the rows are lists of four with string names
    and string-to-string labels (orjson returns only exact types, and no other type equals a
    str or a dict); what is left to check are the values and the timestamps."""
    if type(obj) is not dict or type(node := obj.get("node")) is not str:
        return None
    shape = _NODE_SHAPES.get(node)
    if shape is None or _header(obj, check_maps=False) is None:
        return None
    try:
        # one row per column; strict: every row as long as the first (four, or unpacking fails)
        names, labels, values, stamps = zip(*obj["samples"], strict=True)
    except (ValueError, TypeError):
        return None
    if (names != shape.names or labels != shape.labels or shape.families != obj.get("families", {})
            or shape.record_labels != obj.get("labels", {})):
        return None
    if stamps.count(None) != len(stamps) and not set(map(type, stamps)) <= _NONE_OR_INT:
        return None
    if set(map(type, values)) <= _FLOAT:
        values = list(values)
    else:
        values = _numbers(values)
        if values is None:
            return None
    return DecodedScrape(None, shape, values, obj, labels, stamps)


def _numbers(values: tuple) -> list | None:
    """The values as floats (an int converted, a special string read), None if one is neither."""
    out = []
    append = out.append
    for value in values:
        kind = type(value)
        if kind is float:
            append(value)
        elif kind is int:
            append(float(value))
        elif kind is str and value in _SPECIAL:
            append(_SPECIAL[value])
        else:
            return None
    return out


def _str_map(value) -> bool:
    if type(value) is not dict:
        return False
    for k, v in value.items():
        if type(k) is not str or type(v) is not str:
            return False
    return True


def _header(obj, check_maps: bool = True) -> tuple | None:
    """(node, cluster, target, ts, up, duration, body bytes, sample rows) when the record's
    fields other than the rows are certainly valid, else None. Without `check_maps` the
    families and labels are left to the caller."""
    if type(obj) is not dict or obj.get("schema") != SCRAPE_SCHEMA:
        return None
    node = obj.get("node")
    cluster = obj.get("cluster")
    target = obj.get("target")
    ts = obj.get("scrape_ts_ms")
    up = obj.get("up")
    duration = obj.get("scrape_duration_s")
    body = obj.get("body_bytes")
    rows = obj.get("samples")
    families = obj.get("families", {})
    labels = obj.get("labels", {})
    if (type(node) is not str or not node or type(cluster) is not str or type(target) is not str
            or type(ts) is not int or type(up) is not int or type(body) is not int
            or (type(duration) is not float and type(duration) is not int) or type(rows) is not list
            or (check_maps and (not _str_map(families) or not _str_map(labels)))):
        return None
    return node, cluster, target, ts, up, duration, body, rows


def _fast(obj) -> ScrapeRecord | None:
    """The record when `obj` is certainly valid, else None (the contract decides)."""
    header = _header(obj)
    if header is None:
        return None
    node, cluster, target, ts, up, duration, body, rows = header
    families = obj.get("families", {})
    labels = obj.get("labels", {})
    samples = []
    append = samples.append
    special = _SPECIAL
    string = str  # a local: one check per label value of every row
    for row in rows:
        if type(row) is not list or len(row) != 4:
            return None
        name, sample_labels, value, sample_ts = row
        if type(name) is not str or type(sample_labels) is not dict:
            return None
        for label_value in sample_labels.values():  # orjson's keys are always str
            if type(label_value) is not string:
                return None
        if sample_ts is not None and type(sample_ts) is not int:
            return None
        kind = type(value)
        if kind is float:  # the common case: the row holds the Sample's four fields as they are
            append(_new_sample(Sample, row))
            continue
        if kind is int:
            value = float(value)
        elif kind is str:
            value = special.get(value)
            if value is None:
                return None
        else:
            return None
        append(_new_sample(Sample, (name, sample_labels, value, sample_ts)))
    return ScrapeRecord(node=node, cluster=cluster, target=target, scrape_ts_ms=ts, up=up,
                        scrape_duration_s=float(duration), body_bytes=body, samples=tuple(samples),
                        families=families, labels=labels, error=obj.get("error"),
                        kube_proxy_metrics=bool(obj.get("kube_proxy_metrics", True)))
