"""`kpp topics ensure` and the one topic-creating function every stage uses
(kafka_io/admin.py): what to create, what to refuse, and that a second run changes
nothing, against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from kafka_io.connection import KafkaConnection
from kafka_io.admin import TopicDescription, TopicSpec, delete_topics, describe_topics, ensure_topics, mismatch_message, plan_topics
from kpp.topics import describe_lines
from streams.app import owned_topics, topic_specs
from streams.config import StreamSettings
from tests.conftest import wait_until


# -- the plan (pure) -------------------------------------------------------------------------------

def test_plan_creates_missing_and_keeps_matching() -> None:
    specs = [TopicSpec("p.samples", 4, same_partitions=True), TopicSpec("p.rates", 4)]
    plan = plan_topics(specs, {"p.samples": 4})
    assert [s.name for s in plan.to_create] == ["p.rates"]
    assert plan.present == ("p.samples",)
    assert plan.refused == () and plan.differing == ()


def test_plan_refuses_only_co_partitioned_mismatch() -> None:
    specs = [TopicSpec("p.samples", 4, same_partitions=True), TopicSpec("p.rates", 4)]
    plan = plan_topics(specs, {"p.samples": 3, "p.rates": 6})
    assert plan.refused == (("p.samples", 3, 4),)
    assert plan.differing == (("p.rates", 6, 4),)
    assert plan.to_create == ()


def test_plan_checks_but_never_creates_topics_owned_by_others() -> None:
    changelog = TopicSpec("app-node-state-changelog", 2, create=False, same_partitions=True)
    assert plan_topics([changelog], {}).to_create == ()
    assert plan_topics([changelog], {"app-node-state-changelog": 5}).refused == (("app-node-state-changelog", 5, 2),)


def test_stream_specs_cover_every_topic_it_uses_and_mark_co_partitioned() -> None:
    settings = StreamSettings(topic_prefix="p", partitions=6)
    specs = {s.name: s for s in topic_specs(settings, {"retention.ms": "604800000"})}
    created = {name for name, s in specs.items() if s.create}
    assert created == set(owned_topics(settings))
    assert {"p.samples", "p.rates", "p.quantiles", "p.gauges", "p.health", "p.slo", "p.late", "p.dlq",
            "p.cluster-partials", "p.stream-ticks"} <= created
    assert {name for name, s in specs.items() if s.same_partitions} == {
        "p.samples", "p.cluster-partials", "p.stream-ticks",
        "kpp-streams.p-node-state-changelog", "kpp-streams.p-cluster-state-changelog"}
    assert all(s.partitions == 6 for s in specs.values())
    assert all(s.config == {"retention.ms": "604800000"} for s in specs.values() if s.create)


def test_mismatch_message_is_one_line_naming_topic_and_counts() -> None:
    text = mismatch_message("p.samples", 3, 4)
    assert "\n" not in text
    assert "'p.samples' has 3 partitions but --partitions is 4" in text


# -- the command against the real broker -----------------------------------------------------------

def kpp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kpp", *args], capture_output=True, text=True, timeout=180)


def describe(connection: KafkaConnection, names: list[str]) -> tuple[dict[str, int], dict[str, str]]:
    """(partitions per topic, retention.ms per topic)."""
    admin = KafkaAdminClient(**connection.kafka_python_kwargs())
    try:
        partitions = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(names)}
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n, configs=["retention.ms"])
                                          for n in names])
    finally:
        admin.close()
    retention: dict[str, str] = {}
    for response in configs if isinstance(configs, list) else [configs]:
        for name, values in response["topic"].items():
            if "retention.ms" in values:
                retention[name] = values["retention.ms"]["value"]
    return partitions, retention


@pytest.mark.integration
def test_ensure_creates_every_topic_then_is_a_no_op(kafka: KafkaConnection) -> None:
    prefix = f"ensure{uuid.uuid4().hex[:8]}"
    settings = StreamSettings(topic_prefix=prefix, partitions=3)
    first = kpp("topics", "ensure", "--topic-prefix", prefix, "--partitions", "3", "--retention", "7d",
                "--kafka-bootstrap", kafka.bootstrap)
    assert first.returncode == 0, first.stderr
    names = owned_topics(settings)
    assert f"{len(names)} created, 0 already there" in first.stdout
    partitions, retention = describe(kafka, names)
    assert partitions == {name: 3 for name in names}
    assert retention == {name: str(7 * 86_400_000) for name in names}

    second = kpp("topics", "ensure", "--topic-prefix", prefix, "--partitions", "3", "--retention", "1d",
                 "--kafka-bootstrap", kafka.bootstrap)
    assert second.returncode == 0, second.stderr
    assert f"0 created, {len(names)} already there" in second.stdout
    assert describe(kafka, names) == (partitions, retention)  # existing topics are left as they are


@pytest.mark.integration
def test_ensure_refuses_a_mismatched_partition_count_in_one_line(kafka: KafkaConnection) -> None:
    prefix = f"ensure{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka, [TopicSpec(f"{prefix}.samples", 2)])
    result = kpp("topics", "ensure", "--topic-prefix", prefix, "--partitions", "4",
                 "--kafka-bootstrap", kafka.bootstrap)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"kpp topics: error: {mismatch_message(f'{prefix}.samples', 2, 4)}"]


def test_describe_lines_mark_missing_and_refused_counts() -> None:
    specs = [TopicSpec("p.samples", 4, same_partitions=True), TopicSpec("p.rates", 4),
             TopicSpec("p-changelog", 4, create=False, same_partitions=True), TopicSpec("p.dlq", 4)]
    described = {"p.samples": TopicDescription("p.samples", 4, {"retention.ms": "-1"}),
                 "p.rates": TopicDescription("p.rates", 2, {})}
    lines, complete = describe_lines(specs, described)
    assert lines == ["p.samples  4 partitions  retention.ms=-1",
                     "p.rates    2 partitions  (not 4: kept, not co-partitioned)",
                     "p.dlq      missing",
                     "2 present, 1 missing"]
    assert not complete  # p.dlq is missing
    described["p.dlq"] = TopicDescription("p.dlq", 4, {})
    assert describe_lines(specs, described)[1]  # a differing count of a free topic is fine
    described["p-changelog"] = TopicDescription("p-changelog", 3, {})
    lines, complete = describe_lines(specs, described)
    assert "p-changelog  3 partitions  (not 4: refused by the stream)" in lines and not complete


@pytest.mark.integration
def test_describe_and_delete_against_the_broker(kafka: KafkaConnection) -> None:
    prefix = f"describe{uuid.uuid4().hex[:8]}"
    names = [f"{prefix}.a", f"{prefix}.b"]
    ensure_topics(kafka, [TopicSpec(names[0], 2, config={"retention.ms": "3600000"}), TopicSpec(names[1], 1)])
    described = describe_topics(kafka, [*names, f"{prefix}.missing"])
    assert sorted(described) == names  # the missing one is absent, not created
    partitions, retention = describe(kafka, names)  # kafka-python's own answer, as the oracle
    assert {n: d.partitions for n, d in described.items()} == partitions == {names[0]: 2, names[1]: 1}
    assert retention == {names[0]: "3600000"}  # kafka-python reports values set on the topic only
    # ours reports what applies: the value set, else the broker's default (log.retention.hours=168)
    assert {n: d.config["retention.ms"] for n, d in described.items()} == {names[0]: "3600000",
                                                                          names[1]: str(168 * 3_600_000)}

    assert delete_topics(kafka, [names[0], f"{prefix}.missing"]) == (names[0],)
    assert wait_until(lambda: sorted(describe_topics(kafka, names)) == [names[1]], timeout=30)
    assert delete_topics(kafka, [names[0]]) == ()  # deleting twice is a no-op
    delete_topics(kafka, names)


@pytest.mark.integration
def test_describe_command_exit_0_when_complete_1_when_not(kafka: KafkaConnection) -> None:
    prefix = f"describe{uuid.uuid4().hex[:8]}"
    args = ("--topic-prefix", prefix, "--partitions", "2", "--kafka-bootstrap", kafka.bootstrap)
    before = kpp("topics", "describe", *args)
    assert before.returncode == 1, before.stderr
    assert f"{prefix}.samples" in before.stdout and "missing" in before.stdout
    assert kpp("topics", "ensure", *args, "--retention", "1d").returncode == 0
    after = kpp("topics", "describe", *args)
    assert after.returncode == 0, after.stdout + after.stderr
    settings = StreamSettings(topic_prefix=prefix, partitions=2)
    for name in owned_topics(settings):
        assert f"2 partitions  cleanup.policy=delete  max.message.bytes=" in after.stdout
        assert any(line.startswith(name + " ") and "retention.ms=86400000" in line
                   for line in after.stdout.splitlines()), name
    assert f"{len(owned_topics(settings))} present, 0 missing" in after.stdout


@pytest.mark.integration
def test_output_to_a_closed_pipe_ends_quietly(kafka: KafkaConnection) -> None:
    """`kpp topics describe | head -1`: the reader is gone before we write; no internal error."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "kpp", "topics", "describe", "--kafka-bootstrap",
                                 kafka.bootstrap], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert result.returncode == 141, result.stderr
    assert result.stderr == ""


