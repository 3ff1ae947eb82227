"""docs/metrics.md and docs/runbook.md against the code: every kube-proxy family the simulator
knows (all versions) and every value the stream stage emits is documented; the runbook has one
section per alert and no other."""

from __future__ import annotations

import re

from simulator.catalogue import VERSIONS, kubeproxy_families
from tests.deploy.pipeline_data import SCENARIOS, derived_records, scrape_records
from tests.deploy.promql import REPO, RUNBOOK, RUNBOOK_BASE, alert_names, markdown_anchors, rules, runbook_url

METRICS = REPO / "docs" / "metrics.md"


def test_every_kube_proxy_family_is_documented() -> None:
    text = METRICS.read_text()
    families = {spec.name for v in VERSIONS for spec in kubeproxy_families(v)}
    families |= {"kubeproxy_sync_proxy_rules_latency_microseconds", "kubeproxy_sync_proxy_rules_nftables_sync_failures_total",
                 "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total"}
    for family in sorted(families):
        assert f"`{family.removeprefix('kubeproxy_')}`" in text, family


def test_every_derived_value_is_documented() -> None:
    text = METRICS.read_text()
    derived = derived_records(scrape_records(SCENARIOS["healthy-133"], "docs", 1_700_000_100 - 100, 8))
    values: dict[str, set[str]] = {}
    for record in derived:
        values.setdefault(record.kind, set()).update(record.values)
    for kind in ("health", "slo"):
        for key in sorted(values[kind]):
            assert re.search(rf"`{key}`|\b{key}\b", text), (kind, key)
    for key in values["quantiles"] | values["rates"] | values["gauges"]:
        assert f":{key}`" in text or f"{key}," in text or f",{key}" in text, key
    metrics = {r.metric for r in derived if r.kind != "health"}
    for metric in sorted(metrics):
        assert metric in text, metric


def test_runbook_has_one_section_per_alert() -> None:
    sections = re.findall(r"^## (\w+)\s*$", RUNBOOK.read_text(), re.M)
    assert sorted(sections) == sorted(alert_names())


def test_every_alert_has_severity_summary_and_an_absolute_runbook_link_that_resolves() -> None:
    """Every alert of every rule file: its runbook_url is the project's runbook (absolute, so a
    notification links somewhere; the chart swaps the base) and its anchor is the alert's own
    section."""
    anchors = markdown_anchors(RUNBOOK.read_text())
    names = alert_names()
    assert len(names) == len(set(names)) >= 15
    assert RUNBOOK_BASE.startswith("https://") and RUNBOOK_BASE.endswith("/docs/runbook.md")
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        assert annotations["runbook_url"] == runbook_url(rule["alert"]), rule["alert"]
        assert runbook_url(rule["alert"]).rpartition("#")[2] in anchors, (rule["alert"], sorted(anchors))
