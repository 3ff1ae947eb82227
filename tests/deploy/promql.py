"""Small helpers around VictoriaMetrics' Prometheus query API for the deploy tests."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "kube-proxy.json"
ALERTS_DIR = REPO / "deploy" / "alerts"
RULES = ALERTS_DIR / "kube-proxy.rules.yaml"  # alerts on kube-proxy (derived series)
PIPELINE_RULES = ALERTS_DIR / "pipeline.rules.yaml"  # alerts on the pipeline itself
RUNBOOK = REPO / "docs" / "runbook.md"
#: Every runbook_url is this base + "#" + the alert's name in lower case (the Helm chart
#: replaces the base with its `runbookBaseUrl`).
RUNBOOK_BASE = "https://github.com/kube-proxy-pipeline/kube-proxy-pipeline/blob/main/docs/runbook.md"


def rule_files() -> list[Path]:
    """Every rule file of deploy/alerts (what the chart ships)."""
    return sorted(ALERTS_DIR.glob("*.rules.yaml"))


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


def rules(path: Path | None = None) -> list[dict]:
    """The rules of one file, or of every file of deploy/alerts."""
    out = []
    for file in [path] if path else rule_files():
        doc = yaml.safe_load(file.read_text())
        out.extend(rule for group in doc["groups"] for rule in group["rules"])
    return out


def alert_names(path: Path | None = None) -> list[str]:
    return [r["alert"] for r in rules(path) if "alert" in r]


def runbook_url(alert: str) -> str:
    return f"{RUNBOOK_BASE}#{alert.lower()}"


def with_durations(group: dict, alert: str, interval: str, for_: str, ranges: dict[str, str]) -> dict:
    """A copy of rule group `group` holding only `alert`, evaluated every `interval`, with its
    `for` and the range selectors of `ranges` (e.g. {"5m": "20s"}: every `[5m]`) replaced:
    the production rule, fast enough for a live test. Raises when a range is not in the expr."""
    (rule,) = [r for r in group["rules"] if r.get("alert") == alert]
    expr = rule["expr"]
    for old, new in ranges.items():
        if f"[{old}]" not in expr:
            raise ValueError(f"{alert}: no [{old}] in {expr!r}")
        expr = expr.replace(f"[{old}]", f"[{new}]")
    return {**group, "interval": interval, "rules": [{**rule, "expr": expr, "for": for_}]}


def markdown_anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    anchors = set()
    for line in text.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors
