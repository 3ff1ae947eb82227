"""`kpp report`: one self-contained HTML file about a past time range, from the pipeline's
series in VictoriaMetrics — the network programming SLI against its threshold, sync p99 per
node, syncs per second, network programming p99, and a per-node table.

Self-contained means no external asset at all: the charts are inline SVG drawn here, the CSS
is inline (with print styles), there is no script. The file can be mailed, archived or
printed as it is.

Data: `query_range` for the charts and instant `*_over_time(...[range])` queries at the end of
the range for the table (exact sums and maxima over the whole range, whatever the chart step).
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterable

import httpx

from runtime.config import vm_url as default_vm_url
from contracts.errors import ConfigError, KppError
from kpp.tail import parse_since


class ReportError(KppError):
    """VictoriaMetrics unreachable, answering with an error, or without pipeline data."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="write a self-contained HTML report of a time range from VictoriaMetrics",
        description="Query the pipeline's series (kubeproxy:<metric>:<value>) in VictoriaMetrics and write one "
                    "self-contained HTML file: network programming SLI vs threshold, sync p99 per node, syncs/s, "
                    "network programming p99 and a per-node table. No external assets (inline SVG and CSS), "
                    "prints well. Progress goes to stderr.",
    )
    parser.add_argument("--since", default="1h", metavar="TIME",
                        help="start of the range: an age (30m, 1h, 2d) or RFC 3339 (default 1h)")
    parser.add_argument("--until", default=None, metavar="TIME",
                        help="end of the range: an age or RFC 3339 (default now)")
    parser.add_argument("--url", default=None, help="VictoriaMetrics base URL (default $VM_URL, else http://127.0.0.1:8428)")
    parser.add_argument("--cluster", default=None, help="only this cluster (default: every cluster in the range)")
    parser.add_argument("--step", type=int, default=0, metavar="SECONDS",
                        help="chart resolution (default: the range / 300, at least 60 s)")
    parser.add_argument("--max-lines", type=int, default=15, metavar="N",
                        help="per-node charts show the N nodes with the highest values (the table lists all; default 15)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-query timeout in seconds (default 30)")
    parser.add_argument("--title", default="kube-proxy report", help="report title")
    parser.add_argument("-o", "--output", default="report.html", help="output file, - for stdout (default report.html)")
    parser.set_defaults(func=run)


# -- queries ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    key: str
    what: str  # for the progress line and the appendix
    expr: str  # `{F}` is replaced by the cluster filter (`, cluster="..."` or nothing)
    instant: bool = False  # instant at the range end; `{R}` is the range


NODE = 'scope="node", window="60s"{F}'
CLUSTER = 'scope="cluster", window="60s"{F}'

