"""Reading an exact offset range of one partition, outside any consumer group: the stream
stage reads the records its consumer skipped (streams/agents.py, SkippedRecords) with it.

An aiokafka consumer assigned to the partition (no group, nothing committed) is positioned at
`start` and read until its position reaches `end`; records at or past `end` are left out.
Offsets below `start` never show; offsets missing in between (deleted by retention) are
simply absent from the result, which the caller compares with what it asked for."""

from __future__ import annotations

import time

from kafka_io.connection import KafkaConnection

#: (offset, key, value) of one record.
Record = tuple[int, "bytes | None", bytes]


async def read_offset_range(connection: KafkaConnection, topic: str, partition: int, start: int, end: int, *,
                            timeout_s: float = 60.0, client_id: str = "kpp-offset-range") -> list[Record]:
    """The records of `topic`[`partition`] with start <= offset < end, in offset order.
    Raises TimeoutError when the position does not reach `end` within `timeout_s`."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    if end <= start:
        return []
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(**connection.aiokafka_kwargs(), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", client_id=client_id)
    await consumer.start()
    out: list[Record] = []
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        deadline = time.monotonic() + timeout_s
        while await consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic}[{partition}] offsets {start}..{end - 1} "
                                   f"within {timeout_s:g} s")
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
            out.extend((r.offset, r.key, r.value) for r in batch.get(tp, ()) if r.offset < end)
    finally:
        await consumer.stop()
    return out
