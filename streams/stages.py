"""The two processing stages as plain classes over dict-like tables and an async `send`:
the Faust agents (streams/agents.py) feed them events; unit tests feed them dicts.

Crash safety (at-least-once): Faust flushes the producer (table changelogs included) before
it commits input offsets, so after a kill -9 the restored tables reflect at least every
committed event, and events after the committed offset are processed again. Every step is
therefore idempotent:
* node state remembers the input offset it last applied (`off`): a replayed scrape is
  skipped without being counted as a duplicate;
* closing a window is keyed by the partition's `next` marker; outputs of a close are sent
  and their delivery awaited BEFORE the state that marks the window closed is written, so a
  crash in between re-emits identical records instead of losing them;
* the cluster stage ignores a partial it already holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, MutableMapping

import orjson

from contracts.codec import DecodeError, dumps
from contracts.derived import DerivedRecord
from contracts.records import ScrapeRecord
from streams import aggregate, cluster, node_state, partition
from streams.config import StreamSettings

log = logging.getLogger("kpp.stream")

# send(topic, key, value, timestamp_ms, partition) -> awaitable resolving on delivery
Send = Callable[[str, bytes | None, bytes, int | None, int | None], Awaitable[Awaitable[Any]]]


def _load(table: MutableMapping, key: str) -> dict | None:
    raw = table.get(key)
    return None if raw is None else orjson.loads(raw)


def _store(table: MutableMapping, key: str, value: dict) -> None:
    table[key] = orjson.dumps(value)


def dead_letter(reason: str, topic: str, partition_: int, offset: int, key: bytes | None, value: Any) -> bytes:
    obj: dict[str, Any] = {"reason": reason, "topic": topic, "partition": partition_, "offset": offset,
                           "key": key.decode("utf-8", "replace") if isinstance(key, bytes) else key}
    if isinstance(value, (bytes, bytearray)):
        try:
            obj["value"] = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            import base64
            obj["value_base64"] = base64.b64encode(bytes(value)).decode("ascii")
    else:
        obj["value"] = repr(value)
    return dumps(obj)


class Outbox:
    """Collects sends of one step and waits until Kafka acknowledged all of them."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.pending: list[Awaitable[Any]] = []

    async def put(self, topic: str, key: bytes | None, value: bytes, ts_ms: int | None,
                  partition_: int | None = None) -> None:
        self.pending.append(await self.send(topic, key, value, ts_ms, partition_))

    async def records(self, records: list[DerivedRecord], topics) -> None:
        for record in aggregate.sort_records(records):
            await self.put(getattr(topics, record.kind), record.key, record.encode(), record.window_end_ms)

    async def delivered(self) -> None:
        if self.pending:
            pending, self.pending = self.pending, []
            await asyncio.gather(*pending)


