"""A scrape of a known shape is folded into its node state by list operations over its
ingest plan (node_state.apply_decoded); the state must be the one apply_scrape gives by
grouping the record's samples and stepping series by series, bit for bit, for every kind of
scrape: resets, NaN and infinite values, ints, missing +Inf buckets, changed layouts, legacy
units, new and gone series, down scrapes, restored (JSON) states."""

from __future__ import annotations

import copy
import random

import orjson
import pytest

from contracts.records_fast import decode_scrape
from streams import node_state
from streams.config import StreamSettings
from tests.streams.simdata import scrape_records

S = StreamSettings(topic_prefix="t", partitions=1)
LEGACY = "kubeproxy_sync_proxy_rules_latency_microseconds"
DURATION = "kubeproxy_sync_proxy_rules_duration_seconds"


def _rows(obj: dict, kind: str) -> list[list]:
    families = obj["families"]
    out = []
    for row in obj["samples"]:
        name = row[0]
        if kind == "counter" and families.get(name) == "counter":
            out.append(row)
        elif kind == "gauge" and families.get(name) == "gauge":
            out.append(row)
        elif kind in ("_bucket", "_count", "_sum") and name.endswith(kind):
            out.append(row)
    return out


def _pick(rng: random.Random, rows: list) -> list:
    return rng.choice(rows) if rows else [None, {}, None, None]  # a row of no scrape when there is none


def _lower(value):
    return value / 2 if isinstance(value, float) else value


#: one scrape's change: (obj, rng) -> None, on a copy of the scrape's JSON
def _value_changes():
    def set_value(kind, new):
        def change(obj, rng):
            row = _pick(rng, _rows(obj, kind))
            row[2] = new(row[2]) if callable(new) else new
        return change

    def every(kind, new):
        def change(obj, rng):
            for row in _rows(obj, kind):
                row[2] = new(row[2])
        return change

    return {
        "counter reset": every("counter", lambda v: 0.0),
        "one counter down": set_value("counter", _lower),
        "counter NaN": set_value("counter", "NaN"),
        "counter +Inf": set_value("counter", "+Inf"),
        "counter int": set_value("counter", lambda v: int(v) if isinstance(v, float) else v),
        "bucket down": set_value("_bucket", _lower),
        "bucket NaN": set_value("_bucket", "NaN"),
        "bucket +Inf": set_value("_bucket", "+Inf"),
        "buckets int": every("_bucket", lambda v: int(v) if isinstance(v, float) else v),
        "count down": set_value("_count", _lower),
        "count NaN": set_value("_count", "NaN"),
        "sum down": set_value("_sum", _lower),
        "sum NaN": set_value("_sum", "NaN"),
        "sum -Inf": set_value("_sum", "-Inf"),
        "gauge NaN": set_value("gauge", "NaN"),
        "gauge +Inf": set_value("gauge", "+Inf"),
        "gauge -Inf": set_value("gauge", "-Inf"),
        "gauge -0.0": set_value("gauge", -0.0),
        "gauge int": set_value("gauge", 3),
        "gauges huge": every("gauge", lambda v: 1e308),
    }


