"""What the store refuses or drops, through a real `kpp sink` process, real Kafka and a real
VictoriaMetrics: a record too large for the store is dead-lettered (its dead letter cut to fit
Kafka) and the sink goes on and commits; points the store would drop without a word (too old
for its retention, too far ahead, before 1970-04-26) are dead-lettered and counted as dropped,
never as written."""

from __future__ import annotations

import dataclasses
import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
from kafka import KafkaProducer

from contracts.derived import DerivedRecord
from contracts.dlq import MAX_ORIGINAL_BYTES
from kafka_io.connection import KafkaConnection
from sinks.timerange import DAY_MS, TOO_FAR_AHEAD, TOO_OLD
from tests.conftest import REPO, free_port
from tests.sinks import servers
from tests.sinks.helpers import FIRST_READ_S, create_topic, expected_points, make_records, unique, vm_flush, wait_for
from tests.sinks.test_faults import dead_letter_body, end_offsets, group_offsets, read_topic

pytestmark = pytest.mark.integration


def produce_large(connection: KafkaConnection, topic: str, records: list[DerivedRecord]) -> None:
    """Gzip and a raised request limit let a record over 1 MiB into Kafka (its batch is small)."""
    create_topic(connection, topic)
    producer = KafkaProducer(**connection.kafka_python_kwargs(), acks="all", compression_type="gzip",
                             max_request_size=8 * 1024 * 1024)
    try:
        for record in records:
            producer.send(topic, key=record.key, value=record.encode())
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)


class SinkProcess:
    def __init__(self, kafka: KafkaConnection, url: str, topic: str, log: Path, *extra: str) -> None:
        self.group, self.dlq, self.listen = unique("g"), unique("dlq"), f"127.0.0.1:{free_port()}"
        self.log = log
        argv = [sys.executable, "-m", "kpp", "sink", "--to", "victoriametrics", "--url", url, "--topics", topic,
                "--group", self.group, "--listen", self.listen, "--batch-interval", "0.2", "--dlq-topic", self.dlq,
                "--kafka-bootstrap", kafka.bootstrap, *extra]
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=fh)

    def metric(self, name: str, **labels: str) -> float | None:
        """The sum of a metric's samples whose labels include `labels`; None if it is absent."""
        text = httpx.get(f"http://{self.listen}/metrics", timeout=5).text
        found = None
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                head, value = line.rsplit(" ", 1)
                if all(f'{k}="{v}"' in head for k, v in labels.items()):
                    found = (found or 0.0) + float(value)
        return found

    def healthz(self) -> int:
        return httpx.get(f"http://{self.listen}/healthz", timeout=5).status_code

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_committed(kafka: KafkaConnection, sink: SinkProcess, topic: str) -> None:
    done = wait_for(lambda: sink.proc.poll() is not None or group_offsets(kafka, sink.group) == end_offsets(kafka, topic),
                    FIRST_READ_S + 30, interval=0.5)
    assert sink.proc.poll() is None, sink.log.read_text()[-3000:]
    assert done, f"the sink did not commit everything:\n{sink.log.read_text()[-3000:]}"


def vm_series_points(url: str, cluster: str) -> list[int]:
    """Timestamps of every point of the cluster, over all time (export's default ends now)."""
    vm_flush(url)
    response = httpx.get(f"{url}/api/v1/export", timeout=30, params={
        "match[]": f'{{cluster="{cluster}"}}', "start": "0", "end": str(10**13), "nocache": "1"})
    response.raise_for_status()
    return sorted(t for line in response.text.splitlines() if line for t in orjson.loads(line)["timestamps"])


def test_a_record_too_large_for_the_store_is_dead_lettered_and_the_sink_commits(
        kafka: KafkaConnection, vm_url: str, topic_name: str, tmp_path: Path) -> None:
    """VictoriaMetrics refuses a line over 256 KiB (400); the dead letter of a 1.5 MB record would
    exceed Kafka's 1 MiB: it carries the first 64 KiB, the size and the hash."""
    cluster = unique("big")
    good = make_records(cluster, n_nodes=2, n_windows=2, end0_ms=1_700_000_040_000)
    huge = make_records(cluster, 1, 1, end0_ms=1_700_000_040_000, metric="huge_metric")[0]
    huge = dataclasses.replace(huge, labels={"big": "x" * 1_500_000})
    records = [good[0], good[1], huge, good[2], good[3]]
    produce_large(kafka, topic_name, records)
    sink = SinkProcess(kafka, vm_url, topic_name, tmp_path / "sink.log")
    try:
        wait_committed(kafka, sink, topic_name)
        assert sink.healthz() == 200
        assert sink.metric("kpp_sink_dlq_total", reason="rejected") == 1
        assert sink.metric("kpp_sink_points_written_total") == expected_points(good)
    finally:
        sink.stop()
    [dead] = read_topic(kafka, sink.dlq, 1)
    assert len(dead.value) < 1024 * 1024
    body = dead_letter_body(dead.value)
    original = huge.encode()
    assert body["reason"] == "rejected" and body["store"]["status"] == 400
    assert body["value_truncated"] is True and body["value_bytes"] == len(original)
    assert body["value_sha256"] == hashlib.sha256(original).hexdigest()
    assert original.startswith(body["value"].encode()) and len(body["value"]) == MAX_ORIGINAL_BYTES
    assert len(vm_series_points(vm_url, cluster)) == expected_points(good)


