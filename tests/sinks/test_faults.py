"""At-least-once under faults, against real Kafka and real stores: the store away for 60 s,
the sink killed with SIGKILL mid-run, a rebalance, hostile labels, malformed records and
records the store rejects for good."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import jsonschema
import orjson
import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient

from contracts.derived import DerivedRecord
from contracts.dlq import DLQ_SCHEMA
from kafka_io.connection import KafkaConnection
from sinks.sink import Backoff, BatchLimits
from tests.conftest import REPO, free_port
from tests.sinks import servers
from tests.sinks.helpers import (
    FIRST_READ_S, LoopThread, create_topic, expected_points, make_records, produce, produce_records, unique, vm_export,
    vm_points, wait_for,
)

pytestmark = pytest.mark.integration

DLQ_JSON_SCHEMA = orjson.loads((REPO / "schemas" / "kube-proxy.dlq.v1.json").read_bytes())


def dead_letter_body(value: bytes) -> dict:
    """A DLQ message of the sink: the pipeline's dead-letter contract, schema-valid."""
    body = orjson.loads(value)
    jsonschema.validate(body, DLQ_JSON_SCHEMA)
    assert body["schema"] == DLQ_SCHEMA and body["stage"] == "sink"
    return body


def read_topic(connection: KafkaConnection, topic: str, count: int, timeout: float = 20) -> list:
    consumer = KafkaConsumer(topic, **connection.kafka_python_kwargs(), group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False)
    out: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                out.extend(records)
    finally:
        consumer.close()
    return out


def group_offsets(connection: KafkaConnection, group: str) -> dict[int, int]:
    admin = KafkaAdminClient(**connection.kafka_python_kwargs())
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
        return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    finally:
        admin.close()


def end_offsets(connection: KafkaConnection, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(**connection.kafka_python_kwargs(), group_id=None)
    try:
        from kafka.structs import TopicPartition

        partitions = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items() if offset > 0}
    finally:
        consumer.close()


def count_points(url: str, cluster: str) -> int:
    return sum(len(obj["values"]) for obj in vm_export(url, f'{{cluster="{cluster}"}}'))


OUTAGE_S = 60