QUERIES: tuple[Query, ...] = (
    Query("sli", "network programming SLI",
          'max by (cluster) (kubeproxy:network_programming_duration_seconds:p99{scope="cluster", window="300s", ip_family=""{F}})'),
    Query("threshold", "SLI threshold",
          'max by (cluster) (kubeproxy:network_programming_duration_seconds:threshold_s{scope="cluster"{F}})'),
    Query("sync_p99", "sync p99 per node",
          f"max by (cluster, node) (kubeproxy:sync_proxy_rules_duration_seconds:p99{{{NODE}}})"),
    Query("syncs", "syncs per second",
          f"sum by (cluster) (kubeproxy:sync_proxy_rules_duration_seconds_count:rate{{{CLUSTER}}})"),
    Query("netprog_cluster", "network programming p99 (cluster)",
          f"max by (cluster) (kubeproxy:network_programming_duration_seconds:p99{{{CLUSTER}}})"),
    Query("netprog_node", "network programming p99 per node",
          f"max by (cluster, node) (kubeproxy:network_programming_duration_seconds:p99{{{NODE}}})"),
    Query("t_within", "SLI share within threshold",
          'avg by (cluster) (avg_over_time(kubeproxy:network_programming_duration_seconds:within{scope="cluster"{F}}[{R}]))',
          instant=True),
    Query("t_nodes", "nodes known",
          f"max by (cluster) (max_over_time(kubeproxy:kube_proxy:nodes{{{CLUSTER}}}[{{R}}]))", instant=True),
    Query("t_up", "node availability",
          f"avg by (cluster, node) (avg_over_time(kubeproxy:kube_proxy:up{{{NODE}}}[{{R}}]))", instant=True),
    Query("t_scrapes_failed", "failed scrapes",
          f"sum by (cluster, node) (sum_over_time(kubeproxy:kube_proxy:scrapes_failed{{{NODE}}}[{{R}}]))", instant=True),
    Query("t_missing", "windows without a scrape",
          f"sum by (cluster, node) (sum_over_time(kubeproxy:kube_proxy:missing{{{NODE}}}[{{R}}]))", instant=True),
    Query("t_last_seen", "last window with a scrape",
          f"max by (cluster, node) (tlast_over_time(kubeproxy:kube_proxy:up{{{NODE}}}[{{R}}]))", instant=True),
    Query("t_sync_p99", "worst sync p99",
          f"max by (cluster, node) (max_over_time(kubeproxy:sync_proxy_rules_duration_seconds:p99{{{NODE}}}[{{R}}]))",
          instant=True),
    Query("t_netprog_p99", "worst network programming p99",
          f"max by (cluster, node) (max_over_time(kubeproxy:network_programming_duration_seconds:p99{{{NODE}}}[{{R}}]))",
          instant=True),
    Query("t_syncs", "mean syncs per second",
          f"sum by (cluster, node) (avg_over_time(kubeproxy:sync_proxy_rules_duration_seconds_count:rate{{{NODE}}}[{{R}}]))",
          instant=True),
    Query("t_restore", "restore failures",
          f"sum by (cluster, node) (sum_over_time(kubeproxy:kube_proxy:restore_failures{{{NODE}}}[{{R}}]))", instant=True),
    Query("t_stalled", "minutes stalled",
          f"sum by (cluster, node) (sum_over_time(kubeproxy:kube_proxy:stalled{{{NODE}}}[{{R}}]))", instant=True),
    Query("t_since_sync", "seconds since last sync",
          f"max by (cluster, node) (last_over_time(kubeproxy:kube_proxy:seconds_since_last_sync{{{NODE}}}[{{R}}]))",
          instant=True),
    Query("t_pending", "most pending changes",
          f"max by (cluster, node) (max_over_time(kubeproxy:sync_proxy_rules_endpoint_changes_pending:max{{{NODE}}}[{{R}}]))",
          instant=True),
    Query("t_rules", "iptables rules (nat)",
          f'sum by (cluster, node) (last_over_time(kubeproxy:sync_proxy_rules_iptables_total:last{{{NODE}, table="nat"}}[{{R}}]))',
          instant=True),
)


def render_expr(query: Query, cluster: str | None, range_s: int) -> str:
    flt = f', cluster="{_promql_string(cluster)}"' if cluster else ""
    return query.expr.replace("{F}", flt).replace("{R}", f"{range_s}s")


def _promql_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


Series = dict[tuple[str, ...], list[tuple[float, float]]]  # (cluster[, node]) -> [(t, v)]


class VictoriaMetrics:
    """The two query endpoints, with one clear error per failure."""

    def __init__(self, url: str, timeout: float, client: httpx.Client | None = None) -> None:
        self.url = url.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def _get(self, path: str, params: dict):  # noqa: ANN202
        try:
            response = self._client.post(f"{self.url}{path}", data=params)
        except httpx.TimeoutException:
            raise ReportError(f"VictoriaMetrics at {self.url} did not answer in time ({path}); "
                              "try a shorter range or a larger --timeout") from None
        except httpx.TransportError as exc:
            raise ReportError(f"cannot reach VictoriaMetrics at {self.url} ({type(exc).__name__}: {exc}); "
                              "start it (`kpp stack up`) or pass --url / set VM_URL") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error") if isinstance(body, dict) else response.text.strip()[:300]
            raise ReportError(f"VictoriaMetrics at {self.url} answered {response.status_code} to {path}: {detail}")
        return body["data"]

    def query_range(self, expr: str, start: int, end: int, step: int) -> list[dict]:
        return self._get("/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": f"{step}s"})["result"]

    def query(self, expr: str, at: int) -> list[dict]:
        return self._get("/api/v1/query", {"query": expr, "time": at})["result"]

    def label_values(self, label: str, match: str, start: int, end: int) -> list[str]:
        return self._get(f"/api/v1/label/{label}/values", {"match[]": match, "start": start, "end": end})


