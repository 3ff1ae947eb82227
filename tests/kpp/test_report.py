"""`kpp report`: a self-contained HTML file from the pipeline's series, rendered in headless
Chromium; clear errors when VictoriaMetrics is unreachable, answers an error or has no data;
the pure chart and formatting code."""

from __future__ import annotations

import math
import re
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import pytest

from contracts.errors import ConfigError
from kpp.report import (QUERIES, Data, Line, ReportError, VictoriaMetrics, auto_step, build_report, format_value,
                        nice_ceiling, render_html, svg_chart)
from simulator.model import SimConfig
from tests.conftest import free_port
from tests.deploy.pipeline_data import Scenario, aligned_start, load
from tests.sinks.servers import ensure_binary

KPP = [sys.executable, "-m", "kpp"]
CHART_TITLES = ("Network programming SLI vs threshold", "Network programming p99", "Sync duration p99 by node",
                "Syncs per second")


# -- end to end ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def recent(vm_url: str):
    """40 simulated minutes ending ~5 minutes ago, 5 nodes, node-003 stalled from minute 20."""
    scenario = Scenario("report", faults={"node-003": ("stalled", 20)}, config=SimConfig())
    return load(vm_url, scenario, aligned_start(45), 40, nodes=5)


def charts(document: str) -> dict[str, list[int]]:
    """chart title -> data point counts of its series paths."""
    out = {}
    for match in re.finditer(r"<figure><figcaption>(.*?) <span.*?</figcaption>(<svg.*?</svg>)", document):
        points = [int(n) for n in re.findall(r'<path class="series" d="M[^"]+" stroke="[^"]+"[^>]*data-points="(\d+)"',
                                             match.group(2))]
        out[match.group(1)] = points
    return out


@pytest.mark.integration
def test_report_renders_in_headless_chromium(recent, vm_url: str, tmp_path: Path) -> None:
    output = tmp_path / "report.html"
    started = time.monotonic()
    result = subprocess.run(KPP + ["report", "--since", "1h", "--url", vm_url, "--cluster", recent.cluster,
                                   "-o", str(output)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    # progress on stderr, one line per query when not a terminal, then the summary
    assert f"[1/{len(QUERIES)}]" in result.stderr and f"[{len(QUERIES)}/{len(QUERIES)}]" in result.stderr
    assert f"wrote {output}" in result.stderr and "5 nodes" in result.stderr

    document = output.read_text()
    # self-contained: nothing to fetch, nothing to run
    for pattern in (r"<script", r"<link", r"<img", r"\ssrc=", r"\shref=", r"url\(", r"@import"):
        assert not re.search(pattern, document, re.I), pattern
    assert "@media print" in document
    found = charts(document)
    assert set(found) == set(CHART_TITLES), found.keys()
    for title, counts in found.items():
        assert counts and max(counts) >= 20, (title, counts)  # ~38 one-minute points per line
    assert len(found["Sync duration p99 by node"]) == 5
    assert 'stroke-dasharray' in document  # the threshold line
    for node in ("node-000", "node-001", "node-002", "node-003", "node-004"):
        assert f"<tr><td>{node}</td>" in document
    stalled_row = re.search(r"<tr><td>node-003</td>(.*?)</tr>", document).group(1)
    assert '<td class="bad">' in stalled_row  # stalled minutes and pending changes flagged

    chromium = ensure_binary("chromium", "chromium")
    screenshot = tmp_path / "report.png"
    shot = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--no-first-run", "--hide-scrollbars", "--window-size=1100,2400",
                           f"--screenshot={screenshot}", output.as_uri()],
                          capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    width, height, pixels = read_png(screenshot.read_bytes())
    assert (width, height) == (1100, 2400)
    counts: dict[bytes, int] = {}
    for pixel in pixels:
        counts[pixel] = counts.get(pixel, 0) + 1
    background = max(counts.values())
    assert len(counts) > 100, "screenshot has almost no colours: blank page?"
    assert 1 - background / len(pixels) > 0.2, "screenshot is mostly one colour: blank page?"
    # the palette's first line colour (#1f77b4) is on screen: charts were drawn
    assert any(abs(p[0] - 0x1f) < 8 and abs(p[1] - 0x77) < 8 and abs(p[2] - 0xb4) < 8 for p in counts)


@pytest.mark.integration
def test_unreachable_victoriametrics_is_one_clear_error(tmp_path: Path) -> None:
    output = tmp_path / "report.html"
    url = f"http://127.0.0.1:{free_port()}"
    result = subprocess.run(KPP + ["report", "--since", "1h", "--url", url, "-o", str(output)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"kpp report: error: cannot reach VictoriaMetrics at {url}" in result.stderr
    assert "Traceback" not in result.stderr and not output.exists()


@pytest.mark.integration
def test_no_data_is_one_clear_error(vm_url: str, tmp_path: Path) -> None:
    output = tmp_path / "report.html"
    result = subprocess.run(KPP + ["report", "--since", "1h", "--url", vm_url, "--cluster", "no-such-cluster-4711",
                                   "-o", str(output)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "kpp report: error: no pipeline series in VictoriaMetrics" in result.stderr
    assert "for cluster 'no-such-cluster-4711'" in result.stderr
    assert not output.exists()


def test_victoriametrics_error_answer_is_reported() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"status": "error", "errorType": "422", "error": "cannot parse query"})
    vm = VictoriaMetrics("http://vm:8428", 5, client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(ReportError, match="answered 422 to /api/v1/query_range: cannot parse query"):
        vm.query_range("up", 0, 60, 60)


def test_empty_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        build_report("http://127.0.0.1:1", 100, 100)


# -- pure parts -----------------------------------------------------------------------------

def test_chart_paths_break_at_gaps_and_skip_non_finite_values() -> None:
    points = [(0.0, 1.0), (60.0, 2.0), (120.0, math.nan), (180.0, 3.0), (240.0, 4.0), (900.0, 5.0)]
    svg = svg_chart([Line("a", points, "#123456")], 0, 900, "s", 60, "t")
    (d,) = re.findall(r'<path class="series" d="([^"]+)"', svg)
    assert d.count("M") == 2  # [0, 60], [180, 240]; 900 alone (a gap) is a dot
    assert 'data-points="4"' in svg and svg.count("<circle") == 1
    assert "no data" in svg_chart([Line("a", [], "#000")], 0, 60, "", 60, "t")


def test_scales_and_formats() -> None:
    assert [nice_ceiling(v) for v in (0, 0.7, 1.0, 13, 31, 101)] == [1.0, 0.8, 1.0, 15, 40, 120]
    assert format_value(0.0123, "s") == "12.3 ms" and format_value(45, "s") == "45 s"
    assert format_value(1800, "s") == "30 min" and format_value(0.995, "%") == "99.5 %"
    assert format_value(math.nan, "s") == "–"
    assert auto_step(3600) == 60 and auto_step(86400) == 300


def test_render_html_without_victoriametrics() -> None:
    data = Data(start=0, end=600, step=60, url="http://vm:8428", cluster=None)
    line = [(float(t), 0.01 * (t // 60 + 1)) for t in range(60, 601, 60)]
    data.ranges = {"sli": {("c",): [(t, v * 100) for t, v in line]}, "threshold": {("c",): [(t, 30.0) for t, _ in line]},
                   "sync_p99": {("c", "n1"): line, ("c", "n2"): line}, "syncs": {("c",): line},
                   "netprog_cluster": {("c",): line}, "netprog_node": {("c", "n1"): line}}
    data.table = {"t_up": {("c", "n1"): 1.0, ("c", "n2"): 0.5}, "t_restore": {("c", "n1"): 2.0}}
    document = render_html(data, "t <&>", max_lines=1)
    assert "<title>t &lt;&amp;&gt;</title>" in document
    assert len(charts(document)["Sync duration p99 by node"]) == 1  # --max-lines
    assert '<td class="bad">50 %</td>' in document


def read_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """A minimal PNG decoder (8-bit RGB/RGBA, not interlaced: what Chromium writes) returning
    the RGB of every pixel, so the test needs no imaging library."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    width, height, depth, colour, _c, _f, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    prev = bytearray(stride)
    pixels: list[bytes] = []
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                row[i] = (row[i] + row[i - bpp]) & 0xFF
        elif kind == 2:
            row = bytearray((a + b) & 0xFF for a, b in zip(row, prev))
        elif kind == 3:
            for i in range(stride):
                left = row[i - bpp] if i >= bpp else 0
                row[i] = (row[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = row[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        pixels.extend(bytes(row[i:i + 3]) for i in range(0, stride, bpp))
        prev = row
    return width, height, pixels