def _shape_changes():
    def drop_inf_bucket(obj, rng):
        rows = [r for r in _rows(obj, "_bucket") if r[1].get("le") == "+Inf"]
        if rows:
            obj["samples"].remove(_pick(rng, rows))

    def extra_bucket(obj, rng):
        rows = _rows(obj, "_bucket")
        if rows:
            row = _pick(rng, rows)
            obj["samples"].insert(obj["samples"].index(row), [row[0], {**row[1], "le": "1e-09"}, 0.0, None])

    def new_gauge_series(obj, rng):
        rows = _rows(obj, "gauge")
        if rows:
            row = _pick(rng, rows)
            obj["samples"].append([row[0], {**row[1], "extra": "1"}, 5.0, None])

    def drop_counter(obj, rng):
        rows = _rows(obj, "counter")
        if rows:
            obj["samples"].remove(_pick(rng, rows))

    def legacy_units(obj, rng):
        if DURATION not in obj["families"]:
            return
        obj["families"][LEGACY] = obj["families"].pop(DURATION)
        for row in obj["samples"]:
            if row[0].startswith(DURATION):
                row[0] = LEGACY + row[0][len(DURATION):]
                if row[0].endswith("_bucket") and row[1]["le"] != "+Inf":
                    row[1]["le"] = repr(float(row[1]["le"]) * 1e6)
                if row[0].endswith("_sum") and isinstance(row[2], float):
                    row[2] *= 1e6

    def family_now_gauge(obj, rng):
        rows = _rows(obj, "counter")
        if rows:
            obj["families"][_pick(rng, rows)[0]] = "gauge"

    def no_sum(obj, rng):
        obj["samples"] = [r for r in obj["samples"] if not r[0].endswith("_sum")]

    def no_count(obj, rng):
        obj["samples"] = [r for r in obj["samples"] if not r[0].endswith("_count")]

    return {"no +Inf bucket": drop_inf_bucket, "extra bucket": extra_bucket, "new gauge series": new_gauge_series,
            "counter gone": drop_counter, "legacy microseconds": legacy_units, "family now a gauge": family_now_gauge,
            "no sums": no_sum, "no counts": no_count}


def _down(obj, rng):
    obj.update(up=0, samples=[], error="connection refused")


def _no_kube_proxy_metrics(obj, rng):
    obj.update(kube_proxy_metrics=False, samples=[])


def _repeat_last(obj: dict, last: dict, kinds: tuple) -> None:
    """The rows of `kinds` take the value they had in the node's last scrape (no new
    observation: zero deltas), where that scrape had the row."""
    for kind in kinds:
        for row in _rows(obj, kind):
            row[2] = last.get(_row_key(row), row[2])


def _row_key(row: list) -> tuple:
    return row[0], orjson.dumps(row[1], option=orjson.OPT_SORT_KEYS)


def _same(fast: dict, reference: dict) -> None:
    assert repr(fast) == repr(reference)  # types and float bits, NaN included
    assert orjson.dumps(fast) == orjson.dumps(reference)


class _FastFolds:
    """Counts how often each fast fold applied and how often it declined, and the window
    pushes done in place (`quiet`: of a series without a new observation)."""

    def __init__(self, monkeypatch) -> None:
        self.applied = {"counters": 0, "hists": 0}
        self.declined = {"counters": 0, "hists": 0}
        self.in_place = {"quiet": 0, "observed": 0, "declined": 0}
        for kind, name in (("counters", "_fold_counters_fast"), ("hists", "_fold_hists_fast")):
            monkeypatch.setattr(node_state, name, self._counting(kind, getattr(node_state, name)))
        add_in_place = node_state.add_in_place

        def counted_add(window, keys, deltas, count, total, zero):
            done = add_in_place(window, keys, deltas, count, total, zero)
            self.in_place["declined" if not done else "quiet" if zero else "observed"] += 1
            return done

        monkeypatch.setattr(node_state, "add_in_place", counted_add)

    def _counting(self, kind, fold):
        def counted(*args):
            done = fold(*args)
            (self.applied if done else self.declined)[kind] += 1
            return done
        return counted


