"""An asyncio consumer-group member with manual commits, and a publisher whose every send is
awaited until the broker acknowledged it: what the sink needs from Kafka, over aiokafka.

    group = GroupConsumer(connection, GroupSettings(topics=("t",), group_id="g"), hook)
    await group.start()                       # joins; KppError (one line) if Kafka is unusable
    batches = await group.getmany(0.2)        # {(topic, partition): [Record, ...]}
    group.pause(group.assignment())           # fetching stops, heartbeats go on
    await group.commit({("t", 0): 42})        # the NEXT offset to read, per partition
    await group.close()

- Partitions are `(topic, partition)` tuples everywhere (aiokafka's TopicPartition is such a
  named tuple, so the records' partitions compare equal to them).
- `hook` (a `RebalanceHook`) is awaited by the group itself: `on_revoked(partitions)` before a
  rebalance takes partitions away (commits still succeed there: the generation is the old
  one), `on_assigned(partitions)` after new ones came. Both run on the consumer's event loop;
  nothing else of the group runs meanwhile on its side.
- Offsets are only committed by `commit` (auto-commit is off): the caller commits what its
  destination acknowledged.
- Every failure of the client library leaves as a `KppError` whose text is the connection's
  one line (`KafkaConnection.failure`): `start`, `getmany`, `committed`; a refused commit
  raises `CommitFailed` (the caller decides whether it matters).

`Publisher.publish(topic, messages)` sends and awaits every delivery (acks=all); it raises
`PublishFailed` (one line) when any message was not acknowledged within its timeout. It
connects on first use.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Protocol, Sequence

from contracts.errors import KppError
from kafka_io.connection import KafkaConnection, is_client_error

Partition = tuple[str, int]


class Record(Protocol):
    """A fetched record (aiokafka's ConsumerRecord has these fields and more)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class RebalanceHook(Protocol):
    async def on_revoked(self, partitions: set[Partition]) -> None: ...

    async def on_assigned(self, partitions: set[Partition]) -> None: ...


class CommitFailed(KppError):
    """The group coordinator did not take a commit (a rebalance, the coordinator away)."""

    exit_code = 3


class PublishFailed(KppError):
    """A message was not acknowledged by the broker."""

    exit_code = 3


@dataclass(frozen=True, kw_only=True)
class GroupSettings:
    topics: tuple[str, ...]
    group_id: str
    client_id: str = "kpp"
    # A getmany returns at most this many records; the fetcher prefetches meanwhile. A fetch
    # that holds only caught-up partitions makes the others wait up to fetch_max_wait_ms
    # (Kafka's default of 500 ms halved the sink's throughput in a catch-up).
    max_poll_records: int = 2000
    max_partition_fetch_bytes: int = 1024 * 1024
    fetch_max_bytes: int = 50 * 1024 * 1024
    fetch_max_wait_ms: int = 100
    # A member killed without leaving the group holds its partitions until this expires.
    session_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 300_000
    # Topics created after the member started (the stream stage comes up later) are noticed
    # within this time.
    metadata_max_age_ms: int = 30_000
    auto_offset_reset: str = "earliest"


class GroupConsumer:
    """One member of a consumer group (see the module docstring)."""

    def __init__(self, connection: KafkaConnection, settings: GroupSettings,
                 hook: RebalanceHook | None = None) -> None:
        self.connection = connection
        self.settings = settings
        self._hook = hook
        self._consumer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        s = self.settings
        consumer = AIOKafkaConsumer(
            **self.connection.aiokafka_kwargs(), group_id=s.group_id, client_id=s.client_id,
            enable_auto_commit=False, auto_offset_reset=s.auto_offset_reset,
            max_poll_records=s.max_poll_records, max_partition_fetch_bytes=s.max_partition_fetch_bytes,
            fetch_max_bytes=s.fetch_max_bytes, fetch_max_wait_ms=s.fetch_max_wait_ms,
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=max(1000, s.session_timeout_ms // 3),
            max_poll_interval_ms=s.max_poll_interval_ms, metadata_max_age_ms=s.metadata_max_age_ms,
            request_timeout_ms=max(40_000, s.session_timeout_ms + 5000),
        )
        consumer.subscribe(list(s.topics), listener=_listener(self._hook))
        try:
            await consumer.start()
        except Exception as exc:  # noqa: BLE001 (a client error becomes the one line)
            await _quietly(consumer.stop())
            raise self._failure(exc) from None
        self._consumer = consumer

    async def close(self) -> None:
        """Leave the group (no commit: the caller committed what it wanted)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def getmany(self, timeout_s: float) -> dict[Partition, list[Record]]:
        try:
            return await self._consumer.getmany(timeout_ms=int(timeout_s * 1000))
        except Exception as exc:  # noqa: BLE001
            raise self._failure(exc) from None

    def assignment(self) -> set[Partition]:
        return set(self._consumer.assignment())

    def pause(self, partitions: Iterable[Partition]) -> None:
        self._consumer.pause(*_tps(partitions))

    def resume(self, partitions: Iterable[Partition]) -> None:
        self._consumer.resume(*_tps(partitions))

    def paused(self) -> set[Partition]:
        return set(self._consumer.paused())

    def seek(self, partition: Partition, offset: int) -> None:
        self._consumer.seek(_tp(partition), offset)

    async def seek_to_beginning(self, partition: Partition) -> None:
        await self._consumer.seek_to_beginning(_tp(partition))

    def highwater(self, partition: Partition) -> int | None:
        """The last high watermark a fetch of this partition brought (None: none yet)."""
        return self._consumer.highwater(_tp(partition))

    async def position(self, partition: Partition, timeout_s: float = 0.05) -> int | None:
        """The next offset to fetch, or None if it is not known within `timeout_s` (> 0)."""
        try:
            return await asyncio.wait_for(self._consumer.position(_tp(partition)), timeout_s)
        except (asyncio.TimeoutError, Exception):  # noqa: BLE001 (unknown: the caller skips it)
            return None

    async def committed(self, partition: Partition) -> int | None:
        """The group's committed offset of the partition (None: none)."""
        try:
            return await self._consumer.committed(_tp(partition))
        except Exception as exc:  # noqa: BLE001
            raise self._failure(exc) from None

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Commit the next offset to read of each partition; CommitFailed if the group did not
        take it."""
        if not offsets:
            return
        try:
            await self._consumer.commit({_tp(p): offset for p, offset in offsets.items()})
        except Exception as exc:  # noqa: BLE001
            if not is_client_error(exc):
                raise
            raise CommitFailed(f"Kafka at {self.connection.describe()}: commit of group "
                               f"{self.settings.group_id!r} failed ({self.connection.explain(exc)})") from None

    def _failure(self, exc: BaseException) -> BaseException:
        if isinstance(exc, KppError) or not is_client_error(exc):
            return exc
        return self.connection.failure(exc)


class Publisher:
    """An AIOKafkaProducer with acks=all whose `publish` awaits every delivery."""

    def __init__(self, connection: KafkaConnection, *, client_id: str, timeout_s: float = 30.0,
                 compression_type: str | None = "gzip") -> None:
        self.connection = connection
        self.client_id = client_id
        self.timeout_s = timeout_s
        self.compression_type = compression_type
        self._producer: Any = None

    async def publish(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        """Send `(key, value)` messages and wait until the broker acknowledged them all."""
        if not messages:
            return
        try:
            await asyncio.wait_for(self._publish(topic, messages), self.timeout_s)
        except Exception as exc:  # noqa: BLE001 (any failure: the caller must not go on as if delivered)
            reason = f"no acknowledgement within {self.timeout_s:g} s" if isinstance(exc, asyncio.TimeoutError) \
                else self.connection.explain(exc)
            raise PublishFailed(f"Kafka at {self.connection.describe()}: publishing {len(messages)} "
                                f"message(s) to {topic!r} failed ({reason})") from None

    async def _publish(self, topic: str, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        if self._producer is None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(**self.connection.aiokafka_kwargs(), client_id=self.client_id,
                                        acks="all", linger_ms=0, compression_type=self.compression_type,
                                        request_timeout_ms=int(self.timeout_s * 1000))
            try:
                await producer.start()
            except BaseException:
                await _quietly(producer.stop())
                raise
            self._producer = producer
        deliveries = [await self._producer.send(topic, key=key, value=value) for key, value in messages]
        await asyncio.gather(*deliveries)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


def _tp(partition: Partition) -> Any:
    from aiokafka.structs import TopicPartition

    return partition if isinstance(partition, TopicPartition) else TopicPartition(*partition)


def _tps(partitions: Iterable[Partition]) -> list[Any]:
    return [_tp(p) for p in partitions]


def _listener(hook: RebalanceHook | None) -> Any:
    from aiokafka import ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked):  # noqa: ANN001, ANN201 - aiokafka's signature
            if hook is not None and revoked:  # aiokafka also calls it, empty, before the first join
                await hook.on_revoked(set(revoked))

        async def on_partitions_assigned(self, assigned):  # noqa: ANN001, ANN201
            if hook is not None:
                await hook.on_assigned(set(assigned))

    return Listener()


async def _quietly(closing: Any) -> None:
    try:
        await closing
    except Exception:  # noqa: BLE001 (closing after a failure: the failure is what counts)
        pass
