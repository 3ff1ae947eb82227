"""Label values are strings in every contract: the decoders refuse anything else with an error
that names the sample and the label, so such a record is dead-lettered where it enters instead
of breaking a later stage (a number as a sample label once cost a whole cluster window)."""

from __future__ import annotations

import json

import pytest

from contracts.codec import DecodeError, loads
from contracts.derived import DerivedRecord
from contracts.records import ScrapeRecord
from streams.config import StreamSettings
from contracts.records_fast import fast_decode
from tests.streams.reference import run_reference
from tests.streams.simdata import scrape_records

NOT_STRINGS = [5, 1.5, None, True, ["a"], {"a": "b"}]


def labelled_row(obj: dict, label: str) -> int:
    return next(i for i, row in enumerate(obj["samples"]) if label in row[1])


@pytest.mark.parametrize("bad", NOT_STRINGS)
def test_a_sample_label_that_is_not_a_string_is_a_decode_error_naming_it(bad: object) -> None:
    record = scrape_records(nodes=1, minutes=0.25)[0]
    obj = loads(record.encode())
    index = labelled_row(obj, "table")
    obj["samples"][index][1]["table"] = bad
    value = json.dumps(obj).encode()
    with pytest.raises(DecodeError) as contract:
        ScrapeRecord.decode(value)
    assert f"samples[{index}] label 'table' must be a string" in str(contract.value)
    # The stream's fast decoder raises exactly the contract's error.
    with pytest.raises(DecodeError) as fast:
        fast_decode(value)
    assert str(fast.value) == str(contract.value)


def test_string_sample_labels_still_decode_identically() -> None:
    for record in scrape_records(nodes=2, minutes=0.5):
        value = record.encode()
        assert fast_decode(value) == ScrapeRecord.decode(value) == record


@pytest.mark.parametrize("bad", NOT_STRINGS)
def test_a_derived_label_that_is_not_a_string_is_a_decode_error_naming_it(bad: object) -> None:
    obj = {"schema": "kube-proxy.gauges/v1", "scope": "cluster", "cluster": "prod", "node": None,
           "window": {"start_ms": 1_700_000_040_000, "end_ms": 1_700_000_100_000, "size_s": 60},
           "metric": "sync_proxy_rules_iptables_total", "labels": {"table": bad}, "values": {"last": 1.0},
           "contributors": {}}
    with pytest.raises(DecodeError, match="field 'labels': label 'table' must be a string"):
        DerivedRecord.decode(json.dumps(obj).encode())
    obj["labels"] = ["table"]
    with pytest.raises(DecodeError, match="field 'labels' must be an object"):
        DerivedRecord.decode(json.dumps(obj).encode())


def test_a_numeric_sample_label_is_dead_lettered_and_the_cluster_window_survives() -> None:
    """Through the stream stages: the bad scrape goes to the DLQ with the decoder's reason and
    every other output is what the same run without that scrape gives."""
    settings = StreamSettings(topic_prefix="u", partitions=2)
    records = scrape_records(nodes=3, minutes=4)
    messages = [(r.key, r.encode()) for r in records]
    bad_at = len(messages) // 2
    obj = loads(messages[bad_at][1])
    obj["samples"][labelled_row(obj, "table")][1]["table"] = 5
    with_bad = [*messages[:bad_at], (messages[bad_at][0], json.dumps(obj).encode()), *messages[bad_at + 1:]]
    without_bad = messages[:bad_at] + messages[bad_at + 1:]

    sent = run_reference(settings, with_bad)
    expected = run_reference(settings, without_bad)

    dlq = [v for t, _, v in sent if t == settings.topics.dlq]
    letter = loads(dlq[0]) if len(dlq) == 1 else {}
    assert letter.get("reason") == "malformed" and "label 'table' must be a string" in letter.get("error", ""), dlq
    assert [m for m in sent if m[0] != settings.topics.dlq] == expected
    assert any(loads(v).get("scope") == "cluster" for t, _, v in expected if t == settings.topics.gauges)