@pytest.mark.parametrize("seed", range(6))
def test_folding_by_the_ingest_plan_equals_folding_series_by_series(seed, monkeypatch):
    rng = random.Random(seed)
    repeat_rng = random.Random(1000 + seed)  # its own: the other changes' draws stay as they were
    folds = _FastFolds(monkeypatch)
    records = scrape_records(nodes=2, minutes=14, seed=seed, version=("1.25", "1.28", "1.33")[seed % 3])
    value_changes, shape_changes = _value_changes(), _shape_changes()
    fast: dict[str, dict] = {}
    reference: dict[str, dict] = {}
    shape_change, shape_left = None, 0  # a skeleton change lasts a few scrapes (its shape gets known)
    shaped = 0
    last_values: dict[str, dict] = {}  # node -> {(name, labels): value} of its last scrape
    for record in records:
        obj = orjson.loads(record.encode())
        if shape_left == 0 and rng.random() < 0.08:
            shape_change, shape_left = rng.choice(sorted(shape_changes)), rng.randint(1, 6)
        if shape_left:
            shape_changes[shape_change](obj, rng)
            shape_left -= 1
        roll = rng.random()
        if roll < 0.3:
            value_changes[rng.choice(sorted(value_changes))](obj, rng)
        elif roll < 0.33:
            _down(obj, rng)
        elif roll < 0.35:
            _no_kube_proxy_metrics(obj, rng)
        elif repeat_rng.random() < 0.3:  # no new observation: zero deltas (histograms, or every series)
            hists = ("_bucket", "_count", "_sum")
            kinds = repeat_rng.choice([hists, (*hists, "counter", "gauge")])
            _repeat_last(obj, last_values.get(obj["node"], {}), kinds)
        last_values[obj["node"]] = {_row_key(row): row[2] for row in obj["samples"]}
        decoded = decode_scrape(orjson.dumps(obj))
        shaped += decoded.shape is not None
        node = decoded.node
        if node not in fast:
            fast[node] = node_state.new_state(decoded)
            reference[node] = node_state.new_state(decoded.record)
        elif rng.random() < 0.1:  # restored from the changelog
            fast[node] = orjson.loads(orjson.dumps(fast[node]))
            reference[node] = orjson.loads(orjson.dumps(reference[node]))
        node_state.apply_decoded(fast[node], decoded, S)
        node_state.apply_scrape(reference[node], decoded.record, S)
        _same(fast[node], reference[node])
    assert shaped > len(records) * 0.7
    assert min(folds.applied.values()) > len(records) * 0.3 and min(folds.declined.values()) > 5
    assert min(folds.in_place.values()) > 5, folds.in_place


def test_inlined_gauge_stats_equal_gauge_stats_push():
    """_fold_gauges_fast against GaugeStats.push for windows that are empty, complete, miss a
    series, or hold a min or max that is not finite, and values finite or not."""
    series = ["a|{}", "b|{}", "c|{}"]
    starts = [{}, {"a|{}": [1.0, 0.5, 2.0], "b|{}": [3.0, 3.0, 3.0], "c|{}": [0.0, -1.0, 1.0]},
              {"a|{}": [1.0, 0.5, 2.0]}, {"a|{}": ["NaN", "NaN", "NaN"], "b|{}": [1.0, "+Inf", 2.0],
                                            "c|{}": [1.0, 1.0, "-Inf"]},
              {"c|{}": [0.0, 0.0, 0.0], "b|{}": [0.0, 0.0, 0.0], "a|{}": [0.0, 0.0, 0.0]}]
    for values in ([0.75, 3.0, -0.0], [0.0, 0.0, 0.0], [float("nan"), 1.0, 2.0], [float("inf"), 1.0, 2.0],
                   [1e308, 1e308, 1e308]):
        for start in starts:
            fast = [{"g": copy.deepcopy(start)}, {"g": copy.deepcopy(start)}]
            reference = copy.deepcopy(fast)
            node_state._fold_gauges_fast(fast, series, values)
            node_state._fold_gauges(reference, dict(zip(series, values)))
            _same(fast, reference)


