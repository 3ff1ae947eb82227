"""A fast check that a derived record's JSON has the common shape `DerivedRecord` accepts,
for consumers that read many records and build no DerivedRecord (the sink's fast path,
sinks/fastpath.py); and `RecordEncoder`, the bytes of `DerivedRecord.encode` for a producer
that writes many records of one window and builds no DerivedRecord (the stream stage's close).

`read_common(value)` parses the bytes once and returns what a consumer needs (the series
key, the values object, the window end) when the record has exactly the common shape: a
known schema, `window.start_ms`/`end_ms` ints, `values`/`labels`/`contributors` objects (the
last two if present). Anything else raises, and the caller hands the record to
`DerivedRecord.decode`, which decides (and names the error). What repeats for every window
of a series is checked once per distinct key by `check_series` (string `metric`, `cluster`,
label values; `scope` node or cluster, with a node exactly for scope node); each value
through `number` (a number, null is the caller's, or the strings "NaN"/"+Inf"/"-Inf"/"Inf").

Equivalence: a record that passes all three decodes with `DerivedRecord.decode` to the same
fields (tests/contracts/test_derived_fast.py checks it with hypothesis). The converse need
not hold: this check may refuse a record the contract accepts (e.g. a float `start_ms`).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import orjson

from contracts.codec import _SPECIAL_FROM_JSON as SPECIAL_FLOATS
from contracts.codec import dumps, float_to_json
from contracts.derived import KINDS, SCOPES, schema_name

SCHEMAS = frozenset(schema_name(k) for k in KINDS)

# (metric, cluster, node, scope, window size in s, label items, value keys): what is equal for
# every window of one series group. Equal keys mean equal str fields (a str never equals a
# non-str), so check_series holds for every record whose key was checked once.
SeriesKey = tuple[Any, Any, Any, Any, int, tuple, tuple]

_EMPTY: dict = {}  # default of absent labels/contributors; never mutated


class NotCommonShape(Exception):
    """The record is not of the common shape: DerivedRecord.decode decides."""


def read_common(value: bytes) -> tuple[SeriesKey, dict, int]:
    """(series key, values, window end in ms) of a record of the common shape; raises
    (anything) otherwise. The key's fields are checked by `check_series`, the values by
    `number`."""
    obj = orjson.loads(value)
    if type(obj) is not dict or obj["schema"] not in SCHEMAS:
        raise NotCommonShape("not a derived record")
    window = obj["window"]
    values = obj["values"]
    labels = obj.get("labels", _EMPTY)
    if (type(window) is not dict or type(values) is not dict or type(labels) is not dict
            or type(obj.get("contributors", _EMPTY)) is not dict):
        raise NotCommonShape("field types")
    start = window["start_ms"]
    end = window["end_ms"]
    if type(start) is not int or type(end) is not int:
        raise NotCommonShape("window types")
    key = (obj["metric"], obj["cluster"], obj.get("node"), obj["scope"], (end - start) // 1000,
           tuple(labels.items()), tuple(values))
    return key, values, end


def check_series(key: SeriesKey) -> None:
    """The checks DerivedRecord makes on a series group's fields, plus string types (the
    contract would fail, or stringify, on other types: it decides those)."""
    metric, cluster, node, scope, _, label_items, _ = key
    if type(metric) is not str or type(cluster) is not str or type(scope) is not str or scope not in SCOPES:
        raise NotCommonShape("field types")
    if node is not None and type(node) is not str:
        raise NotCommonShape("node type")
    if (scope == "node") != (node is not None):
        raise NotCommonShape("scope/node")
    for _, label_value in label_items:
        if type(label_value) is not str:
            raise NotCommonShape("label value type")


def number(value: object) -> float:
    """float_from_json for the JSON types orjson produces (raises for the others; None is the
    caller's: an absent value)."""
    kind = type(value)
    if kind is float:
        return value  # type: ignore[return-value]
    if kind is int:
        return float(value)  # type: ignore[arg-type]
    if kind is str:
        return SPECIAL_FLOATS[value]
    raise NotCommonShape("value type")


# -- encoding -------------------------------------------------------------------------------

_SCHEMA_JSON = {kind: b',"schema":' + dumps(schema_name(kind)) for kind in KINDS}


class RecordEncoder:
    """`DerivedRecord(kind, scope, cluster, node, start_ms, end_ms, metric, values, labels,
    contributors).encode()` for the records of one window of one node (or cluster): what they
    share is encoded once, each record joins its own parts in between. `dumps` sorts keys and
    writes nothing between them, so the parts joined in the order of the sorted keys (cluster,
    contributors, labels, metric, node, schema, scope, values, window) are the same bytes
    (tests/contracts/test_derived_fast.py checks it against DerivedRecord.encode).

    `key` is the record's Kafka key (DerivedRecord.key). The scope and node are checked as
    DerivedRecord checks them."""

    __slots__ = ("key", "_head", "_node", "_scope", "_window")

    def __init__(self, scope: str, cluster: str, node: str | None, start_ms: int, end_ms: int,
                 contributors: Mapping[str, int]) -> None:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        if (scope == "node") != (node is not None):
            raise ValueError("a node-scope record names its node; a cluster-scope record does not")
        self.key = (node if scope == "node" else cluster).encode("utf-8")  # type: ignore[union-attr]
        self._head = b'{"cluster":' + dumps(cluster) + b',"contributors":' + dumps(dict(contributors)) + b',"labels":'
        self._node = b',"node":' + dumps(node)
        self._scope = b',"scope":' + dumps(scope) + b',"values":'
        self._window = (b',"window":' + dumps({"start_ms": start_ms, "end_ms": end_ms,
                                               "size_s": (end_ms - start_ms) // 1000}) + b"}")

    def encode(self, kind: str, metric_json: bytes, labels_json: bytes, values: Mapping[str, Any]) -> bytes:
        """The record of `kind` with `metric_json` = dumps(metric), `labels_json` =
        dumps(dict(labels)) (a series' are encoded once by the caller) and `values` as floats
        or None, converted as DerivedRecord.to_json converts them."""
        # DerivedRecord.to_json's values: each float through float_to_json, None as null. Values
        # that are all finite numbers (their sum is finite; a None or a string raises) are their
        # own JSON form.
        try:
            plain = type(values) is dict and _isfinite(sum(values.values()))
        except (TypeError, OverflowError):  # not all numbers; an int past any float
            plain = False
        if not plain:
            # float_to_json(None) is None: the contract's "None stays null" without a test per value
            values = {k: float_to_json(v) for k, v in values.items()}
        return b"".join((self._head, labels_json, b',"metric":', metric_json, self._node, _SCHEMA_JSON[kind],
                         self._scope, _orjson_dumps(values, option=_SORTED), self._window))


_isfinite = math.isfinite
_orjson_dumps = orjson.dumps
_SORTED = orjson.OPT_SORT_KEYS  # codec.dumps' option
