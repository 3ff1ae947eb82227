"""Shared helpers of the sink tests: derived records, producing, running a sink loop in a
thread, reading back from VictoriaMetrics."""

from __future__ import annotations

import math
import re
import threading
import time
import uuid
from typing import Iterable

import httpx
import orjson
from kafka import KafkaProducer

from contracts.derived import DerivedRecord
from kafka_io.admin import TopicSpec, ensure_topics
from kafka_io.connection import KafkaConnection
from runtime.selfmetrics import Counters
from sinks.loop import LoopSettings, SinkLoop
from sinks.sink import Backoff, BatchingSink, BatchLimits
from sinks.writers import WRITERS, WriterSettings


# How long a fresh sink may take to join its group and read a fresh topic's records.
FIRST_READ_S = 15


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_records(cluster: str, n_nodes: int, n_windows: int, *, end0_ms: int, size_s: int = 60,
                 metric: str = "sync_proxy_rules_duration_seconds") -> list[DerivedRecord]:
    """Node-scope quantile records with distinct, exactly representable values."""
    records = []
    for w in range(n_windows):
        end = end0_ms + w * size_s * 1000
        for n in range(n_nodes):
            base = w * 1000 + n
            records.append(DerivedRecord(
                kind="quantiles", scope="node", cluster=cluster, node=f"node-{n:03d}",
                window_start_ms=end - size_s * 1000, window_end_ms=end, metric=metric,
                labels={"ip_family": "IPv4"},
                values={"p50": base + 0.5, "p99": base + 0.99, "count": float(base), "mean": None},
                contributors={"scrapes": 4, "nodes": 1},
            ))
    return records


_created: set[str] = set()


def create_topic(connection: KafkaConnection, topic: str, partitions: int = 1) -> None:
    """Create the topic up front (no auto-creation race with a consumer's first metadata)."""
    if topic in _created:
        return
    ensure_topics(connection, [TopicSpec(topic, partitions)], client_id="kpp-sink-tests")
    _created.add(topic)


def produce(connection: KafkaConnection, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> int:
    create_topic(connection, topic)
    producer = KafkaProducer(**connection.kafka_python_kwargs(), acks="all", linger_ms=5)
    count = 0
    try:
        for key, value in messages:
            producer.send(topic, key=key, value=value)
            count += 1
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=5)
    return count


def produce_records(connection: KafkaConnection, topic: str, records: Iterable[DerivedRecord]) -> int:
    return produce(connection, topic, ((r.key, r.encode()) for r in records))


def expected_points(records: Iterable[DerivedRecord]) -> int:
    return sum(1 for r in records for v in r.values.values() if v is not None)


class LoopThread:
    """A SinkLoop running in a thread, like `kpp sink` but in-process."""

    def __init__(self, connection: KafkaConnection, to: str, url: str, topics: list[str], *,
                 group: str | None = None, dlq_topic: str | None = None, raw_topic: str | None = None,
                 labels: dict[str, str] | None = None, limits: BatchLimits | None = None,
                 backoff: Backoff | None = None, timeout_s: float = 5.0) -> None:
        writer = WRITERS[to](WriterSettings(url=url, timeout_s=timeout_s))
        self.counters = Counters()
        self.loop = SinkLoop(
            connection, writer, BatchingSink(writer, limits or BatchLimits(max_points=2000, max_age_s=0.3)),
            LoopSettings(topics=tuple(topics), group_id=group or unique("g"),
                         dlq_topic=dlq_topic or unique("dlq"), raw_topic=raw_topic, extra_labels=labels or {},
                         lag_interval_s=0.5),
            self.counters, backoff or Backoff(base_s=0.2, cap_s=2.0),
        )
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.loop.run(self.stop_event)
        except BaseException as exc:  # noqa: BLE001 (reported by stop())
            self.error = exc

    def __enter__(self) -> "LoopThread":
        self.thread.start()
        assert self.loop.started.wait(30), "the sink loop did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "the sink loop did not stop"
        if self.error is not None:
            raise self.error

    def wait_records(self, count: int, timeout: float) -> bool:
        """Until `count` records were handled (written, empty or dead-lettered) and committed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.handled() >= count and not len(self.loop.sink):
                return True
            if self.error is not None:
                raise self.error
            time.sleep(0.1)
        return False

    def handled(self) -> int:
        return int(sum(self.loop.committed_offsets().values()))


# -- VictoriaMetrics read-back --------------------------------------------------------------


def vm_flush(url: str) -> None:
    httpx.get(f"{url}/internal/force_flush", timeout=10).raise_for_status()


def vm_export(url: str, match: str) -> list[dict]:
    """/api/v1/export lines (VictoriaMetrics writes ±Inf and NaN bare: made parseable here)."""
    vm_flush(url)
    response = httpx.get(f"{url}/api/v1/export", params={"match[]": match, "nocache": "1"}, timeout=30)
    response.raise_for_status()
    out = []
    for line in response.text.splitlines():
        if line.strip():
            head, sep, tail = line.partition('"values":[')
            values, sep2, rest = tail.partition("]")
            values = re.sub(r"(\+Inf|-Inf|NaN)", r'"\1"', values)
            obj = orjson.loads(head + sep + values + sep2 + rest)
            obj["values"] = [float(v) for v in obj["values"]]
            out.append(obj)
    return out


def vm_points(url: str, match: str) -> dict[tuple, list[tuple[int, float]]]:
    """{(name, sorted labels...): [(timestamp_ms, value), ...]}"""
    series = {}
    for obj in vm_export(url, match):
        metric = dict(obj["metric"])
        name = metric.pop("__name__")
        key = (name, tuple(sorted(metric.items())))
        series.setdefault(key, []).extend(zip(obj["timestamps"], obj["values"]))
    return series


def vm_query(url: str, query: str, time_s: float) -> list[dict]:
    vm_flush(url)
    response = httpx.get(f"{url}/api/v1/query", params={"query": query, "time": str(time_s), "nocache": "1"},
                         timeout=30)
    response.raise_for_status()
    return response.json()["data"]["result"]


def wait_for(predicate, timeout: float, interval: float = 0.25):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b
