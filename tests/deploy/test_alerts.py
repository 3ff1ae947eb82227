"""The alert rules, evaluated by vmalert (Debian's victoria-metrics package) in replay mode
over pipeline output of the simulator: each alert fires in its fault scenario, only there,
only on the faulty node, not before the fault; no alert fires in the healthy scenarios."""

from __future__ import annotations

import datetime as dt
import json
import subprocess

import httpx
import pytest

from tests.deploy.pipeline_data import FAULT_NODE, Loaded, flush
from tests.deploy.promql import RULES, alert_names, query, rule_files, rules
from tests.sinks.servers import ensure_binary

pytestmark = pytest.mark.integration

# scenario -> the alerts it must fire (and no other); node faults are on FAULT_NODE only.
EXPECTED: dict[str, set[str]] = {
    "healthy": set(),
    "healthy-133": set(),
    "stalled": {"KubeProxySyncStalled", "KubeProxyPendingChangesStuck"},
    "gone": {"KubeProxyDown"},
    "vanished": {"KubeProxyDown"},
    "left-producer-running": {"KubeProxyDown"},
    "no-metrics": {"KubeProxyNoMetrics"},
    "restore-failures": {"KubeProxyRestoreFailures"},
    "slow-sync": {"KubeProxySyncLatencyHigh"},
    "slow-netprog": {"KubeProxyNetworkProgrammingSLOFastBurn", "KubeProxyNetworkProgrammingSLOSlowBurn"},
}
CLUSTER_WIDE = {"KubeProxyNetworkProgrammingSLOFastBurn", "KubeProxyNetworkProgrammingSLOSlowBurn"}


