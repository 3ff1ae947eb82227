"""`kpp simulate` as users run it: a subprocess on a free loopback port."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from simulator.model import FAULT_MODES

KPP = Path(sys.executable).with_name("kpp")
BANNER = re.compile(r"^simulating (\d+) kube-proxy nodes \(version (\S+), seed (\S+)\) at "
                    r"http://127\.0\.0\.1:(\d+)/nodes/<node>/metrics$")


def kpp(*args: str) -> list[str]:
    return [str(KPP), *args]


@pytest.fixture
def simulator() -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        kpp("simulate", "--nodes", "12", "--seed", "5", "--port", "0", "--version", "1.25",
            "--fault", "node-003=http500", "--fault", "node-010=missing-families",
            "--slow-seconds", "0.2"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().rstrip("\n")
        yield proc, line
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_help_documents_url_scheme_and_fault_modes() -> None:
    result = subprocess.run(kpp("simulate", "--help"), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "/nodes/<node>/metrics" in result.stdout and "/nodes/<node>/fault" in result.stdout
    for mode in FAULT_MODES:
        assert re.search(rf"^\s+{re.escape(mode)}\s", result.stdout, re.M), mode
    assert "18080" in result.stdout
    top = subprocess.run(kpp("--help"), capture_output=True, text=True, timeout=60)
    assert "serve simulated kube-proxy /metrics for N nodes" in top.stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_then_stops_cleanly_on_signal(
        simulator: tuple[subprocess.Popen[str], str], sig: signal.Signals) -> None:
    proc, line = simulator
    match = BANNER.match(line)
    assert match, line
    assert match.groups()[:3] == ("12", "1.25", "5")
    base = f"http://127.0.0.1:{match[4]}"
    assert httpx.get(f"{base}/nodes").json()[-1] == "node-011"
    ok = httpx.get(f"{base}/nodes/node-000/metrics")
    assert ok.status_code == 200
    assert 'git_version="v1.25.3"' in ok.text
    list(text_string_to_metric_families(ok.text))
    assert httpx.get(f"{base}/nodes/node-003/metrics").status_code == 500
    assert "kubeproxy_" not in httpx.get(f"{base}/nodes/node-010/metrics").text
    assert httpx.post(f"{base}/nodes/node-001/fault", json={"mode": "slow"}).status_code == 200
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=15)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "fault on node-001 switched to slow" in stderr


def test_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(kpp("simulate", "--port", str(port)), capture_output=True,
                                text=True, timeout=60)
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, needle", [
    (["--fault", "node-001=explode"], "NODE=MODE"),
    (["--fault", "node-042=slow", "--nodes", "3"], "node-042"),
    (["--sync-interval", "0"], "sync_interval"),
])
def test_bad_arguments_are_one_line_errors(args: list[str], needle: str) -> None:
    result = subprocess.run(kpp("simulate", "--port", "0", *args), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert needle in result.stderr and "Traceback" not in result.stderr
