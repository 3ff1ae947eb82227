"""docs/examples/consume_quantiles.py runs as written against a real broker."""

from __future__ import annotations

import math
import subprocess
import sys
import uuid

import pytest
from kafka import KafkaProducer

from contracts.derived import DerivedRecord
from tests.conftest import REPO

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "docs" / "examples" / "consume_quantiles.py"


def _record(node: str | None, values: dict, labels: dict | None = None) -> DerivedRecord:
    return DerivedRecord(kind="quantiles", scope="node" if node else "cluster", cluster="prod", node=node,
                         window_start_ms=1_767_366_240_000, window_end_ms=1_767_366_300_000,
                         metric="sync_proxy_rules_duration_seconds", values=values, labels=labels or {},
                         contributors={"scrapes": 4, "nodes": 1})


def test_consumer_example_prints_every_record(kafka, tmp_path):
    prefix = f"ex{uuid.uuid4().hex[:8]}"
    records = [
        _record("node-007", {"p50": 0.012, "p90": 0.03, "p99": 0.061, "count": 4.0, "mean": 0.02, "sum": 0.08}),
        _record("node-008", {"p50": None, "p90": None, "p99": None, "count": 0.0, "mean": None, "sum": 0.0},
                labels={"ip_family": "IPv6"}),
        _record(None, {"p50": math.nan, "p90": math.inf, "p99": -math.inf, "count": 2.0}),
    ]
    producer = KafkaProducer(**kafka.kafka_python_kwargs())
    try:
        for r in records:
            producer.send(f"{prefix}.quantiles", key=r.key, value=r.encode(), timestamp_ms=r.window_end_ms)
        producer.flush(30)
    finally:
        producer.close()

    # run from an empty folder: the example needs nothing of this repository
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--bootstrap", kafka.bootstrap, "--topic-prefix", prefix,
                           "--max-records", str(len(records))], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = sorted(proc.stdout.splitlines(), key=lambda line: ("node-007" not in line, "node-008" not in line))
    assert len(lines) == 3, proc.stdout  # (order across partitions is not defined: sorted here)
    assert lines[0] == ("2026-01-02T15:05:00Z  60s  node     node-007  sync_proxy_rules_duration_seconds  "
                        "p50=0.012 p90=0.03 p99=0.061 count=4")
    assert "node-008  sync_proxy_rules_duration_seconds{ip_family=IPv6}  p50=- p90=- p99=- count=0" in lines[1]
    assert "cluster  prod  sync_proxy_rules_duration_seconds  p50=nan p90=inf p99=-inf count=2" in lines[2]
