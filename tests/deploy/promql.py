"""Small helpers around VictoriaMetrics' Prometheus query API for the deploy tests."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "kube-proxy.json"
RULES = REPO / "deploy" / "alerts" / "kube-proxy.rules.yaml"
RUNBOOK = REPO / "docs" / "runbook.md"


def query(vm_url: str, expr: str, at: float) -> dict:
    response = httpx.post(f"{vm_url}/api/v1/query", data={"query": expr, "time": str(at)}, timeout=30)
    body = response.json()
    assert response.status_code == 200 and body.get("status") == "success", f"{expr!r}: {response.status_code} {body}"
    return body["data"]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title / refId, expr) of every query of every panel."""
    return [(f"{p['title']} / {t['refId']}", t["expr"]) for p in dashboard_panels() for t in p.get("targets", [])]


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's variable interpolation, for the variables the dashboard uses."""
    def repl(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"unknown dashboard variable ${name} in {expr!r}")
        return variables[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


def rules() -> list[dict]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_names() -> list[str]:
    return [r["alert"] for r in rules() if "alert" in r]


def markdown_anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    anchors = set()
    for line in text.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors
