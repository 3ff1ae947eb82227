"""contracts/records_fast.py equals the contract's decoder (contracts/records.py) on valid
records and on every kind of invalid one: the same record, the same encoding, the same error."""

from __future__ import annotations

import json

import pytest

from contracts.codec import DecodeError
from contracts.records import ScrapeRecord
from contracts.records_fast import decode_scrape, fast_decode
from tests.streams.simdata import scrape_records


def test_fast_decode_equals_the_contract_decoder():
    good = scrape_records(nodes=2, minutes=1, seed=1)
    values = [r.encode() for r in good]
    base = json.loads(values[0])
    variants = []
    for field, bad in (("schema", "x/v9"), ("node", ""), ("node", 3), ("up", True), ("scrape_ts_ms", 1.5),
                       ("scrape_duration_s", "1"), ("body_bytes", None), ("families", {"a": 1}),
                       ("labels", []), ("samples", {}), ("error", "boom"), ("kube_proxy_metrics", 0),
                       ("scrape_duration_s", 2)):
        variants.append({**base, field: bad})
    for field in ("node", "cluster", "samples", "up"):
        variants.append({k: v for k, v in base.items() if k != field})
    row = base["samples"][0]
    for bad_row in ([row[0], row[1], "NaN", None], [row[0], row[1], "+Inf", 5], [row[0], row[1], 7, None],
                    [row[0], row[1], "7", None], [row[0], row[1], True, None], [row[0], row[1], 1.0, 1.5],
                    [row[0], row[1], 1.0, False], [row[0], {"a": ["list"]}, 1.0, None], [row[0], row[1], 1.0],
                    [5, row[1], 1.0, None], [row[0], [], 1.0, None], "row"):
        variants.append({**base, "samples": [bad_row, *base["samples"][1:]]})
    values += [json.dumps(v).encode() for v in variants] + [b"{broken", b"[]", b"null", b"\xff"]
    for value in values:
        want = _contract_decode_or_same_error(value, fast_decode)
        if want is None:
            continue
        got_record = fast_decode(value)
        assert got_record == want
        assert got_record.encode() == want.encode()
        assert [type(s.value) for s in got_record.samples] == [type(s.value) for s in want.samples]


def _contract_decode_or_same_error(value: bytes, decoder) -> ScrapeRecord | None:  # noqa: ANN001
    """The contract's record of `value`; or, when the contract refuses it, None once `decoder`
    has been seen to raise the same DecodeError."""
    try:
        return ScrapeRecord.decode(value)
    except DecodeError as exc:
        with pytest.raises(DecodeError) as got:
            decoder(value)
        assert str(got.value) == str(exc)
        return None


def _same_values(got: list, want: list) -> bool:
    """Equal floats bit for bit (NaN equal to NaN, -0.0 not equal to 0.0)."""
    return [(type(v), repr(v)) for v in got] == [(type(v), repr(v)) for v in want]


def _check_decoded(value: bytes) -> str:
    """decode_scrape(value) agrees with the contract's decoder: the same error, or the same
    record and the same fields, values and shape samples. Which way it went: "error",
    "shape" (checked by its remembered shape) or "record" (decoded row by row)."""
    want = _contract_decode_or_same_error(value, decode_scrape)
    if want is None:
        return "error"
    decoded = decode_scrape(value)
    way = "shape" if decoded._record is None else "record"
    assert (decoded.node, decoded.cluster, decoded.scrape_ts_ms, decoded.up, decoded.kube_proxy_metrics) == (
        want.node, want.cluster, want.scrape_ts_ms, want.up, want.kube_proxy_metrics)
    if decoded.shape is not None:
        assert _same_values(decoded.values, [s.value for s in want.samples])
        assert decoded.shape.names == tuple(s.name for s in want.samples)
        assert decoded.shape.labels == tuple(s.labels for s in want.samples)
        assert decoded.shape.families == want.families and decoded.shape.record_labels == want.labels
    record = decoded.record
    assert record == want
    assert record.encode() == want.encode()
    assert _same_values([s.value for s in record.samples], [s.value for s in want.samples])
    assert [type(s.timestamp_ms) for s in record.samples] == [type(s.timestamp_ms) for s in want.samples]
    return way


