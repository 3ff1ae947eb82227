"""bench/peer_quixstreams.py's pure parts: deltas with Prometheus' reset rule, the window sum,
and a quantile interpolation equal to ours (streams.quantiles)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.peer_quixstreams import add_deltas, first_deltas, histogram_quantile, scrape_deltas
from streams.quantiles import histogram_quantile as ours

FAMILY = "kubeproxy_sync_proxy_rules_duration_seconds"


class DictState:
    def __init__(self) -> None:
        self.data: dict = {}

    def get(self, key, default=None):
        return self.data.get(key, default)

    def set(self, key, value) -> None:
        self.data[key] = value


def scrape(counter: float, buckets: dict[str, float], up: bool = True) -> dict:
    samples = [["kubeproxy_proxy_healthz_total", {"code": "200"}, counter, None],
               ["kubeproxy_sync_proxy_rules_endpoint_changes_pending", {}, 7.0, None]]
    samples += [[FAMILY + "_bucket", {"le": le}, v, None] for le, v in buckets.items()]
    samples += [[FAMILY + "_count", {}, buckets["+Inf"], None], [FAMILY + "_sum", {}, buckets["+Inf"] / 10, None]]
    return {"up": up, "kube_proxy_metrics": up, "samples": samples,
            "families": {"kubeproxy_proxy_healthz_total": "counter", FAMILY: "histogram",
                         "kubeproxy_sync_proxy_rules_endpoint_changes_pending": "gauge"}}


def test_deltas_first_scrape_increase_reset_and_failed_scrape() -> None:
    state = DictState()
    first = scrape_deltas(scrape(10.0, {"0.1": 1.0, "+Inf": 2.0}), state)
    assert first["c"] == {"kubeproxy_proxy_healthz_total|code=200": 0.0}
    assert first["h"][FAMILY + "|"] == [{"0.1": 0.0, "+Inf": 0.0}, 0.0, 0.0]
    step = scrape_deltas(scrape(15.0, {"0.1": 3.0, "+Inf": 5.0}), state)
    assert step["c"] == {"kubeproxy_proxy_healthz_total|code=200": 5.0}
    assert step["h"][FAMILY + "|"][:2] == [{"0.1": 2.0, "+Inf": 3.0}, 3.0]
    assert scrape_deltas(scrape(99.0, {"0.1": 0.0, "+Inf": 0.0}, up=False), state) == {"c": {}, "h": {}}
    reset = scrape_deltas(scrape(4.0, {"0.1": 1.0, "+Inf": 1.0}), state)  # the process restarted
    assert reset["c"] == {"kubeproxy_proxy_healthz_total|code=200": 4.0}
    assert reset["h"][FAMILY + "|"][:2] == [{"0.1": 1.0, "+Inf": 1.0}, 1.0]


def test_window_sums_deltas() -> None:
    a = {"c": {"x|": 1.0}, "h": {FAMILY + "|": [{"1": 1.0, "+Inf": 2.0}, 2.0, 0.5]}}
    b = {"c": {"x|": 2.0, "y|": 1.0}, "h": {FAMILY + "|": [{"1": 0.0, "+Inf": 1.0}, 1.0, 0.25]}}
    window = add_deltas(first_deltas(a), b)
    assert window == {"c": {"x|": 3.0, "y|": 1.0}, "h": {FAMILY + "|": [{"1": 1.0, "+Inf": 3.0}, 3.0, 0.75]}}
    assert a["h"][FAMILY + "|"][0] == {"1": 1.0, "+Inf": 2.0}  # the input is not modified


BOUNDS = ["0", "0.25", "0.5", "1", "2", "5", "10", "+Inf"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=len(BOUNDS), max_size=len(BOUNDS)),
       st.sampled_from([0.5, 0.9, 0.99]))
def test_quantile_equals_ours(increments: list[int], q: float) -> None:
    counts, total = {}, 0.0
    for le, inc in zip(BOUNDS, increments):
        total += inc
        counts[le] = total
    expected = ours(q, [(float(le), c) for le, c in counts.items()])
    got = histogram_quantile(q, counts)
    assert (got is None and math.isnan(expected)) or got == expected
