"""Round trips through real Kafka into real stores: every writer, exact values back."""

from __future__ import annotations

import math
import time
from pathlib import Path

import httpx
import pytest

from contracts.derived import DerivedRecord
from kafka_io.connection import KafkaConnection
from contracts.records import Sample, ScrapeRecord
from tests.sinks import servers
from tests.sinks.helpers import (
    FIRST_READ_S, LoopThread, create_topic, expected_points, make_records, produce, produce_records, unique,
    vm_points, vm_query,
)

pytestmark = pytest.mark.integration


def expected_series(records: list[DerivedRecord], extra: dict[str, str] | None = None) -> dict:
    out: dict = {}
    for r in records:
        labels = {"cluster": r.cluster, "scope": r.scope, "window": f"{r.window_size_s}s", **r.labels,
                  **(extra or {})}
        if r.node is not None:
            labels["node"] = r.node
        for key, value in r.values.items():
            if value is None:
                continue
            out.setdefault((f"kubeproxy:{r.metric}:{key}", tuple(sorted(labels.items()))), []).append(
                (r.window_end_ms, value))
    return out


@pytest.mark.parametrize("to", ["victoriametrics", "remote-write", "influx"])
def test_round_trip_into_victoriametrics(kafka: KafkaConnection, vm_url: str, topic_name: str, to: str) -> None:
    cluster = unique("rt")
    end0 = (int(time.time()) // 60 - 30) * 60_000
    records = make_records(cluster, n_nodes=5, n_windows=6, end0_ms=end0)
    create_topic(kafka, topic_name, partitions=3)
    produce_records(kafka, topic_name, records)
    with LoopThread(kafka, to, vm_url, [topic_name], labels={"env": "test"}) as sink:
        assert sink.wait_records(len(records), FIRST_READ_S)
    got = vm_points(vm_url, f'{{cluster="{cluster}"}}')
    want = expected_series(records, {"env": "test"})
    if to == "influx":  # VictoriaMetrics joins measurement and field with "_" by default
        want = {(name.rsplit(":", 1)[0] + "_" + name.rsplit(":", 1)[1], labels): v
                for (name, labels), v in want.items()}
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in want.items()}
    assert sink.counters.get("kpp_sink_points_written_total") == expected_points(records)
    # PromQL over the written series gives the exact value back.
    last = records[-1]
    name = "kubeproxy:sync_proxy_rules_duration_seconds:p99" if to != "influx" else \
        "kubeproxy:sync_proxy_rules_duration_seconds_p99"
    result = vm_query(vm_url, f'{name}{{cluster="{cluster}",node="{last.node}"}}', last.window_end_ms / 1000)
    assert [float(r["value"][1]) for r in result] == [last.values["p99"]]


def test_influx_round_trip_with_colon_separator_gives_the_documented_names(
        kafka: KafkaConnection, topic_name: str, tmp_path: Path) -> None:
    """With -influxMeasurementFieldSeparator=: the Influx names equal the other writers'."""
    vm = servers.private_victoriametrics(tmp_path / "vm", "-influxMeasurementFieldSeparator=:")
    vm.start()
    try:
        cluster = unique("sep")
        records = make_records(cluster, 2, 2, end0_ms=1_700_000_040_000)
        produce_records(kafka, topic_name, records)
        with LoopThread(kafka, "influx", vm.url, [topic_name]) as sink:
            assert sink.wait_records(len(records), FIRST_READ_S)
        got = vm_points(vm.url, f'{{cluster="{cluster}"}}')
        assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in expected_series(records).items()}
    finally:
        vm.stop()


def test_special_values_per_protocol(kafka: KafkaConnection, vm_url: str, topic_name: str) -> None:
    """±Inf is written by the Prometheus protocols; NaN is written but VictoriaMetrics drops
    it on ingestion; Influx line protocol has no spelling for either (skipped, counted)."""
    cluster = unique("inf")
    record = DerivedRecord(kind="slo", scope="cluster", cluster=cluster, node=None,
                           window_start_ms=1_700_000_000_000, window_end_ms=1_700_000_300_000,
                           metric="network_programming_duration_seconds",
                           values={"p99": math.inf, "low": -math.inf, "nan": math.nan, "ok": 1.25, "none": None})
    produce_records(kafka, topic_name, [record])
    for to in ("victoriametrics", "remote-write", "influx"):
        with LoopThread(kafka, to, vm_url, [topic_name], labels={"writer": to}) as sink:
            assert sink.wait_records(1, FIRST_READ_S)
        got = vm_points(vm_url, f'{{cluster="{cluster}",writer="{to}"}}')
        values = {name.replace("_", ":").rsplit(":", 1)[1]: [v for _, v in pts] for (name, _), pts in got.items()}
        if to == "influx":
            assert values == {"ok": [1.25]}
            assert sink.counters.get("kpp_sink_points_skipped_total", reason="nonfinite") == 3
        else:
            assert values == {"p99": [math.inf], "low": [-math.inf], "ok": [1.25]}


