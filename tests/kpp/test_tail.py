from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from kafka import KafkaProducer

from contracts.codec import loads
from contracts.derived import DerivedRecord
from contracts.errors import ConfigError
from contracts.kafka import KafkaConnection
from kpp.tail import parse_since

KPP = [sys.executable, "-m", "kpp"]


def record(node: str, end_ms: int, p99: float | None) -> DerivedRecord:
    return DerivedRecord(kind="quantiles", scope="node", cluster="c", node=node, window_start_ms=end_ms - 60_000,
                         window_end_ms=end_ms, metric="sync_proxy_rules_duration_seconds",
                         values={"p99": p99, "count": 3.0}, labels={"ip_family": "IPv4"})


@pytest.fixture
def filled_topic(kafka: KafkaConnection):
    prefix = f"tail{uuid.uuid4().hex[:8]}"
    now_ms = int(time.time() * 1000) // 60_000 * 60_000
    records = [record(f"node-{i % 3:03d}", now_ms - (20 - i) * 60_000, 0.01 * i if i % 4 else None) for i in range(20)]
    producer = KafkaProducer(**kafka.kafka_python_kwargs())
    for r in records:
        producer.send(f"{prefix}.quantiles", key=r.key, value=r.encode(), timestamp_ms=r.window_end_ms)
    producer.send(f"{prefix}.quantiles", key=b"x", value=b"{broken", timestamp_ms=now_ms)
    producer.flush()
    producer.close()
    return prefix, records


def tail(kafka: KafkaConnection, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(KPP + ["tail", "quantiles", "--topic-prefix", prefix, "--kafka-bootstrap", kafka.bootstrap,
                                 "--idle-exit", "3", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.integration
def test_json_from_beginning_with_filters(kafka: KafkaConnection, filled_topic) -> None:
    prefix, records = filled_topic
    result = tail(kafka, prefix, "--from-beginning", "--format", "json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    got = [DerivedRecord.from_json(loads(line)) for line in lines]
    def order(r: DerivedRecord) -> tuple:
        return (r.window_end_ms, r.node)
    assert sorted(got, key=order) == sorted(records, key=order)  # partitions interleave; per key order holds
    for node in ("node-000", "node-001", "node-002"):
        assert [r for r in got if r.node == node] == [r for r in records if r.node == node]
    assert "1 undecodable record(s) skipped" in result.stderr
    only = tail(kafka, prefix, "--from-beginning", "--format", "json", "--node", "node-001")
    assert [loads(line)["node"] for line in only.stdout.splitlines()] == ["node-001"] * 7


@pytest.mark.integration
def test_table_since_relative(kafka: KafkaConnection, filled_topic) -> None:
    prefix, records = filled_topic
    result = tail(kafka, prefix, "--since", "5m", "--format", "table")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("WINDOW END (UTC)")
    expected = [r for r in records if r.window_end_ms >= (time.time() - 300) * 1000 - 60_000]
    body = lines[1:]
    assert 4 <= len(body) <= len(expected) + 1
    # aligned: the METRIC column starts at the same offset on every line
    offsets = {line.index("sync_proxy_rules") for line in body}
    assert len(offsets) == 1 and lines[0].index("METRIC") in offsets
    assert any("p99=-" in line for line in body) or all("p99=" in line for line in body)


@pytest.mark.integration
def test_unknown_topic_is_a_clear_error(kafka: KafkaConnection) -> None:
    result = tail(kafka, f"missing{uuid.uuid4().hex[:6]}", "--from-beginning")
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_parse_since() -> None:
    assert parse_since("-10m", now=1000.0) == 400_000
    assert parse_since("2h", now=10_000.0) == 2_800_000
    assert parse_since("2026-01-02T03:04:05Z") == 1767323045000
    for bad in ("yesterday", "2026-01-02T03:04:05"):
        with pytest.raises(ConfigError):
            parse_since(bad)