def test_add_in_place_equals_histogram_push():
    """node_state.add_in_place against HistogramDeltas.push over windows of the same layout,
    another order, fewer or more bounds, JSON string or infinite sums, an int count, NaN or
    huge buckets, and deltas that are zero (+0.0, -0.0, ints), some zero, NaN or overflowing:
    where it declines, the window is left as it was (the fold then pushes)."""
    from streams.aggregators import HistogramDeltas

    keys = ["0.1", "1.0", "+Inf"]
    windows = [
        [{"0.1": 1.0, "1.0": 2.0, "+Inf": 3.0}, 3.0, 1.5],
        [{"0.1": 0.0, "1.0": 0.0, "+Inf": 0.0}, 0.0, 0.0],
        [{"1.0": 2.0, "0.1": 1.0, "+Inf": 3.0}, 3.0, 1.5],  # another order
        [{"0.1": 1.0, "+Inf": 3.0}, 3.0, 1.5],  # a bound missing
        [{"0.1": 1.0, "0.5": 1.5, "1.0": 2.0, "+Inf": 3.0}, 3.0, 1.5],  # one more
        [{"0.1": 1.0, "1.0": 2.0, "+Inf": 3.0}, 3.0, "NaN"],
        [{"0.1": 1.0, "1.0": 2.0, "+Inf": 3.0}, 3.0, "+Inf"],
        [{"0.1": 1.0, "1.0": 2.0, "+Inf": 3.0}, 3.0, float("inf")],
        [{"0.1": 1.0, "1.0": 2.0, "+Inf": 3.0}, 3.0, float("nan")],
        [{"0.1": 1.0, "1.0": 2.0, "+Inf": 3.0}, 3, 1.5],  # an int count
        [{"0.1": float("nan"), "1.0": 1e308, "+Inf": 1e308}, 3.0, 1e308],
        [{}, 0.0, 0.0],
    ]
    steps = [  # (bucket deltas, count delta, sum delta)
        ([0.0, 0.0, 0.0], 0.0, 0.0),
        ([-0.0, 0.0, -0.0], -0.0, -0.0),
        ([0, 0, 0], 0, 0),
        ([0.0, 1.0, 2.0], 2.0, 0.75),
        ([1.0, 1.0, 1.0], 1.0, -0.25),
        ([0.0, 0.0, 0.0], 0.0, 1e308),
        ([0.0, float("nan"), 1.0], 1.0, float("nan")),
        ([0.0, 1e308, 1e308], 1e308, 0.0),
        ([0.0, 0.0, float("inf")], float("inf"), 0.0),
    ]
    outcomes = set()
    for window in windows:
        for deltas, count, total in steps:
            zero = not (count or total or any(deltas))
            fast, reference = copy.deepcopy(window), copy.deepcopy(window)
            done = node_state.add_in_place(fast, keys, deltas, count, total, zero)
            if not done:
                _same(fast, window)  # declined: nothing changed
                HistogramDeltas.push(fast, keys, deltas, count, total)
            HistogramDeltas.push(reference, keys, deltas, count, total)
            _same(fast, reference)
            outcomes.add((done, zero))
    assert outcomes == {(True, True), (True, False), (False, True), (False, False)}


def test_sync_health_by_plan_equals_sync_health():
    """The ingest plan's sync_health (gauges by index, names split once) against sync_health
    over the gauges as a dict: syncs and queued changes of several label sets, other gauges,
    values that are NaN or infinite, queued after or before the sync, none at all."""
    sync, queued = f"{node_state.LAST_SYNC}|", f"{node_state.LAST_QUEUED}|"
    series = [sync + "{}", queued + "{}", "other_gauge|{}", sync + '{"a":"1"}', queued + '{"a":"1"}',
              queued + '{"b":"2"}', node_state.LAST_SYNC + "_extra|{}"]
    plan = node_state._Plan([], {}, [], list(zip(series, range(len(series)))), [])
    ingest = node_state._Ingest(plan)
    rng = random.Random(3)
    outcomes = set()
    choices = [1700000000.0, 1700000010.5, 1699999990.25, 5.0, float("nan"), float("inf"), -float("inf")]
    for _ in range(500):
        values = [rng.choice(choices) for _ in series]
        for kept in (series, series[1:], series[2:3], []):
            ts_ms = rng.choice([1700000015000, 1700000001234])
            gauges = {s: values[i] for i, s in enumerate(series) if s in kept}
            keep = [s in kept for s in series]
            plan = node_state._Plan([], {}, [], [(s, i) for i, s in enumerate(series) if keep[i]], [])
            fast = node_state._sync_health_fast(node_state._Ingest(plan).sync, values, ts_ms)
            assert repr(fast) == repr(node_state.sync_health(gauges, ts_ms))
            outcomes.add("none" if fast[0] is None else "stalled" if fast[1] else "synced")
    assert outcomes == {"none", "stalled", "synced"}
    assert [labels for _, labels, _ in ingest.sync] == ["{}", "{}", '{"a":"1"}', '{"a":"1"}', '{"b":"2"}']
