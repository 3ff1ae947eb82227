"""contracts/records_fast.py equals the contract's decoder (contracts/records.py) on valid
records and on every kind of invalid one: the same record, the same encoding, the same error."""

from __future__ import annotations

import json

import pytest

from contracts.codec import DecodeError
from contracts.records import ScrapeRecord
from contracts.records_fast import fast_decode
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
        try:
            want = ScrapeRecord.decode(value)
        except DecodeError as exc:
            with pytest.raises(DecodeError) as got:
                fast_decode(value)
            assert str(got.value) == str(exc)
            continue
        got_record = fast_decode(value)
        assert got_record == want
        assert got_record.encode() == want.encode()
        assert [type(s.value) for s in got_record.samples] == [type(s.value) for s in want.samples]
