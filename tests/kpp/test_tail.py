from __future__ import annotations

import io
import subprocess
import sys
import time
import uuid

import pytest
from kafka import KafkaProducer

from contracts.codec import dumps, loads
from contracts.derived import DerivedRecord
from contracts.errors import ConfigError
from kafka_io.connection import KafkaConnection
from kpp.tail import TableWriter, Unshowable, format_window_end, json_line, parse_since, table_cells

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
    # a Kafka-side problem like an unreachable broker: exit 3 (tests/kpp/test_kafka_errors.py)
    assert result.returncode == 3 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_parse_since() -> None:
    assert parse_since("-10m", now=1000.0) == 400_000
    assert parse_since("2h", now=10_000.0) == 2_800_000
    assert parse_since("2026-01-02T03:04:05Z") == 1767323045000
    for bad in ("yesterday", "2026-01-02T03:04:05"):
        with pytest.raises(ConfigError):
            parse_since(bad)


# -- hostile and broken records ------------------------------------------------------------------

TERMINAL_CONTROLS = ("\x1b", "\x9b", "\r", "\x07", "\x7f", "\x85", "\u202e")
YEAR_287168_MS = 9_000_000_000_000_000


def hostile_record(**changes) -> DerivedRecord:  # noqa: ANN003
    fields = dict(kind="quantiles", scope="node", cluster="c", node="evil\x1b[2J\x1b]0;owned\x07",
                  window_start_ms=1_767_366_000_000, window_end_ms=1_767_366_060_000,
                  metric="sync\x9b31m\u202e", values={"p99": 0.5}, labels={"ip_family": "IPv4\r\x7f\x85"})
    fields.update(changes)
    return DerivedRecord(**fields)


def test_table_cells_escape_every_control_character() -> None:
    cells = table_cells(hostile_record())
    assert not any(c in cell for cell in cells for c in TERMINAL_CONTROLS)
    assert cells[3] == "evil\\x1b[2J\\x1b]0;owned\\x07"
    assert cells[4] == "sync\\x9b31m\\u202e{ip_family=IPv4\\r\\x7f\\x85}"


def test_an_absurd_window_end_is_shown_raw() -> None:
    assert format_window_end(1_767_366_060_000) == "2026-01-02 15:01:00"
    assert format_window_end(YEAR_287168_MS) == f"ms={YEAR_287168_MS}"
    assert format_window_end(-YEAR_287168_MS) == "ms=-9.000000e+15"  # the raw number would not fit
    assert format_window_end(10**300) == "ms=1.000000e+300"
    assert table_cells(hostile_record(window_end_ms=YEAR_287168_MS))[0] == f"ms={YEAR_287168_MS}"


def test_records_of_the_wrong_types_cannot_be_shown() -> None:
    for changes, why in (({"metric": 42}, "metric is int, not a string"),
                         ({"node": 7}, "node is int, not a string"),
                         ({"cluster": None}, "cluster is NoneType, not a string"),
                         ({"labels": {"ip_family": 4}}, "label 'ip_family': a name or value that is not a string")):
        for show in (table_cells, json_line):
            with pytest.raises(Unshowable, match=why):
                show(hostile_record(**changes))
    with pytest.raises(Unshowable, match="not representable as JSON"):
        json_line(hostile_record(window_end_ms=10**300))