def test_vm_drops_points_far_ahead_and_misplaces_points_before_1970_04_26(vm_url: str) -> None:
    """The premise of the sink's timestamp range, checked on the store itself: it answers 204
    to every one of these points."""
    cluster = unique("premise")
    now = int(time.time() * 1000)
    stamps = {"y2100": 4_102_444_800_000, "ahead3d": now + 3 * DAY_MS, "y1970": 60_000, "now": now}
    for name, ts in stamps.items():
        response = httpx.post(f"{vm_url}/api/v1/import/prometheus", timeout=10,
                              content=f'premise_{name}{{cluster="{cluster}"}} 1 {ts}\n')
        assert response.status_code == 204
    assert vm_series_points(vm_url, cluster) == sorted([now, 60_000 * 1000])  # 1970 ms read as seconds


def test_points_the_store_would_drop_are_dead_lettered_and_counted_dropped(
        kafka: KafkaConnection, vm_url: str, topic_name: str, tmp_path: Path) -> None:
    cluster = unique("ts")
    now_min = int(time.time()) // 60 * 60_000
    good = make_records(cluster, n_nodes=2, n_windows=2, end0_ms=now_min - 120_000)
    y2100 = make_records(cluster, 1, 1, end0_ms=4_102_444_800_000, metric="y2100")
    ahead = make_records(cluster, 1, 1, end0_ms=now_min + 3 * DAY_MS, metric="ahead")
    y1970 = make_records(cluster, 1, 1, end0_ms=60_000, metric="y1970")
    records = [good[0], *y2100, good[1], *ahead, good[2], *y1970, good[3]]
    produce_large(kafka, topic_name, records)
    sink = SinkProcess(kafka, vm_url, topic_name, tmp_path / "sink.log")
    try:
        wait_committed(kafka, sink, topic_name)
        assert sink.metric("kpp_sink_points_written_total") == expected_points(good)
        assert sink.metric("kpp_sink_points_dropped_total", reason=TOO_FAR_AHEAD) == expected_points(y2100 + ahead)
        assert sink.metric("kpp_sink_points_dropped_total", reason=TOO_OLD) == expected_points(y1970)
        assert sink.metric("kpp_sink_dlq_total", reason=TOO_FAR_AHEAD) == 2
    finally:
        sink.stop()
    dead = [dead_letter_body(m.value) for m in read_topic(kafka, sink.dlq, 3)]
    by_metric = {DerivedRecord.decode(b["value"]).metric: b for b in dead}
    assert len(dead) == 3 and set(by_metric) == {"y2100", "ahead", "y1970"}
    assert by_metric["y2100"]["reason"] == by_metric["ahead"]["reason"] == TOO_FAR_AHEAD
    assert by_metric["y1970"]["reason"] == TOO_OLD and "1970-04-26" in by_metric["y1970"]["error"]
    assert vm_series_points(vm_url, cluster) == sorted(r.window_end_ms for r in good for v in r.values.values()
                                                        if v is not None)


def test_records_older_than_the_retention_the_store_states_are_dead_lettered(
        kafka: KafkaConnection, topic_name: str, tmp_path: Path) -> None:
    """A VictoriaMetrics that keeps one month (its default): the sink learns it from /flags."""
    vm = servers.private_victoriametrics(tmp_path / "vm", "-retentionPeriod=1")
    vm.start()
    try:
        cluster = unique("ret")
        now_min = int(time.time()) // 60 * 60_000
        recent = make_records(cluster, 2, 1, end0_ms=now_min - 60_000)
        old = make_records(cluster, 1, 1, end0_ms=now_min - 40 * DAY_MS, metric="old")
        produce_large(kafka, topic_name, [recent[0], *old, recent[1]])
        sink = SinkProcess(kafka, vm.url, topic_name, tmp_path / "sink.log")
        try:
            wait_committed(kafka, sink, topic_name)
            assert sink.metric("kpp_sink_points_dropped_total", reason=TOO_OLD) == expected_points(old)
            assert sink.metric("kpp_sink_points_written_total") == expected_points(recent)
        finally:
            sink.stop()
        [dead] = read_topic(kafka, sink.dlq, 1)
        body = dead_letter_body(dead.value)
        assert body["reason"] == TOO_OLD and "retention" in body["error"]
        assert len(vm_series_points(vm.url, cluster)) == expected_points(recent)
    finally:
        vm.stop()