def rfc3339(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="session")
def fired(scenarios: dict[str, Loaded], vm_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Replay the rules over the scenarios' time range with vmalert (ALERTS series written back
    to VictoriaMetrics by remote write); returns cluster -> firing alert series."""
    vmalert = ensure_binary("vmalert", "victoria-metrics")
    start = min(s.start_s for s in scenarios.values())
    end = max(s.end_s for s in scenarios.values())
    log = tmp_path_factory.mktemp("vmalert") / "replay.log"
    argv = [vmalert, f"-rule={RULES}", f"-datasource.url={vm_url}", f"-remoteWrite.url={vm_url}",
            f"-replay.timeFrom={rfc3339(start)}", f"-replay.timeTo={rfc3339(end)}",
            "-replay.rulesDelay=0", "-replay.disableProgressBar", "-datasource.queryStep=1m",
            "-rule.validateTemplates", "-loggerLevel=WARN"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=100)
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, f"vmalert replay failed ({result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    flush(vm_url)  # vmalert's remote write flushed on exit; make it searchable
    clusters = "|".join(s.cluster for s in scenarios.values())
    out: dict[str, list[dict]] = {s.cluster: [] for s in scenarios.values()}
    response = httpx.post(f"{vm_url}/api/v1/export", timeout=30, data={
        "match[]": f'ALERTS{{alertstate="firing", cluster=~"{clusters}"}}', "start": str(start), "end": str(end + 60)})
    assert response.status_code == 200, response.text
    for line in response.text.splitlines():
        series = json.loads(line)
        out[series["metric"]["cluster"]].append(
            {**series["metric"], "first_s": min(series["timestamps"]) // 1000, "last_s": max(series["timestamps"]) // 1000,
             "points": len(set(series["timestamps"]))})
    return out


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_alerts_of_each_scenario(scenarios: dict[str, Loaded], fired: dict[str, list[dict]], scenario: str) -> None:
    loaded = scenarios[scenario]
    alerts = fired[loaded.cluster]
    assert {a["alertname"] for a in alerts} == EXPECTED[scenario], json.dumps(alerts, indent=1)
    for alert in alerts:
        rule = next(r for r in rules(RULES) if r.get("alert") == alert["alertname"])
        assert alert["severity"] == rule["labels"]["severity"]
        if alert["alertname"] not in CLUSTER_WIDE and loaded.scenario.fault_start_min is not None:
            assert alert["node"] == FAULT_NODE, alert  # the faulty node, no other
        if loaded.fault_start_s is not None:
            assert alert["first_s"] > loaded.fault_start_s, alert  # not before the fault


def test_every_alert_is_covered_by_a_scenario() -> None:
    assert set(alert_names(RULES)) == set().union(*EXPECTED.values())


def test_node_gone_fires_while_missing_and_resolves_once_the_node_left(scenarios: dict[str, Loaded],
                                                                        fired: dict[str, list[dict]]) -> None:
    """A node that vanished (no scrapes at all) is `missing` until `node_gone_after` (10 min),
    then the pipeline forgets it: the alert resolves instead of firing forever."""
    loaded = scenarios["vanished"]
    (alert,) = fired[loaded.cluster]
    assert loaded.fault_start_s < alert["first_s"] <= loaded.fault_start_s + 6 * 60
    assert alert["last_s"] <= loaded.fault_start_s + 15 * 60


def test_rule_expressions_are_valid_promql_with_data(scenarios: dict[str, Loaded], vm_url: str) -> None:
    """Every expression runs on VictoriaMetrics and returns the faulty series at the end of
    its scenario (the condition holds there)."""
    for rule in rules(RULES):
        scenario = next(s for s, names in EXPECTED.items() if rule["alert"] in names)
        loaded = scenarios[scenario]
        result = query(vm_url, rule["expr"], loaded.end_s - 60 if scenario != "vanished" else loaded.fault_start_s + 5 * 60)
        assert loaded.cluster in {r["metric"].get("cluster") for r in result["result"]}, rule["alert"]


def test_rule_files_load_in_vmalert_and_prometheus() -> None:
    """Every rule file of deploy/alerts loads in vmalert (templates checked) and Prometheus.
    (Annotations and runbook links: tests/deploy/test_docs.py.)"""
    files = rule_files()
    assert {f.name for f in files} >= {"kube-proxy.rules.yaml", "pipeline.rules.yaml"}
    vmalert = ensure_binary("vmalert", "victoria-metrics")
    check = subprocess.run([vmalert, *(f"-rule={f}" for f in files), "-dryRun", "-rule.validateTemplates"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr[-3000:]
    # Prometheus can load them too (same rule-file format, plain PromQL).
    promtool = ensure_binary("promtool", "prometheus")
    for f in files:
        check = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0 and f"SUCCESS: {len(rules(f))} rules found" in check.stdout, \
            check.stdout + check.stderr


def test_node_left_while_its_producer_runs_keeps_firing_until_the_producer_is_gone(
        scenarios: dict[str, Loaded], fired: dict[str, list[dict]]) -> None:
    """The node's scrapes stop at minute 10 (missing, `left` at ~20), but its producer keeps
    reporting kpp_producer_up until minute 30: KubeProxyDown fires from ~13, does not resolve
    when the node leaves, and resolves once the producer's metrics stop."""
    loaded = scenarios["left-producer-running"]
    producer_gone_s = loaded.start_s + int(loaded.scenario.producer_until[FAULT_NODE] * 60)
    (alert,) = fired[loaded.cluster]
    assert alert["node"] == FAULT_NODE
    assert loaded.fault_start_s < alert["first_s"] <= loaded.fault_start_s + 6 * 60
    # one uninterrupted firing series: a point at every evaluation from first to last
    assert alert["points"] == (alert["last_s"] - alert["first_s"]) // 60 + 1, alert
    # still firing when the producer stops (well after the node left at ~minute 20) ...
    assert alert["last_s"] >= producer_gone_s - 60, alert
    # ... and resolved within the producer look-back (5 min) and one evaluation after it
    assert alert["last_s"] <= producer_gone_s + 6 * 60, alert