def test_store_down_for_60_seconds_then_back_every_point_exactly_once(
        kafka: KafkaConnection, topic_name: str, tmp_path: Path) -> None:
    """The store goes away for a minute while records keep arriving: the sink pauses, retries
    with backoff, commits nothing until the store has the data, then writes every point once.
    The private VictoriaMetrics runs without deduplication, so a point written twice would be
    counted twice."""
    vm = servers.private_victoriametrics(tmp_path / "vm", "-dedup.minScrapeInterval=0s")
    vm.start()
    try:
        cluster = unique("down")
        records = make_records(cluster, n_nodes=10, n_windows=40, end0_ms=1_700_000_040_000)
        first, second = records[:100], records[100:]
        create_topic(kafka, topic_name, partitions=3)
        group = unique("g")
        produce_records(kafka, topic_name, first)
        with LoopThread(kafka, "victoriametrics", vm.url, [topic_name], group=group,
                        limits=BatchLimits(max_points=300, max_age_s=0.2),
                        backoff=Backoff(base_s=0.2, cap_s=2.0), timeout_s=2.0) as sink:
            assert sink.wait_records(len(first), FIRST_READ_S)
            commits: list[tuple[float, dict]] = []  # every confirmed commit, timed
            confirmed = sink.loop._commit_done
            sink.loop._commit_done = lambda offsets: (commits.append((time.monotonic(), dict(offsets))),
                                                      confirmed(offsets))
            vm.stop()
            down_at = time.monotonic()
            committed_before = dict(sink.loop.committed_offsets())
            # Records keep arriving while the store is away: 25 every 4 s, over 48 s.
            producer = threading.Thread(target=lambda: [produce_records(kafka, topic_name, second[i:i + 25])
                                                        or time.sleep(4) for i in range(0, len(second), 25)])
            producer.start()
            assert wait_for(lambda: sink.loop.store_down, 15), "the sink did not notice the store is away"
            max_filling = max_held = 0
            while time.monotonic() - down_at < OUTAGE_S:
                max_filling = max(max_filling, sink.loop.sink.buffered_points)
                max_held = max(max_held, sink.loop.buffered_points)
                assert sink.loop.committed_offsets() == committed_before, "committed while the store was down"
                time.sleep(0.2)
            producer.join()
            assert sink.loop.store_down and sink.counters.get("kpp_sink_paused") == 1
            # Backoff capped at 2 s (times [0.5, 1)): a retry every 1-2 s once the cap is reached.
            assert sink.counters.get("kpp_sink_retries_total") >= OUTAGE_S / 2 - 5
            # Bounded memory, whatever arrives meanwhile (the partitions are paused): the batch
            # being filled holds at most its limit plus one poll (2000 records, 3 points each),
            # and with the batch waiting for its retry, twice that.
            assert max_filling <= 300 + 3 * 2000 and 0 < max_held <= 2 * (300 + 3 * 2000)
            assert group_offsets(kafka, group) == {p: o for (_, p), o in committed_before.items()}
            vm.start()
            up_at = time.monotonic()
            assert sink.wait_records(len(records), 40), "the sink did not catch up after the store came back"
        assert not sink.loop.store_down
        assert all(at >= up_at for at, _ in commits), "an offset was committed before the store was back"
        assert count_points(vm.url, cluster) == expected_points(records)
        got = vm_points(vm.url, f'{{cluster="{cluster}"}}')
        assert sum(len(v) for v in got.values()) == expected_points(records)
        assert all(len(v) == len(set(t for t, _ in v)) for v in got.values())
        assert group_offsets(kafka, group) == end_offsets(kafka, topic_name)
    finally:
        vm.stop()


def _sink_process(kafka: KafkaConnection, vm_url: str, topic: str, group: str, listen: str, dlq: str,
                  log: Path) -> subprocess.Popen:
    argv = [sys.executable, "-m", "kpp", "sink", "--to", "victoriametrics", "--url", vm_url, "--topics", topic,
            "--group", group, "--listen", listen, "--batch-points", "600", "--batch-interval", "0.2",
            "--dlq-topic", dlq, "--kafka-bootstrap", kafka.bootstrap]
    with open(log, "ab") as fh:
        return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=fh)


def _metric(listen: str, name: str) -> float:
    try:
        text = httpx.get(f"http://{listen}/metrics", timeout=2).text
    except httpx.HTTPError:
        return -1.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_sink_killed_with_sigkill_mid_run_and_restarted_loses_nothing(
        kafka: KafkaConnection, vm_url: str, topic_name: str, tmp_path: Path) -> None:
    cluster = unique("kill")
    log = tmp_path / "sink.log"
    records = make_records(cluster, n_nodes=50, n_windows=60, end0_ms=1_700_000_040_000)  # 3000 records
    total = expected_points(records)
    create_topic(kafka, topic_name, partitions=2)
    group, listen, dlq = unique("g"), f"127.0.0.1:{free_port()}", unique("dlq")
    # Records keep coming (100 every 0.2 s) while the sink runs, so the kill lands mid-stream.
    feeder = threading.Thread(target=lambda: [produce_records(kafka, topic_name, records[i:i + 100])
                                              or time.sleep(0.2) for i in range(0, len(records), 100)])
    feeder.start()
    proc = _sink_process(kafka, vm_url, topic_name, group, listen, dlq, log)
    try:
        assert wait_for(lambda: _metric(listen, "kpp_sink_points_written_total") > 0, 40), \
            "the sink process wrote nothing"
        time.sleep(0.5)
        written = _metric(listen, "kpp_sink_points_written_total")
        assert proc.poll() is None, log.read_text()
        assert 0 < written < total, "the sink finished before it could be killed: make the input larger"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        committed = group_offsets(kafka, group)
        assert sum(committed.values()) < len(records)
        feeder.join()
        proc = _sink_process(kafka, vm_url, topic_name, group, listen, dlq, log)
        assert wait_for(lambda: group_offsets(kafka, group) == end_offsets(kafka, topic_name), 60), \
            "the restarted sink did not commit everything"
        # Self-observability of the restarted process.
        text = httpx.get(f"http://{listen}/metrics", timeout=5).text
        for name in ("kpp_sink_points_written_total", "kpp_sink_batches_total", "kpp_sink_consumer_lag",
                     "kpp_sink_store_up"):
            assert name in text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert count_points(vm_url, cluster) == total