def test_describe_without_a_broker_is_one_line_and_exit_3() -> None:
    result = kpp("topics", "describe", "--kafka-bootstrap", "127.0.0.1:1", "--kafka-timeout", "3")
    assert result.returncode == 3, result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
    assert "127.0.0.1:1" in result.stderr


@pytest.mark.integration
def test_ensure_without_a_broker_is_one_line_and_exit_3() -> None:
    result = kpp("topics", "ensure", "--kafka-bootstrap", "127.0.0.1:1")
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("kpp topics: error: Kafka at 127.0.0.1:1")


def test_help_explains_the_command() -> None:
    result = kpp("topics", "ensure", "--help")
    assert result.returncode == 0, result.stderr
    for text in ("Idempotent", "--partitions", "--retention", "co-partitioned", "exit code 2", "Exit code 3"):
        assert text in result.stdout


@pytest.mark.integration
def test_workers_starting_together_create_each_topic_once_and_all_succeed(kafka: KafkaConnection) -> None:
    """Several stream workers (or the Job and a worker) ensuring the same topics at once: each
    topic is created by exactly one of them, none fails on "already exists"."""
    from concurrent.futures import ThreadPoolExecutor

    from kafka_io.admin import ensure_topics

    settings = StreamSettings(topic_prefix=f"race{uuid.uuid4().hex[:8]}", partitions=2)
    specs = topic_specs(settings)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: ensure_topics(kafka, specs, client_id=f"race-{i}"), range(4)))
    created = [name for r in results for name in r.created]
    assert sorted(created) == sorted(owned_topics(settings))  # each exactly once
    for r in results:
        assert set(r.created) | set(r.present) == set(owned_topics(settings))
    partitions, _ = describe(kafka, owned_topics(settings))
    assert set(partitions.values()) == {2}