def test_json_lines_escape_controls_and_stay_the_same_json() -> None:
    record = hostile_record(node="n\x1b\x7f\x85\U000e0001")
    line = json_line(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    text = line.decode()
    assert text[:-1].isprintable()
    assert loads(line) == loads(record.encode())


def test_table_rows_mark_cut_cells() -> None:
    out = io.StringIO()
    TableWriter(out).write(hostile_record(node="n" * 30))
    row = out.getvalue().splitlines()[1]
    assert "n" * 19 + "…" in row and "n" * 21 not in row


@pytest.fixture
def hostile_topic(kafka: KafkaConnection):
    prefix = f"tail{uuid.uuid4().hex[:8]}"
    good = record("node-000", 1_767_366_060_000, 0.25)
    numeric_metric = loads(good.encode())
    numeric_metric["metric"] = 42
    messages = [hostile_record().encode(),
                dumps(numeric_metric),
                hostile_record(node="far-future", window_end_ms=YEAR_287168_MS).encode(),
                dumps({**loads(good.encode()), "window": {"start_ms": 0, "end_ms": 1e300, "size_s": 60}}),
                good.encode()]
    producer = KafkaProducer(**kafka.kafka_python_kwargs())
    for value in messages:
        producer.send(f"{prefix}.quantiles", key=b"k", value=value)  # one key: one partition, this order
    producer.flush()
    producer.close()
    return prefix


@pytest.mark.integration
def test_table_of_hostile_records_is_escaped_and_skips_what_it_cannot_show(kafka: KafkaConnection,
                                                                           hostile_topic) -> None:
    result = tail(kafka, hostile_topic, "--from-beginning", "--format", "table")
    assert result.returncode == 0, result.stderr
    assert "internal error" not in result.stderr
    assert not any(c in result.stdout + result.stderr for c in TERMINAL_CONTROLS)
    body = result.stdout.splitlines()[1:]
    assert [line.split()[0] for line in body] == ["2026-01-02", f"ms={YEAR_287168_MS}", "ms=1.000000e+300",
                                                  "2026-01-02"]
    assert "evil\\x1b[2J" in body[0] and "far-future" in body[1] and "node-000" in body[3]
    assert "that cannot be shown: metric is int, not a string" in result.stderr
    assert "1 record(s) that cannot be shown skipped" in result.stderr


@pytest.mark.integration
def test_json_lines_of_hostile_records_stay_valid_json(kafka: KafkaConnection, hostile_topic) -> None:
    result = tail(kafka, hostile_topic, "--from-beginning", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert not any(c in result.stdout for c in TERMINAL_CONTROLS)
    shown = [loads(line) for line in result.stdout.splitlines()]
    assert [r["node"] for r in shown] == ["evil\x1b[2J\x1b]0;owned\x07", "far-future", "node-000"]
    assert shown[1]["window"]["end_ms"] == YEAR_287168_MS
    assert "2 record(s) that cannot be shown skipped" in result.stderr


def test_where_reading_starts() -> None:
    from kafka_io.reader import BEGINNING, END, At
    from kpp.tail import start_of

    def args(**given):  # noqa: ANN001, ANN202
        return type("Args", (), {"from_beginning": False, "since": None, **given})()

    assert start_of(args()) == END  # only what comes next
    assert start_of(args(from_beginning=True)) == BEGINNING
    assert start_of(args(since="2026-01-02T03:04:05Z")) == At(1767323045000)


@pytest.mark.integration
def test_a_broker_outage_does_not_flood_the_terminal(private_kafka, tmp_path) -> None:
    """aiokafka logs every failed reconnect at ERROR (tens of lines a second): `kpp tail` keeps
    them back, keeps running through the outage, and shows what comes after it."""
    from kafka_io.admin import TopicSpec, ensure_topics
    from kafka_io.publish import kafka_python_producer
    from tests.conftest import wait_until

    connection = KafkaConnection(bootstrap=private_kafka.address)
    ensure_topics(connection, [TopicSpec("outage.rates", 2)])
    stdout, stderr = tmp_path / "out", tmp_path / "err"
    with open(stdout, "w") as out, open(stderr, "w") as err:
        proc = subprocess.Popen(KPP + ["tail", "rates", "--topic-prefix", "outage", "--kafka-bootstrap",
                                       private_kafka.address, "--format", "json", "--from-beginning"],
                                stdout=out, stderr=err)
    try:
        def publish(r: DerivedRecord) -> None:
            producer = kafka_python_producer(connection, client_id="kpp-test-outage", acks="all")
            producer.send("outage.rates", key=r.key, value=r.encode()).get(30)
            producer.close(10)

        first, second = record("node-000", 60_000, 0.1), record("node-001", 120_000, 0.2)
        publish(first)  # shown once tail reads
        assert wait_until(lambda: stdout.read_text().count("\n") >= 1, 60), stderr.read_text()
        private_kafka.down()
        # while the broker is away (its reconnects fail several times a second): nothing printed
        assert not wait_until(lambda: stderr.read_text().strip(), 5), stderr.read_text()
        assert proc.poll() is None
        private_kafka.up()
        publish(second)
        assert wait_until(lambda: stdout.read_text().count("\n") >= 2, 90), stderr.read_text()
    finally:
        proc.terminate()
        proc.wait(20)
    shown = [DerivedRecord.from_json(loads(line)) for line in stdout.read_text().splitlines()]
    assert shown == [first, second]
    assert stderr.read_text().strip() == ""
