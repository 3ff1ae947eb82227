"""Helpers shared by the replay, archive and import tests: run `kpp` as a subprocess, read
whole topics, validate derived records against their JSON Schemas."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from functools import lru_cache

import jsonschema
from kafka_io.connection import KafkaConnection, KafkaTopicMissingError
from kafka_io.reader import BEGINNING, END, SyncRangeReader
from tests.conftest import REPO

KINDS = ("rates", "quantiles", "gauges", "health", "slo")
SCHEMAS = REPO / "schemas"


def run_kpp(*args: str, timeout: float = 60.0) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m kpp ARGS`; fails the test with its output unless it exits 0."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "kpp", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, f"kpp {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc, elapsed


def rfc3339(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_all(kafka: KafkaConnection, topics: list[str]) -> list[tuple[str, int, int, bytes | None, bytes, int]]:
    """Every message of the topics as (topic, partition, offset, key, value, timestamp), up
    to the end offsets at the time of the call, per partition in offset order."""
    deadline = time.monotonic() + 15
    while True:
        reader = SyncRangeReader(kafka, topics, start=BEGINNING, stop=END, client_id="kpp-test-read-all")
        try:
            reader.open()
            break
        except KafkaTopicMissingError:
            # a topic created a moment ago may be missing from the first metadata answer
            assert time.monotonic() < deadline, f"one of {topics} does not exist"
            time.sleep(0.2)
    try:
        out = []
        deadline = time.monotonic() + 60
        while not reader.done:
            assert time.monotonic() < deadline, "could not read the topics to their end"
            out.extend((r.topic, r.partition, r.offset, r.key, r.value, r.timestamp_ms) for r in reader.read(0.5))
        return sorted(out, key=lambda m: (m[0], m[1], m[2]))
    finally:
        reader.close()


def derived(kafka: KafkaConnection, prefix: str) -> list[tuple[str, bytes, bytes]]:
    """(kind, key, value) of every message on `<prefix>.<kind>`."""
    names = {f"{prefix}.{k}": k for k in KINDS}
    return [(names[t], k, v) for t, _p, _o, k, v, _ts in read_all(kafka, list(names))]


@lru_cache(maxsize=None)
def _schema(kind: str) -> dict:
    return json.loads((SCHEMAS / f"kube-proxy.{kind}.v1.json").read_text())


def validate_all(records: list[tuple[str, bytes, bytes]]) -> int:
    """Every record validates against its topic's JSON Schema; returns how many were checked."""
    validators = {k: jsonschema.Draft202012Validator(_schema(k)) for k in KINDS}
    for kind, _key, value in set(records):
        validators[kind].validate(json.loads(value))
    return len(set(records))


def identity(kind: str, value: bytes) -> tuple:
    obj = json.loads(value)
    return (kind, obj["scope"], obj["node"], obj["window"]["start_ms"], obj["window"]["end_ms"], obj["metric"],
            tuple(sorted(obj["labels"].items())))


def inside(records, lo: int, hi: int, step_ms: int = 60_000) -> set:
    """The records a replay of [lo, hi] publishes: window inside the range; an SLO record
    counts as the step window ending with it."""
    out = set()
    for r in records:
        _k, _s, _n, start, end, *_ = identity(r[0], r[2])
        if r[0] == "slo":
            start = end - step_ms
        if start >= lo and end <= hi:
            out.add(r)
    return out