def test_rebalance_between_two_sinks_loses_nothing(kafka: KafkaConnection, vm_url: str, topic_name: str) -> None:
    cluster = unique("rebal")
    records = make_records(cluster, n_nodes=20, n_windows=40, end0_ms=1_700_000_040_000)
    create_topic(kafka, topic_name, partitions=4)
    group = unique("g")
    limits = BatchLimits(max_points=200, max_age_s=0.2)
    produce_records(kafka, topic_name, records[:200])
    first = LoopThread(kafka, "victoriametrics", vm_url, [topic_name], group=group, limits=limits).__enter__()
    second = LoopThread(kafka, "victoriametrics", vm_url, [topic_name], group=group, limits=limits).__enter__()
    try:
        produce_records(kafka, topic_name, records[200:500])
        time.sleep(2)
        first.stop()  # leaves the group: its partitions move to the second sink
        produce_records(kafka, topic_name, records[500:])
        assert wait_for(lambda: group_offsets(kafka, group) == end_offsets(kafka, topic_name), 60)
    finally:
        second.stop()
        if first.thread.is_alive():
            first.stop()
    assert count_points(vm_url, cluster) == expected_points(records)


HOSTILE = ['a"b', "back\\slash", "new\nline", "com,ma", "sp ace", "eq=ual", "ünï©ødé ☃", '"} evil 1\n',
           "trailing\\", '\\"', "x\\,y", "tab\there", "{a=\"b\"}", "🙂"]


@pytest.mark.parametrize("to", ["victoriametrics", "remote-write", "influx"])
def test_hostile_labels_round_trip_unchanged(kafka: KafkaConnection, vm_url: str, topic_name: str,
                                             to: str) -> None:
    cluster = unique("hostile")
    records = []
    for i, text in enumerate(HOSTILE):
        records.append(DerivedRecord(
            kind="gauges", scope="node", cluster=cluster, node=f"node {text}",
            window_start_ms=1_700_000_000_000 + 60_000 * i, window_end_ms=1_700_000_000_000 + 60_000 * (i + 1), metric="sync_proxy_rules_last_timestamp_seconds",
            labels={"ip_family": text, "bad-name.x": text}, values={"max": float(i)}))
    produce_records(kafka, topic_name, records)
    dlq = unique("dlq")
    with LoopThread(kafka, to, vm_url, [topic_name], dlq_topic=dlq) as sink:
        assert sink.wait_records(len(records), FIRST_READ_S)
    got = vm_points(vm_url, f'{{cluster="{cluster}"}}')
    representable = [r for r in records if to != "influx" or "\n" not in r.node]
    want = {}
    for r in representable:
        name = "kubeproxy:sync_proxy_rules_last_timestamp_seconds:max"
        if to == "influx":
            name = "kubeproxy:sync_proxy_rules_last_timestamp_seconds_max"
        labels = {"cluster": cluster, "node": r.node, "scope": "node", "window": f"{r.window_size_s}s",
                  "ip_family": r.labels["ip_family"], "bad_name_x": r.labels["bad-name.x"]}
        want[(name, tuple(sorted(labels.items())))] = [(r.window_end_ms, r.values["max"])]
    assert got == want
    if to == "influx":  # a line break cannot be carried in line protocol: dead-lettered, not mangled
        dead = read_topic(kafka, dlq, len(records) - len(representable))
        assert sorted(dead_letter_body(m.value)["reason"] for m in dead) == ["unrepresentable"] * 2
        assert {dead_letter_body(m.value)["value"] for m in dead} == \
            {r.encode().decode() for r in records if "\n" in r.node}


