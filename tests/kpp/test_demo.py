"""`kpp demo` (what `make demo` runs) brings up the simulator, one producer per node and every
stage, shows scrapes flowing through Kafka, and ends with the UI address and a PromQL query."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.integration


def test_demo_runs_every_stage(kafka, vm_url, tmp_path: Path) -> None:
    env = os.environ | {"KPP_STATE_DIR": str(tmp_path), "KPP_TOPIC_PREFIX": f"demo{os.getpid()}"}
    result = subprocess.run(
        [sys.executable, "-m", "kpp", "demo", "--nodes", "3", "--duration", "20", "--interval", "2",
         "--sim-port", str(free_port()), "--kafka-bootstrap", kafka.bootstrap],
        env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    assert "simulator, 3 producers, stream worker, sink" in out
    assert re.search(r"nodes reporting 3/3 · scrapes [1-9]\d*", out), out
    assert "failed scrapes 0" in out.splitlines()[-8] or "failed scrapes 0" in out
    assert f"VictoriaMetrics UI: {vm_url}/vmui" in out
    assert "histogram_quantile(0.99" in out and "kubeproxy:sync_proxy_rules_duration_seconds:p99" in out
    logs = tmp_path / "demo" / "logs"
    assert {p.name for p in logs.iterdir()} >= {"simulator.log", "stream.log", "sink.log", "produce-node-000.log"}
    for log in logs.iterdir():
        assert "Traceback" not in log.read_text(), log.name
