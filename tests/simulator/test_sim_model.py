"""The pure model: what it means to serve parses back identically, evolves consistently,
deterministically, and reacts to model-level faults."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from simhelpers import START, flat_expected, parsed_samples, sample_map
from simulator.catalogue import VERSIONS
from simulator.model import Cluster, SimConfig
from simulator.promtext import render_families

LAST = "kubeproxy_sync_proxy_rules_last_timestamp_seconds"
QUEUED = "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds"
SYNC_COUNT = "kubeproxy_sync_proxy_rules_duration_seconds_count"
EP_TOTAL = "kubeproxy_sync_proxy_rules_endpoint_changes_total"
NETPROG_COUNT = "kubeproxy_network_programming_duration_seconds_count"


def counter_like(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample that must never decrease: counters and histogram buckets/sum/count."""
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.type in ("counter", "histogram", "summary"):
            for s in fam.samples:
                if fam.type == "summary" and "quantile" in s.labels:
                    continue
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str) -> float:
    """The single sample called `name` (whatever its labels)."""
    matches = [v for (n, _), v in sample_map(text).items() if n == name]
    assert len(matches) == 1, (name, matches)
    return matches[0]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("offset", [0.0, 7.3, 3600.0])
def test_rendered_text_parses_to_exactly_the_expected_samples(version: str, offset: float) -> None:
    cluster = Cluster(nodes=3, seed=5, version=version, start=START)
    for node in cluster.node_names:
        text = cluster.render(node, START + offset)
        expected = flat_expected(cluster.expected_samples(node, START + offset))
        assert parsed_samples(text) == expected
        fams = {f.name: f for f in cluster.families(node, START + offset)}
        for parsed in text_string_to_metric_families(text):
            # prometheus_client drops a counter's `_total` suffix from the family name.
            name = parsed.name + "_total" if parsed.type == "counter" else parsed.name
            assert (parsed.type, parsed.documentation) == (fams[name].type, fams[name].help)


@pytest.mark.parametrize("version", VERSIONS)
def test_counters_and_histograms_never_decrease_without_restart(version: str) -> None:
    cluster = Cluster(nodes=2, seed=9, version=version, start=START,
                      config=SimConfig(restore_failure_prob=0.05))
    for node in cluster.node_names:
        initial = previous = counter_like(cluster.render(node, START))
        t = START
        for step in range(120):
            t += 0.5 + (step % 37)  # uneven scrape cadence
            current = counter_like(cluster.render(node, t))
            for key, old in previous.items():
                assert current[key] >= old, (key, old, current[key], t)
            previous = current
        assert previous[(EP_TOTAL, ())] > initial[(EP_TOTAL, ())]
        assert previous[(SYNC_COUNT, tuple(sorted(k for k in _family_labels(version))))] > 100


def _family_labels(version: str) -> tuple[tuple[str, str], ...]:
    return (("ip_family", "IPv4"),) if version == "1.33" else ()


@pytest.mark.parametrize("version", VERSIONS)
def test_histograms_are_cumulative_count_is_inf_and_sum_fits_buckets(version: str) -> None:
    cluster = Cluster(nodes=2, seed=2, version=version, start=START)
    text = cluster.render("node-001", START + 7200)
    histograms = 0
    for fam in text_string_to_metric_families(text):
        if fam.type != "histogram":
            continue
        series: dict[tuple, dict[str, object]] = {}
        for s in fam.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            entry = series.setdefault(key, {"buckets": []})
            if s.name.endswith("_bucket"):
                entry["buckets"].append((float(s.labels["le"]), s.value))  # type: ignore[union-attr]
            else:
                entry[s.name.rsplit("_", 1)[1]] = s.value
        for key, entry in series.items():
            buckets = entry["buckets"]
            assert isinstance(buckets, list)
            bounds = [b for b, _ in buckets]
            counts = [c for _, c in buckets]
            assert bounds == sorted(bounds) and math.isinf(bounds[-1]), (fam.name, key)
            assert counts == sorted(counts), (fam.name, key)  # cumulative
            assert entry["count"] == counts[-1], (fam.name, key)
            low = high = 0.0
            previous_bound, previous_count = 0.0, 0.0
            for bound, count in buckets:
                n = count - previous_count
                low += n * previous_bound
                high += n * bound if not math.isinf(bound) else (math.inf if n else 0.0)
                previous_bound, previous_count = bound, count
            total = entry["sum"]
            assert isinstance(total, float)
            assert low - 1e-9 <= total <= high + 1e-9, (fam.name, key, low, total, high)
            histograms += 1
    assert histograms >= 3


def test_same_seed_same_bytes_regardless_of_scrape_cadence() -> None:
    a = Cluster(nodes=3, seed=42, version="1.28", start=START)
    b = Cluster(nodes=3, seed=42, version="1.28", start=START)
    for t in range(0, 600, 7):  # b is scraped often, a only at the compared times
        b.render("node-002", START + t)
    for t in (600.0, 1234.5, 5000.0):
        for node in a.node_names:
            assert a.render(node, START + t) == b.render(node, START + t)


def test_different_seed_or_node_gives_different_output() -> None:
    a = Cluster(nodes=2, seed=1, start=START)
    b = Cluster(nodes=2, seed=2, start=START)
    assert a.render("node-000", START + 300) != b.render("node-000", START + 300)
    assert a.render("node-000", START + 300) != a.render("node-001", START + 300)


def test_fault_history_is_part_of_the_input() -> None:
    def run() -> str:
        c = Cluster(nodes=2, seed=8, start=START)
        c.set_fault("node-001", "stalled", at=START + 100)
        c.set_fault("node-001", "none", at=START + 200)
        c.set_fault("node-001", "restart", at=START + 300)
        return c.render("node-001", START + 400)
    assert run() == run()


