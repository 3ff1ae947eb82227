"""A faster decoder for `<prefix>.samples` messages (the stream stage's), producing the very
ScrapeRecord the contract's `ScrapeRecord.decode` produces. It lives beside the contract it
speeds up (contracts/records.py), and tests/contracts/test_records_fast.py holds it equal.

The contract validates every sample row through a few function calls (~0.3-0.5 ms for a
150-sample scrape); here the common case is checked inline with exact type tests on what
orjson returns. Anything the fast path does not positively recognise as valid goes to the
contract's own decoder, which then raises its DecodeError (the DLQ reason) or returns the
record: the accepted inputs, the records and the error messages are the contract's.
"""

from __future__ import annotations

import math

import orjson

from contracts.records import SCRAPE_SCHEMA, Sample, ScrapeRecord

_SPECIAL = {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf, "Inf": math.inf}
_new_sample = tuple.__new__


def fast_decode(data: bytes | str) -> ScrapeRecord:
    """ScrapeRecord.decode(data), faster; raises contracts.codec.DecodeError like it."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return ScrapeRecord.decode(data)  # raises the contract's error
    record = _fast(obj)
    return ScrapeRecord.from_json(obj) if record is None else record


def _str_map(value) -> bool:
    if type(value) is not dict:
        return False
    for k, v in value.items():
        if type(k) is not str or type(v) is not str:
            return False
    return True


def _fast(obj) -> ScrapeRecord | None:
    """The record when `obj` is certainly valid, else None (the contract decides)."""
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
            or not _str_map(families) or not _str_map(labels)):
        return None
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