class NodeStage:
    """Agent logic on `<prefix>.samples` (+ idle ticks), one instance per worker."""

    def __init__(self, settings: StreamSettings, table: MutableMapping, send: Send,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.table = table  # "node:<name>" -> node state, "partition:<n>" -> partition state
        self.send = send
        self.clock = clock
        self.topics = settings.topics
        self.last_event: dict[int, float] = {}  # wall clock of the last event per partition
        self._ticked: dict[int, float | None] = {}
        self.stats = {"scrapes": 0, "late": 0, "dlq": 0, "duplicates": 0, "replayed": 0}

    # -- events ----------------------------------------------------------------------

    async def on_sample(self, part: int, offset: int, key: bytes | None, value: bytes) -> None:
        self.last_event[part] = self.clock()
        out = Outbox(self.send)
        try:
            record = ScrapeRecord.decode(value)
        except DecodeError as exc:
            self.stats["dlq"] += 1
            await out.put(self.topics.dlq, key, dead_letter(str(exc), self.topics.samples, part, offset, key, value),
                          None)
            await out.delivered()
            return
        pkey = f"partition:{part}"
        nkey = f"node:{record.node}"
        pstate = _load(self.table, pkey) or partition.new_partition_state()
        nstate = _load(self.table, nkey)
        replay = nstate is not None and offset <= nstate["off"]
        ts = record.scrape_ts_ms
        if pstate["idle"]:
            pstate["idle"] = False
            await self._marker(out, part, pstate, idle=False)
        if not replay:
            reason = partition.late_reason(pstate, ts, self.settings)
            if reason is not None:
                self.stats["late"] += 1
                await out.put(self.topics.late, record.key, dumps({
                    "reason": reason, "stage": "node", "topic": self.topics.samples, "partition": part,
                    "offset": offset, "node": record.node, "cluster": record.cluster, "scrape_ts_ms": ts,
                    "record": record.to_json()}), ts)
                await out.delivered()
                if nstate is not None:
                    nstate["off"] = offset
                    _store(self.table, nkey, nstate)
                _store(self.table, pkey, pstate)
                return
        before = orjson.dumps(pstate)
        partition.observe(pstate, ts, record.node, self.settings)
        due = partition.due_windows(pstate, self.settings)
        if due:
            await self._close(out, part, pstate, due, idle=False)
        else:
            await out.delivered()
        if not replay:
            nstate = _load(self.table, nkey) or node_state.new_state(record)
            if nstate["ts"] is not None and ts <= nstate["ts"]:
                self.stats["duplicates"] += 1
                node_state.count_duplicate(nstate, ts, self.settings)
            else:
                self.stats["scrapes"] += 1
                nstate["cluster"] = record.cluster
                node_state.apply_scrape(nstate, record, self.settings)
            nstate["off"] = offset
            _store(self.table, nkey, nstate)
        else:
            self.stats["replayed"] += 1
        if orjson.dumps(pstate) != before:
            _store(self.table, pkey, pstate)

    def idle_partitions(self, assigned: set[int]) -> list[int]:
        """Assigned partitions without an event for idle_timeout (wall clock)."""
        now = self.clock()
        for part in list(self.last_event):
            if part not in assigned:
                del self.last_event[part]
        idle = []
        for part in sorted(assigned):
            last = self.last_event.setdefault(part, now)  # newly assigned: the clock starts now
            if now - last >= self.settings.idle_timeout_s:
                idle.append(part)
        return idle

    def tick_due(self, part: int) -> bool:
        """One tick per idle period: not again until an event arrived on the partition."""
        last = self.last_event.get(part)
        if self._ticked.get(part) == last:
            return False
        self._ticked[part] = last
        return True

    async def on_tick(self, part: int) -> None:
        """An idle tick for `part`: if it is still idle, close everything it has open."""
        if part not in self.idle_partitions(set(self.last_event) | {part}):
            return
        pkey = f"partition:{part}"
        pstate = _load(self.table, pkey) or partition.new_partition_state()
        if pstate["idle"]:
            return
        out = Outbox(self.send)
        due = partition.due_windows(pstate, self.settings, idle=True)
        pstate["idle"] = True
        await self._close(out, part, pstate, due, idle=True)
        _store(self.table, pkey, pstate)
        log.info("partition %d idle for %.0f s: closed %d window(s)", part, self.settings.idle_timeout_s, len(due))

    # -- closing ---------------------------------------------------------------------

    async def _close(self, out: Outbox, part: int, pstate: dict, due: list[tuple[int, int]], idle: bool) -> None:
        states: dict[str, dict | None] = {}
        gone: set[str] = set()
        records: list[DerivedRecord] = []
        partials: list[dict] = []
        largest = max(self.settings.sizes_ms)
        for size, start in due:
            for node in list(pstate["nodes"]):
                if node not in states:
                    states[node] = _load(self.table, f"node:{node}")
                st = states[node]
                if st is None:
                    continue
                partial = node_state.close_window(st, size, start, self.settings)
                if partial is None:
                    continue
                records.extend(aggregate.node_records(partial, self.settings))
                partial.pop("slo", None)
                partial["src"] = part
                partials.append(partial)
                if partial["left"] and size == largest:
                    pstate["nodes"].remove(node)
                    gone.add(node)
            partition.mark_closed(pstate, size, start)
        await out.records(records, self.topics)
        for p in partials:
            p["type"] = "partial"
            await out.put(self.settings.cluster_partials_topic, p["cluster"].encode(), dumps(p),
                          p["start_ms"] + p["size_ms"])
        await self._marker(out, part, pstate, idle=idle)
        await out.delivered()  # everything acknowledged before the state says "closed"
        for node, st in states.items():
            if node in gone:
                self.table.pop(f"node:{node}", None)
            elif st is not None:
                _store(self.table, f"node:{node}", st)

    async def _marker(self, out: Outbox, part: int, pstate: dict, idle: bool) -> None:
        marker = dumps({"type": "progress", "src": part, "through": partition.progress(pstate), "idle": idle})
        for q in range(self.settings.partitions):
            await out.put(self.settings.cluster_partials_topic, None, marker, None, q)


class ClusterStage:
    """Agent logic on `<prefix>.cluster-partials` (keyed by cluster)."""

    def __init__(self, settings: StreamSettings, table: MutableMapping, send: Send,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.table = table  # "index:<q>" -> index, "partial:..." -> node partial
        self.send = send
        self.clock = clock
        self.topics = settings.topics
        self.started = clock()
        self.heard: dict[int, float] = {}
        self.stats = {"partials": 0, "late": 0, "dlq": 0, "windows": 0}

    def silent(self) -> list[int]:
        now = self.clock()
        return [src for src in range(self.settings.partitions)
                if now - self.heard.get(src, self.started) >= self.settings.cluster_timeout_s]

    async def on_message(self, q: int, offset: int, key: bytes | None, value: bytes) -> None:
        out = Outbox(self.send)
        try:
            msg = orjson.loads(value)
            kind = msg["type"]
            src = int(msg["src"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self.stats["dlq"] += 1
            await out.put(self.topics.dlq, key, dead_letter(f"bad cluster partial: {exc!r}",
                          self.settings.cluster_partials_topic, q, offset, key, value), None)
            await out.delivered()
            return
        self.heard[src] = self.clock()
        ikey = f"index:{q}"
        index = _load(self.table, ikey) or cluster.new_index()
        if kind == "progress":
            cluster.apply_progress(index, src, msg["through"], msg["idle"])
        else:
            name, size, start, node = msg["cluster"], msg["size_ms"], msg["start_ms"], msg["node"]
            reason = cluster.late_reason(index, name, size, start)
            if reason is not None:
                self.stats["late"] += 1
                await out.put(self.topics.late, key, dumps({
                    "reason": reason, "stage": "cluster", "topic": self.settings.cluster_partials_topic,
                    "partition": q, "offset": offset, "node": node, "cluster": name, "partial": msg}),
                    start + size)
            elif cluster.add_partial(index, name, size, start, node):
                self.stats["partials"] += 1
                self.table[cluster.partial_key(name, size, start, node)] = value
        due = cluster.due_windows(index, self.settings, self.silent())
        drop: list[str] = []
        for name, size, start in due:
            nodes = cluster.take_window(index, name, size, start)
            keys = [cluster.partial_key(name, size, start, n) for n in nodes]
            partials = [orjson.loads(self.table[k]) for k in keys if self.table.get(k) is not None]
            merged = aggregate.merge(partials, self.settings)
            history = (cluster.roll_slo(index, name, start, merged, self.settings)
                       if size == self.settings.step_s * 1000 else None)
            await out.records(aggregate.cluster_records(name, size, start, merged, self.settings, history),
                              self.topics)
            drop.extend(keys)
            self.stats["windows"] += 1
        await out.delivered()
        for k in drop:
            self.table.pop(k, None)
        _store(self.table, ikey, index)
