"""The sink protocol and its batching implementation.

Two verbs, as in quix-streams: `add(item)` per Kafka record and `flush()` at a commit
boundary. `flush()` either writes everything buffered and returns what may be committed,
or raises `StoreUnavailable` (backpressure) and keeps the buffer for the next try. The
caller commits offsets only after a successful flush, so delivery is at-least-once and the
writes are idempotent (same series, timestamp and value on every re-write).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Iterable, Protocol

from sinks.writers import StoreRejected, StoreUnavailable, Writer

log = logging.getLogger("kpp.sink")

TopicPartition = tuple[str, int]


@dataclass(slots=True)
class Item:
    """One Kafka record on its way to the store (or to the DLQ)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    fragment: bytes = b""  # the record's points, encoded for the writer's protocol
    points: int = 0
    skipped: int = 0  # points the protocol cannot carry (NaN/±Inf in line protocol)
    dlq_reason: str | None = None  # set when the record goes to the DLQ instead
    dlq_error: str | None = None
    dropped: int = 0  # points the store would drop (timestamp out of its range): dead-lettered

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)


@dataclass(slots=True)
class Rejection:
    item: Item
    reason: str  # "rejected" (the store said 4xx), "malformed", "unrepresentable", "timestamp_too_..."
    error: str
    status: int | None = None
    answer: str | None = None


@dataclass(slots=True)
class FlushResult:
    written_points: int = 0
    written_records: int = 0
    requests: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    commit: dict[TopicPartition, int] = field(default_factory=dict)  # next offset per partition


class Sink(Protocol):
    def add(self, item: Item) -> bool: ...

    def flush(self) -> FlushResult: ...


@dataclass(frozen=True, kw_only=True)
class BatchLimits:
    max_points: int = 20_000
    max_bytes: int = 4 * 1024 * 1024
    max_age_s: float = 1.0


class BatchingSink:
    """Buffers items until a limit is reached; the caller flushes when `due()` says so."""

    def __init__(self, writer: Writer, limits: BatchLimits = BatchLimits()) -> None:
        self.writer = writer
        self.limits = limits
        self._items: list[Item] = []
        self._points = 0
        self._bytes = 0
        self._first_added: float | None = None

    # -- state ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    @property
    def buffered_points(self) -> int:
        return self._points

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def full(self) -> bool:
        return self._points >= self.limits.max_points or self._bytes >= self.limits.max_bytes

    def due(self, now: float | None = None) -> bool:
        if not self._items:
            return False
        if self.full():
            return True
        now = time.monotonic() if now is None else now
        return self._first_added is not None and now - self._first_added >= self.limits.max_age_s

    # -- the two verbs ----------------------------------------------------------------------

    def add(self, item: Item) -> bool:
        """Buffer the item; True when the batch is full now (the caller should flush)."""
        if not self._items:
            self._first_added = time.monotonic()
        self._items.append(item)
        self._points += item.points
        self._bytes += len(item.fragment)
        return self._points >= self.limits.max_points or self._bytes >= self.limits.max_bytes

    def flush(self) -> FlushResult:
        """Write the buffer. On success the buffer is empty and the result names the next
        offset of every partition seen (all its items are in the store or DLQ-bound).
        Raises StoreUnavailable with the buffer intact (re-writes are idempotent)."""
        result = write_items(self.writer, self._items)
        self.clear()
        return result

    def take(self) -> list[Item]:
        """Hand the buffered items over (to a write in flight) and start an empty batch."""
        items = self._items
        self.clear()
        return items

    # -- rebalances -------------------------------------------------------------------------

    def clear(self) -> None:
        self._items = []
        self._points = 0
        self._bytes = 0
        self._first_added = None

    def drop_partitions(self, partitions: Iterable[TopicPartition]) -> int:
        """Forget buffered items of revoked partitions (their new owner re-reads them from the
        committed offset). Returns how many were dropped."""
        gone = set(partitions)
        keep = [i for i in self._items if i.tp not in gone]
        dropped = len(self._items) - len(keep)
        first_added = self._first_added
        self.clear()
        for item in keep:
            self.add(item)
        if keep:
            self._first_added = first_added
        return dropped


def write_items(writer: Writer, items: list[Item]) -> FlushResult:
    """Write one batch: the sendable items as one body (split on a 4xx), the others named for
    the DLQ, and the next offset of every partition seen. Touches nothing but the writer, so it
    runs on the write thread while the consumer goes on. Raises StoreUnavailable (the caller
    keeps the items and writes them again: re-writes are idempotent)."""
    result = FlushResult()
    if not items:
        return result
    sendable = [i for i in items if i.dlq_reason is None and i.fragment]
    if sendable:
        _write(writer, sendable, result)
    commit = result.commit
    for item in items:
        if item.dlq_reason is not None:
            result.rejected.append(Rejection(item, item.dlq_reason, item.dlq_error or item.dlq_reason))
        next_offset = item.offset + 1
        tp = (item.topic, item.partition)
        if next_offset > commit.get(tp, -1):
            commit[tp] = next_offset
    rejected_ids = {id(r.item) for r in result.rejected if r.reason == "rejected"}
    for item in sendable:
        if id(item) not in rejected_ids:
            result.written_points += item.points
            result.written_records += 1
    return result


def _write(writer: Writer, items: list[Item], result: FlushResult) -> None:
    """Send items as one body; on a 4xx split in halves until the culprits stand alone."""
    result.requests += 1
    try:
        writer.send(writer.body([i.fragment for i in items]))
    except StoreRejected as exc:
        if len(items) == 1:
            log.warning("store rejected %s[%d]@%d: %s", items[0].topic, items[0].partition,
                        items[0].offset, exc)
            result.rejected.append(Rejection(items[0], "rejected", str(exc), exc.status, exc.answer))
            return
        middle = len(items) // 2
        _write(writer, items[:middle], result)
        _write(writer, items[middle:], result)


@dataclass(kw_only=True)
class Backoff:
    """Exponential backoff with jitter: attempt n waits base·2ⁿ (capped) times a random
    factor in [0.5, 1), so that many sinks do not hammer a recovering store in step."""

    base_s: float = 0.25
    cap_s: float = 15.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.base_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return delay * self.rng.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0


__all__ = ["BatchLimits", "BatchingSink", "Backoff", "FlushResult", "Item", "Rejection", "Sink",
           "StoreRejected", "StoreUnavailable", "write_items"]
