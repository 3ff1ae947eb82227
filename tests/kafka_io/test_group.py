"""kafka_io.group: a group member over aiokafka (explicit commits, pause/resume, the async
rebalance hook) and the acknowledged publisher; a broker that does not answer is the
connection's one-line error, not a traceback."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from kafka_io.admin import TopicSpec, ensure_topics
from kafka_io.connection import KafkaConnection, KafkaUnavailableError
from kafka_io.group import GroupConsumer, GroupSettings, Publisher, PublishFailed
from tests.conftest import free_port


def test_joining_without_a_broker_is_the_one_line_error() -> None:
    port = free_port()  # nothing listens there
    group = GroupConsumer(KafkaConnection(bootstrap=f"127.0.0.1:{port}", timeout_s=2),
                          GroupSettings(topics=("t",), group_id="g"))
    started = time.monotonic()
    with pytest.raises(KafkaUnavailableError) as caught:
        asyncio.run(group.start())
    text = str(caught.value)
    assert text.startswith(f"Kafka at 127.0.0.1:{port}") and "no broker answered" in text, text
    assert "\n" not in text and caught.value.exit_code == 3
    assert time.monotonic() - started < 15


def test_publishing_without_a_broker_is_the_one_line_error() -> None:
    port = free_port()
    publisher = Publisher(KafkaConnection(bootstrap=f"127.0.0.1:{port}"), client_id="c", timeout_s=3)

    async def publish() -> None:
        try:
            await publisher.publish("t", [(b"k", b"v")])
        finally:
            await publisher.close()

    with pytest.raises(PublishFailed) as caught:
        asyncio.run(publish())
    text = str(caught.value)
    assert text.startswith(f"Kafka at 127.0.0.1:{port}") and "publishing 1 message(s) to 't' failed" in text, text
    assert "\n" not in text


class Hook:
    def __init__(self) -> None:
        self.assigned: list[set] = []
        self.revoked: list[set] = []

    async def on_assigned(self, partitions: set) -> None:
        self.assigned.append(partitions)

    async def on_revoked(self, partitions: set) -> None:
        self.revoked.append(partitions)


async def records_of(group: GroupConsumer, count: int, timeout_s: float = 15) -> list:
    out: list = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        for records in (await group.getmany(0.2)).values():
            out.extend(records)
    return out


@pytest.mark.integration
def test_commit_pause_resume_and_the_rebalance_hook_against_kafka(kafka: KafkaConnection) -> None:
    topic, group_id = f"test.group.{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka, [TopicSpec(topic, 2)])

    async def scenario() -> None:
        publisher = Publisher(kafka, client_id="test-group")
        await publisher.publish(topic, [(b"node-%d" % i, b"%d" % i) for i in range(20)])
        hook = Hook()
        first = GroupConsumer(kafka, GroupSettings(topics=(topic,), group_id=group_id), hook)
        await first.start()
        try:
            records = await records_of(first, 20)
            assert len(records) == 20 and hook.assigned == [{(topic, 0), (topic, 1)}]
            # commit the next offset of each partition, explicitly
            ends: dict = {}
            for r in records:
                ends[(r.topic, r.partition)] = max(ends.get((r.topic, r.partition), 0), r.offset + 1)
            await first.commit(ends)
            assert {p: await first.committed(p) for p in ends} == ends
            # paused partitions give nothing; resumed, the next records come
            first.pause(first.assignment())
            assert first.paused() == {(topic, 0), (topic, 1)}
            await publisher.publish(topic, [(b"node-%d" % i, b"x") for i in range(4)])
            assert await records_of(first, 1, timeout_s=2) == []
            first.resume(first.paused())
            assert len(await records_of(first, 4)) == 4
            # a second member joins: the first one's hook is awaited before its partitions go
            second = GroupConsumer(kafka, GroupSettings(topics=(topic,), group_id=group_id))
            joining = asyncio.ensure_future(second.start())
            deadline = time.monotonic() + 30
            while not hook.revoked and time.monotonic() < deadline:
                await first.getmany(0.1)
            await joining
            assert hook.revoked and hook.revoked[0] == {(topic, 0), (topic, 1)}
            await second.close()
        finally:
            await first.close()
            await publisher.close()

    asyncio.run(scenario())