def _row_variants(base: dict) -> list[dict]:
    """Scrapes with the skeleton of `base` (names, labels, families) but other values or
    timestamps, valid and not, and scrapes whose skeleton differs a little."""
    rows = base["samples"]
    out = []

    def with_row(i: int, row) -> dict:
        return {**base, "samples": [*rows[:i], row, *rows[i + 1:]]}

    last = len(rows) - 1
    for i in (0, last // 2, last):
        name, labels, _value, _ts = rows[i]
        for value in (2.5, 7, 0, -3, 2**53 + 1, "NaN", "+Inf", "-Inf", "Inf", "inf", "7", "", True, False, None,
                      [1.0], {"v": 1.0}, -0.0):
            out.append(with_row(i, [name, labels, value, None]))
        for ts in (5, -1, 0, 1.5, True, "5", [5], None):
            out.append(with_row(i, [name, labels, 1.0, ts]))
        out.append(with_row(i, [name, labels, 1.0]))  # too short
        out.append(with_row(i, [name, labels, 1.0, None, None]))  # too long
        out.append(with_row(i, "abcd"))  # a string as long as a row
        out.append(with_row(i, {"a": 1, "b": 2, "c": 3, "d": 4}))  # a dict as long as a row
        out.append(with_row(i, [name + "x", labels, 1.0, None]))
        out.append(with_row(i, [5, labels, 1.0, None]))
        out.append(with_row(i, [[name], labels, 1.0, None]))
        out.append(with_row(i, [name, {**labels, "extra": "1"}, 1.0, None]))
        out.append(with_row(i, [name, [], 1.0, None]))
        for bad in (5, None, True, ["a"]):
            out.append(with_row(i, [name, {**labels, "le": bad}, 1.0, None]))
            out.append(with_row(i, [name, {key: bad for key in labels} or {"k": bad}, 1.0, None]))
    out.append({**base, "samples": [[*row[:2], 1, 1000] for row in rows]})  # every value an int, every ts set
    out.append({**base, "samples": [[*row[:2], "NaN", None] for row in rows]})
    out.append({**base, "samples": rows[:-1]})  # one sample less
    out.append({**base, "samples": [*rows, rows[0]]})  # one more
    out.append({**base, "samples": [rows[-1], *rows[:-1]]})  # another order
    out.append({**base, "samples": []})
    out.append({**base, "samples": [[]] * len(rows)})
    out.append({**base, "samples": [[r[0], r[1], r[2], r[3], r[3]] for r in rows]})  # five columns each
    first_family = next(iter(base["families"]))
    for families in ({**base["families"], first_family: "gauge"}, {**base["families"], "x": 1}, {}, [], None):
        out.append({**base, "families": families})
    for labels in ({"zone": "a"}, {"zone": 1}, [], None):
        out.append({**base, "labels": labels})
    for field, bad in (("schema", "x/v9"), ("node", ""), ("node", 3), ("node", ["n"]), ("up", True),
                       ("scrape_ts_ms", 1.5), ("scrape_duration_s", "1"), ("body_bytes", None), ("target", 5),
                       ("cluster", None), ("error", "boom"), ("kube_proxy_metrics", 0), ("scrape_duration_s", 2)):
        out.append({**base, field: bad})
    out.append({k: v for k, v in base.items() if k != "samples"})
    out.append({**base, "node": base["node"] + "-other"})  # a node whose shape is not remembered yet
    return out


def test_decode_scrape_of_a_remembered_shape_equals_the_contract_decoder():
    """decode_scrape checks a scrape shaped like its node's previous one only where it may
    differ: for every variant of the values, timestamps and skeleton it gives the contract's
    record or raises the contract's error, and it takes the shape path for the valid ones."""
    good = scrape_records(nodes=2, minutes=1, seed=3)
    shaped_path = 0
    for record in good:
        value = record.encode()
        _check_decoded(value)  # remembers the node's shape
        base = json.loads(value)
        for variant in _row_variants(base):
            shaped_path += _check_decoded(json.dumps(variant).encode()) == "shape"
            _check_decoded(value)  # and back to the remembered shape
        assert _check_decoded(value) == "shape"
    assert shaped_path > 20 * len(good)  # the valid value variants went by the shape


def test_decode_scrape_with_a_label_value_that_is_not_a_string_on_a_remembered_shape():
    record = scrape_records(nodes=1, minutes=0.25, seed=5)[0]
    value = record.encode()
    _check_decoded(value)
    obj = json.loads(value)
    index = next(i for i, row in enumerate(obj["samples"]) if "table" in row[1])
    for bad in (5, 1.5, None, True, ["a"], {"a": "b"}):
        obj["samples"][index][1]["table"] = bad
        assert _check_decoded(json.dumps(obj).encode()) == "error"