def test_restart_resets_counters_and_moves_process_start() -> None:
    cluster = Cluster(nodes=1, seed=4, version="1.28", start=START)
    before = cluster.render("node-000", START + 600)
    assert value(before, EP_TOTAL) > 0 and value(before, SYNC_COUNT) > 0
    cluster.set_fault("node-000", "restart", at=START + 600)
    assert cluster.fault("node-000") == "none"  # one-shot
    just_after = cluster.render("node-000", START + 600)
    assert value(just_after, EP_TOTAL) == 0
    assert value(just_after, SYNC_COUNT) == 0
    assert value(just_after, "kubeproxy_network_programming_duration_seconds_sum") == 0
    assert value(just_after, "process_start_time_seconds") == pytest.approx(START + 600, abs=0.01)
    assert value(before, "process_start_time_seconds") < START
    later = cluster.render("node-000", START + 900)
    assert value(later, SYNC_COUNT) > 0 and value(later, EP_TOTAL) > 0
    assert value(later, SYNC_COUNT) < value(before, SYNC_COUNT) + 1e9  # sane
    assert cluster.model("node-000").restarts == [START + 600]


def test_stalled_freezes_last_timestamp_while_queued_advances() -> None:
    cluster = Cluster(nodes=1, seed=6, start=START)
    cluster.set_fault("node-000", "stalled", at=START + 60)
    first = cluster.render("node-000", START + 70)
    second = cluster.render("node-000", START + 400)
    assert value(first, LAST) == value(second, LAST) <= START + 60
    assert value(second, QUEUED) > value(first, QUEUED) >= START + 60
    assert value(second, SYNC_COUNT) == value(first, SYNC_COUNT)
    assert value(second, "kubeproxy_sync_proxy_rules_endpoint_changes_pending") > 0
    cluster.set_fault("node-000", "none", at=START + 400)
    healed = cluster.render("node-000", START + 420)
    assert value(healed, LAST) > START + 400
    assert value(healed, SYNC_COUNT) > value(second, SYNC_COUNT)
    assert value(healed, "kubeproxy_sync_proxy_rules_endpoint_changes_pending") == 0


def test_missing_families_serves_only_runtime_families() -> None:
    cluster = Cluster(nodes=1, seed=6, start=START, faults={"node-000": "missing-families"})
    names = {n for n, _, _ in parsed_samples(cluster.render("node-000", START + 60))}
    assert names and not any(n.startswith("kubeproxy_") for n in names)
    assert "process_start_time_seconds" in names


def test_malformed_body_is_rejected_by_prometheus_client() -> None:
    cluster = Cluster(nodes=1, seed=6, start=START, faults={"all": "malformed"})
    body = cluster.render("node-000", START + 60)
    with pytest.raises(Exception):
        list(text_string_to_metric_families(body))
    # ...while the families it meant to serve are fine
    list(text_string_to_metric_families(render_families(cluster.families("node-000",
                                                                          START + 60))))


def test_sync_interval_and_latency_distribution_are_honoured() -> None:
    config = SimConfig(sync_interval=2.0, sync_jitter=0.0, sync_latency_median=0.3,
                       sync_latency_sigma=0.0, uptime_at_start_max=0.0)
    cluster = Cluster(nodes=1, seed=1, start=START, config=config)
    a = cluster.render("node-000", START + 100)
    b = cluster.render("node-000", START + 300)
    assert value(b, SYNC_COUNT) - value(a, SYNC_COUNT) == 100  # one sync every 2 s
    buckets = {dict(labels)["le"]: v for (n, labels), v in sample_map(b).items()
               if n == "kubeproxy_sync_proxy_rules_duration_seconds_bucket"}
    assert buckets["0.256"] == 0 and buckets["0.512"] == value(b, SYNC_COUNT)
    assert value(b, "kubeproxy_sync_proxy_rules_duration_seconds_sum") == pytest.approx(
        0.3 * value(b, SYNC_COUNT))


def test_one_network_programming_observation_per_endpoint_change() -> None:
    config = SimConfig(restore_failure_prob=0.0, partial_restore_failure_prob=0.0,
                       endpoint_change_rate=3.0)
    cluster = Cluster(nodes=1, seed=3, start=START, config=config)
    a = cluster.render("node-000", START + 10)
    b = cluster.render("node-000", START + 1000)
    assert value(b, NETPROG_COUNT) - value(a, NETPROG_COUNT) == value(b, EP_TOTAL) - value(
        a, EP_TOTAL) > 100


def test_restore_failures_follow_the_configured_probability() -> None:
    never = Cluster(nodes=1, seed=3, start=START,
                    config=SimConfig(restore_failure_prob=0.0)).render("node-000", START + 3600)
    often = Cluster(nodes=1, seed=3, start=START,
                    config=SimConfig(restore_failure_prob=0.5)).render("node-000", START + 3600)
    failures = "kubeproxy_sync_proxy_rules_iptables_restore_failures_total"
    assert value(never, failures) == 0
    assert 0.3 * value(often, SYNC_COUNT) < value(often, failures) < 0.7 * value(often, SYNC_COUNT)


def test_unknown_node_and_bad_config_are_rejected() -> None:
    with pytest.raises(KeyError):
        Cluster(nodes=2, start=START, faults={"node-007": "slow"})
    with pytest.raises(ValueError):
        Cluster(nodes=1, start=START, config=SimConfig(sync_interval=0))
    with pytest.raises(ValueError):
        Cluster(nodes=1, start=START, version="1.99")
    with pytest.raises(ValueError):
        Cluster(nodes=1, start=START).set_fault("node-000", "explode", at=START)
