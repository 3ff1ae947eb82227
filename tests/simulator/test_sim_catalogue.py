"""Families, HELP/TYPE lines, label names and bucket layouts match the real captures."""

from __future__ import annotations

import pytest

from simhelpers import START, capture_text, header_lines, parsed_samples
from simulator.catalogue import NETWORK_PROGRAMMING_BUCKETS, SYNC_BUCKETS
from simulator.model import Cluster, SimConfig

CAPTURED = ("1.25", "1.28")
AT = START + 900.0  # long enough for every family to have been touched


def served_text(version: str, *, probes: bool = False, seed: int = 3) -> str:
    config = SimConfig(healthz_probe_interval=10.0 if probes else 0.0)
    return Cluster(nodes=1, seed=seed, version=version, start=START,
                   config=config).render("node-000", AT)


def kubeproxy_headers(text: str) -> dict[str, tuple[str, str]]:
    return {k: v for k, v in header_lines(text).items() if k.startswith("kubeproxy_")}


def bucket_les(text: str, family: str) -> list[str]:
    """le values of one histogram's first series, in the order written."""
    out: list[str] = []
    for name, labels, _ in parsed_samples(text):
        if name == f"{family}_bucket":
            le = dict(labels)["le"]
            if out and le == out[0]:
                break
            out.append(le)
    return out


def label_names(text: str, prefix: str = "kubeproxy_") -> dict[str, set[frozenset[str]]]:
    out: dict[str, set[frozenset[str]]] = {}
    for name, labels, _ in parsed_samples(text):
        if name.startswith(prefix):
            out.setdefault(name, set()).add(frozenset(k for k, _ in labels))
    return out


@pytest.mark.parametrize("version", CAPTURED)
def test_kubeproxy_family_set_equals_the_capture(version: str) -> None:
    assert set(kubeproxy_headers(served_text(version))) == set(
        kubeproxy_headers(capture_text(version)))


@pytest.mark.parametrize("version", CAPTURED)
def test_kubeproxy_help_and_type_lines_equal_the_capture(version: str) -> None:
    assert kubeproxy_headers(served_text(version)) == kubeproxy_headers(capture_text(version))


@pytest.mark.parametrize("version", CAPTURED)
def test_bucket_layouts_equal_the_capture(version: str) -> None:
    served, captured = served_text(version), capture_text(version)
    histograms = [n for n, (_, t) in kubeproxy_headers(captured).items() if t.endswith("histogram")]
    assert "kubeproxy_sync_proxy_rules_duration_seconds" in histograms
    for family in histograms:
        assert bucket_les(served, family) == bucket_les(captured, family), family


@pytest.mark.parametrize("version", CAPTURED)
def test_label_names_of_every_kubeproxy_series_equal_the_capture(version: str) -> None:
    assert label_names(served_text(version)) == label_names(capture_text(version))


@pytest.mark.parametrize("version", CAPTURED)
def test_runtime_families_are_shaped_like_the_capture(version: str) -> None:
    """The non-kubeproxy families the producer must filter out: each one we serve exists in the
    capture with the same HELP/TYPE and label names."""
    served, captured = served_text(version), capture_text(version)
    ours = {k: v for k, v in header_lines(served).items() if not k.startswith("kubeproxy_")}
    theirs = header_lines(captured)
    assert {"process_start_time_seconds", "go_goroutines", "rest_client_requests_total",
            "kubernetes_build_info"} <= set(ours)
    for family, lines in ours.items():
        assert theirs.get(family) == lines, family
    served_labels, captured_labels = label_names(served, ""), label_names(captured, "")
    for name, sets in served_labels.items():
        if not name.startswith("kubeproxy_"):
            assert sets <= captured_labels[name], name


def test_healthz_families_appear_once_probed() -> None:
    probed = set(kubeproxy_headers(served_text("1.28", probes=True)))
    assert probed - set(kubeproxy_headers(capture_text("1.28"))) == {
        "kubeproxy_proxy_healthz_total", "kubeproxy_proxy_livez_total"}
    assert "kubeproxy_proxy_healthz_total" not in kubeproxy_headers(served_text("1.25",
                                                                                probes=True))


def test_bucket_constants() -> None:
    assert SYNC_BUCKETS == tuple(0.001 * 2**k for k in range(15))
    assert len(NETWORK_PROGRAMMING_BUCKETS) == 81
    assert NETWORK_PROGRAMMING_BUCKETS[:4] == (0.0, 0.25, 0.5, 1.0)
    assert NETWORK_PROGRAMMING_BUCKETS[-8:] == (115.0, 120.0, 150.0, 180.0, 210.0, 240.0,
                                                270.0, 300.0)


def test_133_carries_ip_family_and_conntrack_histogram() -> None:
    text = served_text("1.33", probes=True)
    names = label_names(text)
    without_family = {
        "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
        "kubeproxy_sync_proxy_rules_endpoint_changes_total",
        "kubeproxy_sync_proxy_rules_service_changes_pending",
        "kubeproxy_sync_proxy_rules_service_changes_total",
        "kubeproxy_proxy_healthz_total", "kubeproxy_proxy_livez_total",
        "kubeproxy_iptables_ct_state_invalid_dropped_packets_total",
        "kubeproxy_iptables_localhost_nodeports_accepted_packets_total",
    }
    assert "kubeproxy_conntrack_reconciler_sync_duration_seconds_bucket" in names
    assert bucket_les(text, "kubeproxy_conntrack_reconciler_sync_duration_seconds")[-1] == "+Inf"
    for name, sets in names.items():
        carries = all("ip_family" in s for s in sets)
        assert carries == (name not in without_family), name
    for name, labels, _ in parsed_samples(text):
        if "ip_family" in dict(labels):
            assert dict(labels)["ip_family"] == "IPv4"
    assert 'git_version="v1.33.0"' in text


def test_133_vectors_appear_only_once_observed() -> None:
    """Before the first sync, a 1.33 node has no ip_family series at all."""
    cluster = Cluster(nodes=1, seed=1, version="1.33", start=START,
                      config=SimConfig(uptime_at_start_max=0.0, healthz_probe_interval=0.0))
    before = label_names(cluster.render("node-000", START))
    assert not any("ip_family" in s for sets in before.values() for s in sets)
    after = label_names(cluster.render("node-000", START + 30))
    assert "kubeproxy_sync_proxy_rules_duration_seconds_count" in after
