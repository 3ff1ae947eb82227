"""A hypothesis strategy: JSON objects shaped like derived records, mostly well-formed, sometimes
odd (a wrong type, a missing field, an unknown schema), for the equivalence tests of the fast
checks (tests/contracts/test_derived_fast.py, tests/sinks/test_fastpath.py)."""

from __future__ import annotations

from hypothesis import strategies as st

from contracts.derived import KINDS, schema_name

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
odd = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
                text, st.lists(st.integers(-9, 9), max_size=2), st.dictionaries(text, st.integers(-9, 9), max_size=2))
number = st.one_of(st.floats(allow_nan=False), st.integers(-(2**63), 2**64 - 1),
                   st.sampled_from(["NaN", "+Inf", "-Inf", "Inf"]))
good_value = st.one_of(number, st.none())
value = st.one_of(number, st.none(), odd)
key = st.one_of(st.sampled_from(["p50", "p99", "count", "mean", "rate", "ratio", "x:y", "", "1a"]), text)


@st.composite
def derived_json(draw) -> dict:  # noqa: ANN001
    rnd = draw(st.randoms(use_true_random=True))

    def rarely() -> bool:
        return rnd.random() < 0.04

    def maybe_odd(good):  # noqa: ANN001, ANN202
        return draw(odd) if rarely() else draw(good)

    scope = "pod" if rarely() else draw(st.sampled_from(["node", "cluster"]))
    node = draw(text) if (scope == "node") != rarely() else None
    start = draw(st.integers(0, 2_000_000_000_000))
    obj = {
        "schema": "kube-proxy.nope/v1" if rarely() else maybe_odd(st.sampled_from([schema_name(k) for k in KINDS])),
        "scope": maybe_odd(st.just(scope)),
        "cluster": maybe_odd(text),
        "node": maybe_odd(st.just(node)),
        "window": maybe_odd(st.just({
            "start_ms": maybe_odd(st.just(start)),
            "end_ms": maybe_odd(st.integers(start - 1000, start + 3_600_000)),
            "size_s": draw(st.integers(0, 3600))})),
        "metric": maybe_odd(text),
        "labels": maybe_odd(st.dictionaries(text, odd if rarely() else text, max_size=3)),
        "values": maybe_odd(st.dictionaries(key, value if rarely() else good_value, max_size=5)),
        "contributors": maybe_odd(st.dictionaries(text, st.integers(0, 9), max_size=2)),
    }
    if rarely():
        del obj[draw(st.sampled_from(sorted(obj)))]
    return obj