def test_malformed_records_go_to_the_dlq_with_the_reason(kafka: KafkaConnection, vm_url: str,
                                                        topic_name: str) -> None:
    cluster = unique("bad")
    good = make_records(cluster, 1, 1, end0_ms=1_700_000_040_000)[0]
    messages = [(b"k1", b"\xff\xfe not json"), (b"k2", b'{"schema": "kube-proxy.nope/v1"}'),
                (b"k3", b'{"schema": "kube-proxy.rates/v1", "scope": "node"}'), (good.key, good.encode())]
    produce(kafka, topic_name, messages)
    dlq = unique("dlq")
    with LoopThread(kafka, "victoriametrics", vm_url, [topic_name], dlq_topic=dlq) as sink:
        assert sink.wait_records(len(messages), FIRST_READ_S)
    dead = sorted(read_topic(kafka, dlq, 3), key=lambda m: m.key)
    assert [m.key for m in dead] == [b"k1", b"k2", b"k3"]
    bodies = [dead_letter_body(m.value) for m in dead]
    assert all(b["reason"] == "malformed" and b["stage"] == "sink" and b["source"]["topic"] == topic_name
               for b in bodies)
    assert bodies[0]["value"] is None and bodies[0]["value_base64"]
    assert bodies[1]["value"] == messages[1][1].decode() and "unknown schema" in bodies[1]["error"]
    assert sink.counters.get("kpp_sink_dlq_total", reason="malformed") == 3
    assert count_points(vm_url, cluster) == expected_points([good])


def test_records_the_store_rejects_go_to_the_dlq_with_its_answer(kafka: KafkaConnection, topic_name: str,
                                                                tmp_path: Path) -> None:
    """Prometheus refuses samples older than its head block (400, "out of bounds"): that record
    goes to the DLQ with the answer, the others of the same batch are written."""
    prom = servers.prometheus(tmp_path / "prometheus")
    prom.start()
    try:
        cluster = unique("rej")
        now_min = int(time.time()) // 60 * 60_000
        recent = make_records(cluster, 4, 2, end0_ms=now_min - 120_000)
        old = make_records(cluster, 1, 1, end0_ms=now_min - 6 * 3600_000, metric="old_metric")
        records = recent[:3] + old + recent[3:]
        produce_records(kafka, topic_name, records)
        dlq = unique("dlq")
        with LoopThread(kafka, "remote-write", prom.url, [topic_name], dlq_topic=dlq,
                        limits=BatchLimits(max_points=1000, max_age_s=1.0)) as sink:
            assert sink.wait_records(len(records), FIRST_READ_S)
        [dead] = read_topic(kafka, dlq, 1)
        body = dead_letter_body(dead.value)
        assert body["reason"] == "rejected" and body["store"]["status"] == 400
        assert "out of bounds" in body["store"]["answer"]
        assert DerivedRecord.decode(body["value"]) == old[0]
        response = httpx.get(f"{prom.url}/api/v1/query", params={
            "query": f'{{cluster="{cluster}"}}[1h]', "time": str(time.time())}, timeout=10).json()
        assert sum(len(r["values"]) for r in response["data"]["result"]) == expected_points(recent)
    finally:
        prom.stop()


