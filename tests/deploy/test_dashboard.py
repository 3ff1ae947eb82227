"""The Grafana dashboard and its provisioning: every query is PromQL VictoriaMetrics accepts
and returns data once the pipeline ran over the simulator; the provisioning files and the
docker-compose service agree with each other."""

from __future__ import annotations

import re

import httpx
import pytest
import yaml

from tests.deploy.pipeline_data import FAULT_NODE, Loaded
from tests.deploy.promql import REPO, dashboard, dashboard_panels, dashboard_targets, query, substitute

pytestmark = pytest.mark.integration


def variables(loaded: Loaded, window: str = "60s") -> dict[str, str]:
    return {"cluster": loaded.cluster, "node": FAULT_NODE, "window": window, "datasource": "victoriametrics",
            "__range": "1h", "__rate_interval": "4m", "__interval": "1m"}


@pytest.mark.parametrize("scenario", ["healthy", "healthy-133"])
@pytest.mark.parametrize("window", ["60s", "300s"])
def test_every_panel_query_returns_data(scenarios: dict[str, Loaded], vm_url: str, scenario: str, window: str) -> None:
    loaded = scenarios[scenario]
    at = loaded.end_s - 90  # inside the data, a minute and a half before its end
    targets = dashboard_targets()
    assert len(targets) >= 30
    empty = []
    for where, expr in targets:
        data = query(vm_url, substitute(expr, variables(loaded, window)), at)
        if not data["result"]:
            empty.append(f"{where}: {expr}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_every_panel_queries_pipeline_series_of_the_selected_cluster() -> None:
    for panel in dashboard_panels():
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            selectors = re.findall(r"(kubeproxy:[a-z_]+:[a-z0-9_]+)\{([^}]*)\}", target["expr"])
            assert selectors, f"{panel['title']}: {target['expr']}"
            for _name, labels in selectors:
                assert 'cluster="$cluster"' in labels, f"{panel['title']}: {target['expr']}"
                assert "scope=" in labels, f"{panel['title']}: {target['expr']}"


def test_template_variables_find_clusters_and_nodes(scenarios: dict[str, Loaded], vm_url: str) -> None:
    loaded = scenarios["healthy"]
    templating = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert set(templating) == {"datasource", "cluster", "node", "window"}
    params = {"start": str(loaded.start_s), "end": str(loaded.end_s)}
    for name, expected, subst in (("cluster", loaded.cluster, {}), ("node", FAULT_NODE, {"cluster": loaded.cluster})):
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", templating[name]["query"]["query"])
        assert match and match.group(2) == name
        selector = substitute(match.group(1), subst)
        response = httpx.get(f"{vm_url}/api/v1/label/{name}/values", params={**params, "match[]": selector}, timeout=30)
        assert response.status_code == 200, response.text
        assert expected in response.json()["data"], (name, selector)
    # The node rows repeat per selected node.
    assert [p.get("repeat") for p in dashboard()["panels"] if p["type"] == "row"] == [None, "node"]


def test_dashboard_shows_the_requested_panels() -> None:
    titles = " | ".join(p["title"] for p in dashboard_panels()).lower()
    for words in ("sli vs threshold", "nodes", "syncs per second", "p50 / p90 / p99", "full vs partial sync p99",
                  "network programming p99", "pending changes", "restore failures", "seconds since last sync",
                  "iptables rules"):
        assert words in titles, words
    ids = [p["id"] for p in dashboard_panels()]
    assert len(ids) == len(set(ids))
    # a tidy grid: inside 24 columns, no two panels overlap
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard_panels():
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]


def test_provisioning_and_compose_agree() -> None:
    datasources = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/victoriametrics.yaml").read_text())
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://victoriametrics:8428"
    providers = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/kube-proxy.yaml").read_text())
    (provider,) = providers["providers"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    grafana = compose["grafana"]
    assert grafana["image"].startswith("grafana/grafana")
    # host ports are configurable (${KPP_*_HOST_PORT:-default}); the container ports are fixed
    assert any(port.endswith(":3000") for port in grafana["ports"]), grafana["ports"]
    mounts = {}
    for volume in grafana["volumes"]:
        source, target = volume.split(":")[:2]
        assert (REPO / source).is_dir(), source
        mounts[target] = source
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    assert mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    assert "victoriametrics" in compose
    assert any(port.endswith(":8428") for port in compose["victoriametrics"]["ports"]), compose["victoriametrics"]["ports"]