def test_raw_samples_are_written_with_node_and_cluster(kafka: KafkaConnection, vm_url: str,
                                                      topic_name: str) -> None:
    cluster = unique("raw")
    scrape = ScrapeRecord(
        node="node-a", cluster=cluster, target="http://127.0.0.1:10249/metrics", scrape_ts_ms=1_700_000_012_345,
        up=1, scrape_duration_s=0.01, body_bytes=100,
        samples=(Sample("kubeproxy_sync_proxy_rules_duration_seconds_bucket", {"le": "0.001"}, 3.0),
                 Sample("kubeproxy_sync_proxy_rules_duration_seconds_bucket", {"le": "+Inf"}, 7.0),
                 Sample("kubeproxy_sync_proxy_rules_last_timestamp_seconds", {"ip_family": "IPv4"}, 1.7e9)),
        families={"kubeproxy_sync_proxy_rules_duration_seconds": "histogram"},
    )
    produce(kafka, topic_name, [(scrape.key, scrape.encode())])
    with LoopThread(kafka, "victoriametrics", vm_url, [topic_name], raw_topic=topic_name) as sink:
        assert sink.wait_records(1, FIRST_READ_S)
    got = vm_points(vm_url, f'{{cluster="{cluster}"}}')
    assert got == {
        ("kubeproxy_sync_proxy_rules_duration_seconds_bucket",
         (("cluster", cluster), ("le", "0.001"), ("node", "node-a"))): [(1_700_000_012_345, 3.0)],
        ("kubeproxy_sync_proxy_rules_duration_seconds_bucket",
         (("cluster", cluster), ("le", "+Inf"), ("node", "node-a"))): [(1_700_000_012_345, 7.0)],
        ("kubeproxy_sync_proxy_rules_last_timestamp_seconds",
         (("cluster", cluster), ("ip_family", "IPv4"), ("node", "node-a"))): [(1_700_000_012_345, 1.7e9)],
    }


def test_remote_write_into_prometheus(kafka: KafkaConnection, topic_name: str, tmp_path: Path) -> None:
    """Debian's Prometheus 2.42 as a remote-write receiver (recent timestamps: it refuses
    samples older than about an hour)."""
    prom = servers.prometheus(tmp_path / "prometheus")
    prom.start()
    try:
        cluster = unique("prom")
        end0 = (int(time.time()) // 60 - 5) * 60_000
        records = make_records(cluster, n_nodes=3, n_windows=3, end0_ms=end0)
        produce_records(kafka, topic_name, records)
        with LoopThread(kafka, "remote-write", prom.url, [topic_name]) as sink:
            assert sink.wait_records(len(records), FIRST_READ_S)
        assert sink.counters.get("kpp_sink_dlq_total", reason="rejected") == 0
        want = expected_series(records)
        got: dict = {}
        for name in {n for n, _ in want}:
            response = httpx.get(f"{prom.url}/api/v1/query",
                                 params={"query": f'{name}{{cluster="{cluster}"}}[1h]',
                                         "time": str(time.time())}, timeout=10).json()
            for r in response["data"]["result"]:
                metric = dict(r["metric"])
                key = (metric.pop("__name__"), tuple(sorted(metric.items())))
                got[key] = [(int(round(float(t) * 1000)), float(v)) for t, v in r["values"]]
        assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in want.items()}
    finally:
        prom.stop()


def test_line_protocol_into_influxdb(kafka: KafkaConnection, topic_name: str, tmp_path: Path) -> None:
    """Debian's InfluxDB 1.x: one line per record, one field per value, tags = labels."""
    influx = servers.influxdb(tmp_path / "influxdb")
    influx.start()
    try:
        httpx.post(f"{influx.url}/query", data={"q": "CREATE DATABASE kpp"}, timeout=10).raise_for_status()
        cluster = unique("influx")
        records = make_records(cluster, n_nodes=2, n_windows=3, end0_ms=1_700_000_040_000)
        produce_records(kafka, topic_name, records)
        with LoopThread(kafka, "influx", f"{influx.url}/write?db=kpp", [topic_name]) as sink:
            assert sink.wait_records(len(records), FIRST_READ_S)
        response = httpx.get(f"{influx.url}/query", params={
            "db": "kpp", "epoch": "ms",
            "q": f'SELECT * FROM "kubeproxy:sync_proxy_rules_duration_seconds" WHERE "cluster" = \'{cluster}\''},
            timeout=10).json()
        series = response["results"][0]["series"][0]
        rows = [dict(zip(series["columns"], row)) for row in series["values"]]
        got = sorted((row["time"], row["node"], row["p50"], row["p99"], row["count"]) for row in rows)
        want = sorted((r.window_end_ms, r.node, r.values["p50"], r.values["p99"], r.values["count"])
                      for r in records)
        assert got == want
        assert all(row["ip_family"] == "IPv4" and row["window"] == "60s" and row["scope"] == "node" for row in rows)
    finally:
        influx.stop()

