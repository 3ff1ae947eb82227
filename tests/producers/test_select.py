from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.errors import ConfigError
from producers.node import NodeSettings, build_record, next_tick
from producers.parser import parse_families
from producers.scrape import ScrapeOutcome
from producers.select import Selector, SelectionRules, parse_label_pairs
from tests.conftest import FIXTURES

CAPTURES = ["v1.25.3-iptables.txt", "v1.28.0-iptables.txt"]


def reference_kubeproxy_samples(text: str) -> list[tuple]:
    """What prometheus_client sees of the kubeproxy_* families, flattened."""
    out = []
    for family in text_string_to_metric_families(text):
        if family.name.startswith("kubeproxy_"):
            for s in family.samples:
                out.append((s.name, tuple(sorted(s.labels.items())), s.value))
    return out


@pytest.mark.parametrize("capture", CAPTURES)
def test_default_selection_is_every_kubeproxy_sample_and_nothing_else(capture: str) -> None:
    text = (FIXTURES / capture).read_text()
    selection = Selector().select(parse_families(text))
    ours = [(s.name, tuple(sorted(s.labels.items())), s.value) for s in selection.samples]
    assert ours == reference_kubeproxy_samples(text)
    assert selection.kube_proxy_metrics
    assert all(f.startswith("kubeproxy_") for f in selection.families)
    assert selection.families["kubeproxy_sync_proxy_rules_duration_seconds"] == "histogram"
    assert selection.families["kubeproxy_sync_proxy_rules_no_local_endpoints_total"] == "gauge"


def test_userspace_capture_has_no_kube_proxy_metrics() -> None:
    selection = Selector().select(parse_families((FIXTURES / "v1.21.1-userspace.txt").read_text()))
    assert selection.samples == () and selection.families == {}
    assert selection.kube_proxy_metrics is False


def test_filters_types_and_relabelling() -> None:
    text = (FIXTURES / "v1.28.0-iptables.txt").read_text()
    rules = SelectionRules(deny_families=(r"network_programming",), types=frozenset({"histogram", "counter"}),
                           drop_labels=frozenset({"table"}), rename_labels={"le": "bound"})
    selection = Selector(rules).select(parse_families(text))
    assert "kubeproxy_network_programming_duration_seconds" not in selection.families
    assert set(selection.families.values()) <= {"histogram", "counter"}
    buckets = [s for s in selection.samples if s.name.endswith("_bucket")]
    assert buckets and all("bound" in s.labels and "le" not in s.labels for s in buckets)
    # Allow something outside kube-proxy explicitly.
    go = Selector(SelectionRules(allow_families=(r"^go_goroutines$",))).select(parse_families(text))
    assert list(go.families) == ["go_goroutines"] and len(go.samples) == 1
    assert go.kube_proxy_metrics  # the target still serves kube-proxy families


@pytest.mark.parametrize(
    "rules, message",
    [
        (dict(allow_families=("([",)), "not a valid regular expression"),
        (dict(types=frozenset({"histogramm"})), "unknown metric type"),
        (dict(rename_labels={"a": "__b"}), "not a valid label name"),
    ],
)
def test_bad_rules_are_config_errors(rules, message) -> None:
    with pytest.raises(ConfigError, match=message):
        SelectionRules(**rules)


def test_label_pairs() -> None:
    assert parse_label_pairs(["a=b", "c = d=e"], "--label") == {"a": "b", "c": "d=e"}
    with pytest.raises(ConfigError, match="'nope' is not NAME=VALUE"):
        parse_label_pairs(["nope"], "--label")


NODE = NodeSettings(node="node-007", cluster="prod", labels={"env": "test"})


def test_build_record_ok_parse_error_and_down() -> None:
    text = (FIXTURES / "v1.28.0-iptables.txt").read_text()
    ok, reason = build_record(NODE, "http://t/metrics", 15_000, ScrapeOutcome(text, 0.01, len(text), "ok"), Selector())
    assert reason == "ok" and ok.up == 1 and ok.error is None
    assert len(ok.samples) == len(reference_kubeproxy_samples(text))
    assert ok.labels == {"env": "test"} and ok.key == b"node-007"

    broken = text.replace("kubeproxy_sync_proxy_rules_iptables_total{table=\"filter\"}",
                          "kubeproxy_sync_proxy_rules_iptables_total{table=filter}", 1)
    bad, reason = build_record(NODE, "http://t/metrics", 15_000, ScrapeOutcome(broken, 0.01, 10, "ok"), Selector())
    assert reason == "parse" and bad.up == 0 and bad.samples == ()
    line = next(i for i, l in enumerate(broken.splitlines(), 1) if "{table=filter}" in l)
    assert f"line {line}:" in bad.error

    down, reason = build_record(NODE, "http://t/metrics", 15_000,
                                ScrapeOutcome(None, 10.0, 0, "timeout", "no complete answer"), Selector())
    assert reason == "timeout" and down.up == 0 and down.error == "no complete answer"


@pytest.mark.parametrize("now, interval, expected", [(0.0, 15, 15.0), (14.999, 15, 15.0), (15.0, 15, 30.0),
                                                     (1_700_000_007.5, 5, 1_700_000_010.0), (3.2, 0.5, 3.5)])
def test_next_tick_is_aligned(now: float, interval: float, expected: float) -> None:
    tick = next_tick(now, interval)
    assert tick == pytest.approx(expected) and tick > now
    assert math.isclose(tick / interval, round(tick / interval))