def _key(metric: dict) -> tuple[str, ...]:
    return (metric.get("cluster", ""),) + ((metric["node"],) if "node" in metric else ())


def _num(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else math.nan


@dataclass
class Data:
    start: int
    end: int
    step: int
    url: str
    cluster: str | None
    ranges: dict[str, Series] = field(default_factory=dict)
    table: dict[str, dict[tuple[str, ...], float]] = field(default_factory=dict)
    exprs: dict[str, str] = field(default_factory=dict)

    def empty(self) -> bool:
        return not any(self.ranges.values()) and not any(self.table.values())


def fetch(vm: VictoriaMetrics, start: int, end: int, step: int, cluster: str | None,
          progress: Callable[[int, int, str], None]) -> Data:
    data = Data(start, end, step, vm.url, cluster)
    total = len(QUERIES)
    for i, query in enumerate(QUERIES, 1):
        progress(i, total, query.what)
        expr = render_expr(query, cluster, end - start)
        data.exprs[query.key] = expr
        if query.instant:
            result = vm.query(expr, end)
            data.table[query.key] = {_key(r["metric"]): _num(r["value"][1]) for r in result}
        else:
            result = vm.query_range(expr, start, end, step)
            data.ranges[query.key] = {_key(r["metric"]): [(float(t), _num(v)) for t, v in r["values"]] for r in result}
    return data


# -- SVG charts -----------------------------------------------------------------------------

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f", "#aec7e8", "#ffbb78", "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2")
THRESHOLD_COLOR = "#d62728"


@dataclass
class Line:
    label: str
    points: list[tuple[float, float]]
    color: str
    dashed: bool = False


def nice_ceiling(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exp = math.floor(math.log10(value))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * 10**exp >= value * (1 - 1e-12):
            return m * 10**exp
    return 10 ** (exp + 1)


def format_value(value: float, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if unit == "s":
        if value == 0:
            return "0"
        if value < 1:
            return f"{value * 1000:.3g} ms"
        if value < 120:
            return f"{value:.3g} s"
        if value < 7200:
            return f"{value / 60:.3g} min"
        return f"{value / 3600:.3g} h"
    if unit == "%":
        return f"{value * 100:.4g} %"
    if abs(value) >= 10000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


TIME_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800)


def time_ticks(t0: float, t1: float, max_ticks: int = 8) -> list[float]:
    span = max(t1 - t0, 1)
    step = next((s for s in TIME_STEPS if span / s <= max_ticks), TIME_STEPS[-1])
    first = math.ceil(t0 / step) * step
    return [t for t in _frange(first, t1, step)]


def _frange(a: float, b: float, step: float) -> Iterable[float]:
    while a <= b + 1e-9:
        yield a
        a += step


def format_time(t: float, span: float) -> str:
    moment = dt.datetime.fromtimestamp(t, dt.timezone.utc)
    return moment.strftime("%m-%d %H:%M" if span > 86400 else "%H:%M")


def svg_chart(lines: list[Line], t0: float, t1: float, unit: str, step: int, title: str,
              width: int = 960, height: int = 300) -> str:
    left, right, top, bottom = 72, 16, 12, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [v for line in lines for _t, v in line.points if math.isfinite(v)]
    y_max = nice_ceiling(max(values) * 1.05 if values else 1.0)
    span = max(t1 - t0, 1)

    def x(t: float) -> float:
        return left + (t - t0) / span * plot_w

    def y(v: float) -> float:
        return top + plot_h - v / y_max * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">',
           f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="plot"/>']
    for i in range(6):
        v = y_max * i / 5
        yy = y(v)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{yy:.1f}" y2="{yy:.1f}" class="grid"/>')
        out.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" class="ylabel">{html.escape(format_value(v, unit))}</text>')
    for t in time_ticks(t0, t1):
        xx = x(t)
        out.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top}" y2="{top + plot_h}" class="grid"/>')
        out.append(f'<text x="{xx:.1f}" y="{height - 12}" class="xlabel">{format_time(t, span)}</text>')
    gap = step * 2.5
    for line in lines:
        segments: list[list[tuple[float, float]]] = []
        prev_t = None
        for t, v in line.points:
            if not math.isfinite(v):
                prev_t = None
                continue
            if prev_t is None or t - prev_t > gap:
                segments.append([])
            segments[-1].append((t, v))
            prev_t = t
        d = " ".join("M" + " L".join(f"{x(t):.1f},{y(v):.1f}" for t, v in seg) for seg in segments if len(seg) > 1)
        dash = ' stroke-dasharray="8 5"' if line.dashed else ""
        count = sum(len(seg) for seg in segments if len(seg) > 1)  # points drawn as lines
        label = html.escape(line.label)
        if d:
            out.append(f'<path class="series" d="{d}" stroke="{line.color}"{dash} data-points="{count}">'
                       f"<title>{label}</title></path>")
        for seg in segments:  # lone points (between gaps) as dots
            if len(seg) == 1:
                t, v = seg[0]
                out.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="{line.color}">'
                           f"<title>{label}</title></circle>")
    if not values:
        out.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" class="nodata">no data in this range</text>')
    out.append("</svg>")
    return "".join(out)