def test_rebalance_while_records_are_held_flushes_and_commits_them(kafka: KafkaConnection, vm_url: str,
                                                                   topic_name: str) -> None:
    """kafka-python 3 calls the rebalance listener on its IO thread, where a blocking commit
    raises: the sink flushes, then awaits the commit, and goes on."""
    cluster = unique("held")
    records = make_records(cluster, n_nodes=10, n_windows=10, end0_ms=1_700_000_040_000)
    create_topic(kafka, topic_name, partitions=2)
    group = unique("g")
    hold = BatchLimits(max_points=10**6, max_age_s=120)  # nothing is flushed but by the rebalance
    first = LoopThread(kafka, "victoriametrics", vm_url, [topic_name], group=group, limits=hold).__enter__()
    second = None
    try:
        produce_records(kafka, topic_name, records)
        assert wait_for(lambda: len(first.loop.sink) == len(records), FIRST_READ_S)
        assert group_offsets(kafka, group) == {}
        second = LoopThread(kafka, "victoriametrics", vm_url, [topic_name], group=group, limits=hold).__enter__()
        assert wait_for(lambda: group_offsets(kafka, group) == end_offsets(kafka, topic_name), 30), \
            "the revoked partitions' records were not flushed and committed"
        assert first.thread.is_alive() and first.error is None
        assert first.counters.get("kpp_sink_rebalances_total") >= 1
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert count_points(vm_url, cluster) == expected_points(records)


class FlakyWriter:
    """Wraps a writer's send: the calls named in `fail` raise StoreUnavailable."""

    def __init__(self, writer, fail: set[int]) -> None:  # noqa: ANN001
        self.calls = 0
        self.fail = fail
        self._send = writer.send
        writer.send = self.send

    def send(self, body: bytes) -> None:
        from sinks.writers import StoreUnavailable

        self.calls += 1
        if self.calls in self.fail:
            raise StoreUnavailable(f"flaky write {self.calls}")
        self._send(body)


def test_pipelined_writes_commit_in_order_and_never_past_a_failed_batch(
        kafka: KafkaConnection, vm_url: str, topic_name: str) -> None:
    cluster = unique("pipe")
    records = make_records(cluster, n_nodes=50, n_windows=40, end0_ms=1_700_000_040_000)  # 2000 records
    create_topic(kafka, topic_name, partitions=2)
    produce_records(kafka, topic_name, records)
    group = unique("g")
    sink = LoopThread(kafka, "victoriametrics", vm_url, [topic_name], group=group,
                      limits=BatchLimits(max_points=300, max_age_s=0.2), backoff=Backoff(base_s=0.1, cap_s=0.2))
    flaky = FlakyWriter(sink.loop.writer, fail={2, 3})
    commits: list[dict] = []
    written: list[dict] = []  # the offsets the store acknowledged, batch by batch
    done = sink.loop._commit_done
    sink.loop._commit_done = lambda offsets: (commits.append(dict(offsets)), done(offsets))
    acknowledged = sink.loop._acknowledged
    sink.loop._acknowledged = lambda result, items, seconds: (written.append(dict(result.commit)),
                                                              acknowledged(result, items, seconds))[1]
    with sink:
        assert sink.wait_records(len(records), 60)
    assert flaky.calls >= 4 and sink.counters.get("kpp_sink_retries_total") == 2
    # Every commit names offsets the store acknowledged before, and they only grow.
    seen: dict = {}
    acked: dict = {}
    for batch in written:
        for tp, offset in batch.items():
            acked[tp] = max(acked.get(tp, 0), offset)
    for commit in commits:
        for tp, offset in commit.items():
            assert offset >= seen.get(tp, 0), "a commit went backwards"
            assert offset <= acked[tp]
            seen[tp] = offset
    # Batches were acknowledged in order: per partition, each batch starts where the last ended.
    for tp in acked:
        ends = [b[tp] for b in written if tp in b]
        assert ends == sorted(ends)
    assert group_offsets(kafka, group) == end_offsets(kafka, topic_name)
    assert count_points(vm_url, cluster) == expected_points(records)
