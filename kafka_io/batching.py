"""A producer that fills record batches itself (aiokafka's public `create_batch` /
`send_batch`), for a caller that sends many small records and waits for them together: the
stream worker, whose scrapes yield ~8 outputs each plus a state per node per batch.

Why not `AIOKafkaProducer.send`: it makes an asyncio future and an accumulator entry per
record. Measured on one machine, 400-byte records to a local broker: 5.6 µs of CPU per record
through `send`, 1.4 µs through batches filled here (and Faust's `Producer.send` adds its own
layer on top of the former).

`send(topic, key, value, timestamp_ms, partition)` appends the record to the open batch of
its partition and returns that batch's delivery future, shared by every record of the batch.
A batch is handed to aiokafka when it is full, or `linger_s` after the first record of the
round was added, so a caller awaiting the futures never waits longer than that for a batch
nobody filled. Batches of one partition are handed over in the order they were opened, so
records of a partition reach Kafka in the order they were sent, as with `send`.

A record without an explicit partition goes where Kafka's default partitioner puts its key
(`KeyPartitioner`), over the partition list of the topic's metadata (refreshed every
`metadata_max_age_s`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from kafka_io.connection import KafkaConnection
from kafka_io.partitioner import KeyPartitioner

log = logging.getLogger("kpp.kafka")


class _OpenBatch:
    __slots__ = ("builder", "future", "records")

    def __init__(self, builder: Any, future: asyncio.Future) -> None:
        self.builder = builder
        self.future = future
        self.records = 0


class BatchingProducer:
    """See the module docstring. `start` before the first `send`; `stop` sends what is open."""

    def __init__(self, connection: KafkaConnection, *, client_id: str, linger_s: float = 0.005,
                 max_batch_bytes: int = 1 << 20, max_request_bytes: int = 8 << 20,
                 request_timeout_s: float = 1200.0, metadata_max_age_s: float = 30.0,
                 partitioner: KeyPartitioner | None = None) -> None:
        self.connection = connection
        self.client_id = client_id
        self.linger_s = linger_s
        self.max_batch_bytes = max_batch_bytes
        self.max_request_bytes = max_request_bytes
        self.request_timeout_s = request_timeout_s
        self.metadata_max_age_s = metadata_max_age_s
        self.partitioner = partitioner or KeyPartitioner()
        self.batches_sent = 0
        self.records_sent = 0
        self._producer: Any = None
        self._open: dict[tuple[str, int], _OpenBatch] = {}
        self._closed: deque[tuple[str, int, _OpenBatch]] = deque()
        self._wake: asyncio.Event | None = None
        self._sender: asyncio.Task | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._partitions: dict[str, tuple[float, list[int]]] = {}
        self._starting = asyncio.Lock()

    @property
    def started(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Connect (once; concurrent callers wait for the same start). Raises what aiokafka
        raises when Kafka cannot be reached; a later call tries again."""
        async with self._starting:
            if self._producer is not None:
                return
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(**self.connection.aiokafka_kwargs(), client_id=self.client_id, acks="all",
                                        max_batch_size=self.max_batch_bytes,
                                        max_request_size=self.max_request_bytes,
                                        request_timeout_ms=int(self.request_timeout_s * 1000),
                                        metadata_max_age_ms=int(self.metadata_max_age_s * 1000))
            try:
                await producer.start()
            except BaseException:
                try:
                    await producer.stop()
                except Exception:  # noqa: BLE001 (stopping after a failed start: the failure counts)
                    pass
                raise
            self._wake = asyncio.Event()
            self._producer = producer
            self._sender = asyncio.get_running_loop().create_task(self._send_closed(), name=f"{self.client_id}-sender")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Hand over every open batch, wait up to `timeout_s` for their delivery, disconnect.
        A caller that needs its records delivered awaits their futures before; one that stops
        without (a worker shutting down) loses nothing it acknowledged."""
        producer = self._producer
        if producer is None:
            return
        self._close_open()
        pending = [batch.future for _t, _p, batch in self._closed]
        try:
            if pending:
                await asyncio.wait(pending, timeout=timeout_s)
        finally:
            self._producer = None
            if self._sender is not None:
                self._sender.cancel()
                self._sender = None
            await producer.stop()

    async def send(self, topic: str, key: bytes | None, value: bytes | None, timestamp_ms: int | None,
                   partition: int | None) -> asyncio.Future:
        """Add a record to its partition's open batch; the batch's delivery future (resolved
        when Kafka acknowledged the batch, or failed)."""
        if partition is None:
            partitions = await self._partitions_of(topic)
            partition = self.partitioner(key, partitions, partitions)
        tp = (topic, partition)
        batch = self._open.get(tp)
        if batch is None:
            batch = self._open[tp] = self._new_batch()
        if batch.builder.append(key=key, value=value, timestamp=timestamp_ms) is None:
            # full: hand it over and start the next one (a first record always fits a batch)
            self._hand_over(topic, partition, self._open.pop(tp))
            batch = self._open[tp] = self._new_batch()
            batch.builder.append(key=key, value=value, timestamp=timestamp_ms)
        batch.records += 1
        if self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(self.linger_s, self._close_open)
        return batch.future

    # -- inside --------------------------------------------------------------------------

    def _new_batch(self) -> _OpenBatch:
        if self._producer is None:
            raise RuntimeError("BatchingProducer.send before start()")
        return _OpenBatch(self._producer.create_batch(), asyncio.get_running_loop().create_future())

    async def _partitions_of(self, topic: str) -> list[int]:
        now = time.monotonic()
        known = self._partitions.get(topic)
        if known is None or now - known[0] > self.metadata_max_age_s:
            partitions = await self._producer.partitions_for(topic)
            known = self._partitions[topic] = (now, sorted(partitions))
        return known[1]

    def _hand_over(self, topic: str, partition: int, batch: _OpenBatch) -> None:
        self._closed.append((topic, partition, batch))
        self._wake.set()

    def _close_open(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        open_batches, self._open = self._open, {}
        for (topic, partition), batch in open_batches.items():
            self._hand_over(topic, partition, batch)

    async def _send_closed(self) -> None:
        # One task hands every batch to aiokafka, in the order they were closed: aiokafka queues
        # one batch per partition at a time, so concurrent hand-overs could swap two batches.
        closed, wake = self._closed, self._wake
        while True:
            await wake.wait()
            wake.clear()
            while closed:
                topic, partition, batch = closed[0]
                try:
                    delivery = await self._producer.send_batch(batch.builder, topic, partition=partition)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 (the waiting caller gets it)
                    closed.popleft()
                    if not batch.future.done():
                        batch.future.set_exception(exc)
                    continue
                closed.popleft()
                self.batches_sent += 1
                self.records_sent += batch.records
                delivery.add_done_callback(_settle(batch.future))


def _settle(future: asyncio.Future):
    def done(delivery: asyncio.Future) -> None:
        if future.done():
            return
        if delivery.cancelled():
            future.cancel()
        elif delivery.exception() is not None:
            future.set_exception(delivery.exception())
        else:
            future.set_result(None)
    return done