def legend(lines: list[Line], unit: str) -> str:
    items = []
    for line in lines:
        finite = [v for _t, v in line.points if math.isfinite(v)]
        stats = (f" <span class=\"stat\">last {format_value(finite[-1], unit)} · max {format_value(max(finite), unit)}</span>"
                 if finite else "")
        style = f"border-top: 3px {'dashed' if line.dashed else 'solid'} {line.color}"
        items.append(f'<li><span class="swatch" style="{style}"></span>{html.escape(line.label)}{stats}</li>')
    return f'<ul class="legend">{"".join(items)}</ul>'


# -- the document ---------------------------------------------------------------------------

CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1d2430;
       background: #f5f6f8; margin: 0; }
main { max-width: 1000px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; }
.meta { color: #5b6473; margin: 0 0 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 16px 0; }
.card { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: 10px 14px; min-width: 150px; }
.card .v { font-size: 22px; font-weight: 600; }
.card .k { color: #5b6473; font-size: 12px; }
.card.bad .v, td.bad { color: #c62828; font-weight: 600; }
.card.ok .v { color: #2e7d32; }
figure { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; margin: 0 0 16px; padding: 12px; }
figcaption { font-weight: 600; margin-bottom: 6px; }
figcaption .note { font-weight: normal; color: #5b6473; }
svg.chart { width: 100%; height: auto; display: block; }
svg .plot { fill: #fff; stroke: #c9ced6; }
svg .grid { stroke: #eceef2; stroke-width: 1; }
svg .ylabel { font-size: 11px; fill: #5b6473; text-anchor: end; }
svg .xlabel { font-size: 11px; fill: #5b6473; text-anchor: middle; }
svg .nodata { font-size: 14px; fill: #8a93a2; text-anchor: middle; }
svg .series { fill: none; stroke-width: 1.8; stroke-linejoin: round; stroke-linecap: round; }
ul.legend { list-style: none; padding: 0; margin: 6px 0 0; display: flex; flex-wrap: wrap; gap: 4px 16px; font-size: 12px; }
ul.legend .swatch { display: inline-block; width: 18px; margin-right: 6px; vertical-align: middle; }
ul.legend .stat { color: #5b6473; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: 12.5px; }
th, td { border: 1px solid #dde1e7; padding: 4px 6px; text-align: right; white-space: nowrap; }
th { background: #eef0f4; white-space: normal; vertical-align: bottom; font-size: 11.5px; }
th:first-child, td:first-child { text-align: left; }
details { margin-top: 24px; color: #5b6473; }
details code { display: block; white-space: pre-wrap; font-size: 11.5px; margin: 4px 0 8px; }
@media print {
  body { background: #fff; font-size: 11px; }
  main { max-width: none; padding: 0; }
  figure, .card { border-color: #999; break-inside: avoid; page-break-inside: avoid; }
  h2 { break-after: avoid; page-break-after: avoid; }
  table { font-size: 9.5px; }
  tr { break-inside: avoid; page-break-inside: avoid; }
  details { display: none; }
  @page { size: A4 portrait; margin: 12mm; }
}
"""


def _name(key: tuple[str, ...], clusters: list[str]) -> str:
    if len(key) == 1:
        return key[0]
    return key[1] if len(clusters) <= 1 else f"{key[0]}/{key[1]}"


def _worst(series: Series, limit: int) -> list[tuple[tuple[str, ...], list]]:
    def peak(points: list) -> float:
        finite = [v for _t, v in points if math.isfinite(v)]
        return max(finite) if finite else -math.inf
    ranked = sorted(series.items(), key=lambda kv: (-peak(kv[1]), kv[0]))
    return sorted(ranked[:limit], key=lambda kv: kv[0])


def _lines(series: Series, clusters: list[str], limit: int = 10_000, offset: int = 0, label: str = "{}") -> list[Line]:
    return [Line(label.format(_name(key, clusters)), points, PALETTE[(i + offset) % len(PALETTE)])
            for i, (key, points) in enumerate(_worst(series, limit))]


def figure(title: str, note: str, lines: list[Line], data: Data, unit: str) -> str:
    chart = svg_chart(lines, data.start, data.end, unit, data.step, title)
    return (f'<figure><figcaption>{html.escape(title)} <span class="note">{html.escape(note)}</span></figcaption>'
            f"{chart}{legend(lines, unit)}</figure>")


def render_html(data: Data, title: str, max_lines: int, generated: float | None = None) -> str:
    clusters = sorted({key[0] for series in data.ranges.values() for key in series}
                      | {key[0] for values in data.table.values() for key in values})
    nodes = sorted({key for key in data.table.get("t_up", {})} | {key for key in data.ranges.get("sync_p99", {})})
    generated = time.time() if generated is None else generated
    fmt = "%Y-%m-%d %H:%M UTC"
    when = (f"{dt.datetime.fromtimestamp(data.start, dt.timezone.utc).strftime(fmt)} – "
            f"{dt.datetime.fromtimestamp(data.end, dt.timezone.utc).strftime(fmt)}")

    sli_lines = [Line(f"SLI p99 (5 min, all nodes){'' if len(clusters) <= 1 else ' ' + k[0]}", pts, PALETTE[i % len(PALETTE)])
                 for i, (k, pts) in enumerate(sorted(data.ranges.get("sli", {}).items()))]
    sli_lines += [Line(f"threshold{'' if len(clusters) <= 1 else ' ' + k[0]}", pts, THRESHOLD_COLOR, dashed=True)
                  for k, pts in sorted(data.ranges.get("threshold", {}).items())]
    netprog_lines = [Line(f"cluster{'' if len(clusters) <= 1 else ' ' + k[0]}", pts, "#000000")
                     for k, pts in sorted(data.ranges.get("netprog_cluster", {}).items())]
    netprog_lines += _lines(data.ranges.get("netprog_node", {}), clusters, max_lines)
    syncs_lines = _lines(data.ranges.get("syncs", {}), clusters, label="{} syncs/s" if len(clusters) > 1 else "syncs/s")

    def last(series: Series, key: tuple[str, ...]) -> float:
        finite = [v for _t, v in series.get(key, []) if math.isfinite(v)]
        return finite[-1] if finite else math.nan

    cards = []
    for cluster in clusters:
        key = (cluster,)
        sli_now = last(data.ranges.get("sli", {}), key)
        threshold = last(data.ranges.get("threshold", {}), key)
        within = data.table.get("t_within", {}).get(key, math.nan)
        cluster_nodes = [k for k in nodes if k[0] == cluster]
        restore = sum(v for k, v in data.table.get("t_restore", {}).items() if k[0] == cluster and math.isfinite(v))
        down = sum(1 for k in cluster_nodes if data.table.get("t_up", {}).get(k, 1.0) < 1.0
                   or data.table.get("t_missing", {}).get(k, 0.0) > 0)
        stalled = sum(1 for k in cluster_nodes if data.table.get("t_stalled", {}).get(k, 0.0) > 0)
        prefix = f"{cluster}: " if len(clusters) > 1 else ""
        bad_sli = math.isfinite(sli_now) and math.isfinite(threshold) and sli_now > threshold
        cards += [
            _card(f"{prefix}SLI now (threshold {format_value(threshold, 's')})", format_value(sli_now, "s"),
                  "bad" if bad_sli else "ok"),
            _card(f"{prefix}SLI evaluations within threshold", format_value(within, "%"),
                  "bad" if math.isfinite(within) and within < 0.99 else "ok"),
            _card(f"{prefix}nodes · {down} with failed or missing scrapes · {stalled} stalled",
                  str(len(cluster_nodes)), "bad" if down or stalled else "ok"),
            _card(f"{prefix}restore failures", format_value(float(restore), ""), "bad" if restore else "ok"),
        ]

    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{html.escape(when)} · clusters: {html.escape(", ".join(clusters))} · '
        f"{len(nodes)} nodes · resolution {data.step} s · source {html.escape(data.url)} · generated "
        f"{dt.datetime.fromtimestamp(generated, dt.timezone.utc).strftime(fmt)}</p>",
        f'<div class="cards">{"".join(cards)}</div>',
        "<h2>Network programming</h2>",
        figure("Network programming SLI vs threshold",
               "p99 over a rolling 5 minutes, pooled over all nodes, evaluated every minute", sli_lines, data, "s"),
        figure("Network programming p99",
               f"per 1-minute window; cluster and the {min(max_lines, len(data.ranges.get('netprog_node', {})))} "
               "nodes with the highest peaks", netprog_lines, data, "s"),
        "<h2>Rule syncs</h2>",
        figure("Sync duration p99 by node",
               f"per 1-minute window; the {min(max_lines, len(data.ranges.get('sync_p99', {})))} nodes with the highest peaks",
               _lines(data.ranges.get("sync_p99", {}), clusters, max_lines), data, "s"),
        figure("Syncs per second", "all nodes, per 1-minute window", syncs_lines, data, ""),
        "<h2>Nodes</h2>",
        node_table(data, nodes, clusters),
        "<details><summary>Queries</summary>",
        *(f"<p>{html.escape(q.what)}</p><code>{html.escape(data.exprs.get(q.key, ''))}</code>" for q in QUERIES),
        "</details>",
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><main>{''.join(body)}</main></body></html>\n")


def _card(label: str, value: str, state: str) -> str:
    return f'<div class="card {state}"><div class="v">{html.escape(value)}</div><div class="k">{html.escape(label)}</div></div>'


COLUMNS = (
    # key, header, unit, bad(value) -> bool
    ("t_up", "scrapes up", "%", lambda v: v < 1),
    ("t_missing", "windows missing", "", lambda v: v > 0),
    ("t_last_seen", "last seen", "time", lambda v: False),
    ("t_sync_p99", "worst sync p99", "s", lambda v: v > 1),
    ("t_netprog_p99", "worst netprog p99", "s", lambda v: v > 30),
    ("t_syncs", "syncs/s", "", lambda v: False),
    ("t_restore", "restore failures", "", lambda v: v > 0),
    ("t_stalled", "minutes stalled", "", lambda v: v > 0),
    ("t_since_sync", "since last sync", "s", lambda v: False),
    ("t_pending", "max pending", "", lambda v: v > 0),
    ("t_rules", "iptables rules (nat)", "", lambda v: False),
)


def node_table(data: Data, nodes: list[tuple[str, ...]], clusters: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for _k, h, _u, _b in COLUMNS)
    rows = []
    for key in nodes:
        cells = []
        for col, _header, unit, bad in COLUMNS:
            value = data.table.get(col, {}).get(key, math.nan)
            if unit == "time":
                text = (dt.datetime.fromtimestamp(value, dt.timezone.utc).strftime("%H:%M")
                        if math.isfinite(value) else "–")
            else:
                text = format_value(value, unit)
            cls = ' class="bad"' if math.isfinite(value) and bad(value) else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        rows.append(f"<tr><td>{html.escape(_name(key, clusters))}</td>{''.join(cells)}</tr>")
    if not rows:
        rows.append(f'<tr><td colspan="{len(COLUMNS) + 1}">no node data in this range</td></tr>')
    return f"<table><thead><tr><th>node</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


# -- command --------------------------------------------------------------------------------

def auto_step(range_s: int) -> int:
    return max(60, math.ceil(range_s / 300 / 60) * 60)


class Progress:
    """One line on stderr, rewritten in place on a terminal; one line per step otherwise."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, i: int, total: int, what: str) -> None:
        text = f"kpp report: querying VictoriaMetrics [{i}/{total}] {what}"
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()


def build_report(url: str, start: int, end: int, *, step: int = 0, cluster: str | None = None,
                 title: str = "kube-proxy report", max_lines: int = 15, timeout: float = 30.0,
                 progress: Callable[[int, int, str], None] = lambda i, n, w: None) -> tuple[str, Data]:
    if end <= start:
        raise ConfigError("the range is empty: --since must be before --until")
    step = step or auto_step(end - start)
    vm = VictoriaMetrics(url, timeout)
    try:
        data = fetch(vm, start, end, step, cluster, progress)
        if data.empty():
            where = f" for cluster {cluster!r}" if cluster else ""
            hint = ""
            if cluster:
                known = vm.label_values("cluster", "kubeproxy:kube_proxy:nodes", start, end)
                shown = ", ".join(sorted(known)[:10]) + (f", … ({len(known)} in all)" if len(known) > 10 else "")
                hint = f" (clusters with data around the range: {shown or 'none'})"
            raise ReportError(
                f"no pipeline series in VictoriaMetrics at {vm.url} between {_iso(start)} and {_iso(end)}{where}{hint}: "
                "is `kpp sink` writing there, and is `kpp stream` running? (looked for kubeproxy:<metric>:<value> "
                "series such as kubeproxy:kube_proxy:up)")
    finally:
        vm.close()
    return render_html(data, title, max_lines), data


def _iso(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(args: argparse.Namespace) -> int:
    now = time.time()
    start = parse_since(args.since, now) // 1000
    end = parse_since(args.until, now) // 1000 if args.until else int(now)
    if args.step < 0 or args.max_lines < 1:
        raise ConfigError("--step must be >= 0 and --max-lines >= 1")
    url = (args.url or default_vm_url()).rstrip("/")
    progress = Progress(sys.stderr)
    document, data = build_report(url, start, end, step=args.step, cluster=args.cluster, title=args.title,
                                  max_lines=args.max_lines, timeout=args.timeout, progress=progress)
    nodes = len(data.table.get("t_up", {}))
    if args.output == "-":
        progress.done(f"kpp report: {nodes} nodes, {len(document) // 1024} KiB")
        sys.stdout.write(document)
        return 0
    path = Path(args.output)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(document, encoding="utf-8")
    os.replace(tmp, path)
    progress.done(f"kpp report: wrote {path} ({len(document) // 1024} KiB, {nodes} nodes, "
                  f"{_iso(start)} – {_iso(end)})")
    return 0
