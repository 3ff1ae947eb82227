"""The two processing stages as plain classes over dict-like tables and an async `send`:
the Faust agents (streams/agents.py) feed them events; unit tests feed them dicts.

Crash safety (at-least-once). A batch's events are acknowledged only after `flush` returned,
and `flush` returns only after Kafka acknowledged, in this order, (1) every output of the
batch and (2) every changelog record of the states it changed. So the committed input
offset never runs ahead of the state on the changelog (Faust's own producer flush before a
commit can return early with changelog records still queued: the stages do not rely on it),
and after a kill -9 the restored tables hold at least every committed event, while events
after the committed offset are processed again. What makes that replay harmless:
* a node state remembers the input offset it last applied (`off`): a replayed scrape is not
  applied twice, and not counted as a duplicate either;
* outputs are acknowledged before the states that say "sent" are written, so a crash in
  between re-emits identical records instead of losing any;
* a changelog partition keeps the order of its writes, so a crash keeps a prefix of a
  flush's writes. Node states are written before partition states, and each node state
  remembers the last window it closed (`done`): when the partition state's write was lost,
  the window closes again only for nodes that had not closed it, with identical records —
  never as an emptied "missing" partial;
* the cluster index remembers the last offset it applied (`off`) and is written after the
  new partials and before the deletion of closed windows' partials; a partial for a window
  its source partition had already reported complete is a re-emission and is skipped
  (streams/cluster.py), not sent to the late topic.
tests/streams/test_crash_model.py crashes the stages at table writes spread over a run (~80 per
configuration; once run over every write) and checks this.
"""

from __future__ import annotations

import logging
import time
from itertools import groupby
from operator import itemgetter
from typing import Any, Awaitable, Callable, MutableMapping

import orjson

from contracts import dlq
from contracts.codec import DecodeError, dumps
from contracts.dlq import dead_letter as contract_dead_letter
from contracts.dlq import dlq_key
from contracts.late import late_partial, late_scrape
from streams import aggregate, bundle, cluster, heap, node_state, partition, statecodec
from streams.config import StreamSettings
from contracts.records_fast import decode_scrape
from streams.selfmetrics import NO_METRICS

log = logging.getLogger("kpp.stream")
#: One DEBUG line per scrape event (`kpp stream --trace-scrapes`): which partition, offset and
#: batch took it and what became of it, so a scrape missing from a window points at its cause.
trace_log = logging.getLogger("kpp.stream.trace")

# send(topic, key, value, timestamp_ms, partition) -> awaitable resolving on delivery
Send = Callable[[str, bytes | None, bytes, int | None, int | None], Awaitable[Awaitable[Any]]]


#: Most node states a batch holds decoded (a ~15 kB state takes ~10 times that decoded): past
#: it, the one changed longest ago goes back to bytes (see StateCache), so a batch or a
#: window close over thousands of nodes does not hold them all decoded.
MAX_DECODED_STATES = 500


class StateCache:
    """Write-back cache of a stage's table for one batch of events.

    Values are decoded once when first read in a batch, changed in place, and written back by
    `writes()` once per batch (and only when their encoding changed), in an order chosen by
    the stage (`rank`) so that whatever prefix of the writes reaches the changelog before a
    crash is a state the stage can resume from. Everything is forgotten after `writes()`:
    nothing cached outlives a batch, so a rebalance never meets stale values.

    The table is dict-like (`get`); it is written through `write_in(partition, key, raw)`
    when it has one (the Faust adapter: the changelog partition is explicit because a
    batch mixes events of several partitions), else with `table[key] = raw` /
    `table.pop(key)` (plain dicts, as the in-process runs use).

    With `bounded(key)` true for a key, at most `max_decoded` such values are held decoded:
    past that, the one read or put longest ago is encoded back (or, unchanged, forgotten).
    A caller therefore `put`s a value after changing it, before other keys are put (the
    stages do), and reads it again with `get` afterwards."""

    __slots__ = ("table", "rank", "values", "raw", "dirty", "bounded", "max_decoded", "decoded")
    _UNKNOWN = object()

    def __init__(self, table: MutableMapping, rank: Callable[[str, Any], int],
                 bounded: Callable[[str], bool] | None = None, max_decoded: int = MAX_DECODED_STATES) -> None:
        self.table = table
        self.rank = rank
        self.values: dict[str, Any] = {}  # key -> decoded dict, raw bytes, or None (absent)
        self.raw: dict[str, bytes | None] = {}  # key -> bytes as read from the table
        self.dirty: dict[str, int | None] = {}  # key -> changelog partition
        self.bounded = bounded
        self.max_decoded = max_decoded
        self.decoded: dict[str, None] = {}  # bounded keys held decoded, oldest first

    def get(self, key: str) -> Any:
        """The decoded JSON value of `key`, or None."""
        try:
            value = self.values[key]
        except KeyError:
            raw = self.raw[key] = self.table.get(key)
            value = self.values[key] = None if raw is None else statecodec.decode(raw)
            if value is not None and self.bounded is not None and self.bounded(key):
                self._held(key)
            return value
        return statecodec.decode(value) if isinstance(value, bytes) else value

    def _held(self, key: str) -> None:
        decoded = self.decoded
        decoded.pop(key, None)
        decoded[key] = None
        if len(decoded) > self.max_decoded:
            oldest = next(iter(decoded))
            del decoded[oldest]
            value = self.values.get(oldest)
            if isinstance(value, (dict, list)):
                if oldest in self.dirty:
                    self.values[oldest] = statecodec.encode(value)
                else:
                    del self.values[oldest]  # unchanged: read again from the table if needed

    def get_bytes(self, key: str) -> bytes | None:
        """The encoded value of `key` (see streams/statecodec.py), or None."""
        if key in self.values:
            value = self.values[key]
            return value if value is None or isinstance(value, bytes) else statecodec.encode(value)
        raw = self.raw[key] = self.table.get(key)
        self.values[key] = raw
        return raw

    def stored_size(self, key: str) -> int:
        """Bytes of `key`'s value as the table held it when the batch first read it (0: absent)."""
        raw = self.raw.get(key)
        return 0 if raw is None else len(raw)

    def put(self, part: int | None, key: str, value: Any) -> None:
        """Set `key` to a JSON-able value or to encoded bytes (written at the end of the batch)."""
        self.values[key] = value
        self.dirty[key] = part
        if self.bounded is not None and value is not None and not isinstance(value, bytes) and self.bounded(key):
            self._held(key)

    def delete(self, part: int | None, key: str) -> None:
        self.values[key] = None
        self.dirty[key] = part
        self.decoded.pop(key, None)

    def writes(self) -> list[tuple[int | None, str, bytes | None]]:
        """(partition, key, bytes or None to delete) of every changed key, in rank order (stable
        within a rank); forgets the batch. StateTooLarge when a value, compressed, is still over
        what Kafka takes (the stages keep their values under it; this names the key if not)."""
        out = []
        get = self.table.get
        for key, part in self.dirty.items():
            value = self.values[key]
            raw = value if value is None or isinstance(value, bytes) else statecodec.encode(value)
            if raw is not None and not statecodec.fits(raw):
                self.clear()
                raise statecodec.StateTooLarge(f"state {key!r} is {len(raw)} bytes encoded, over the "
                                               f"{statecodec.MAX_VALUE_BYTES} bytes a record may have")
            before = self.raw.get(key, self._UNKNOWN)
            if before is self._UNKNOWN:
                before = get(key)
            if before == raw:
                continue  # unchanged: no changelog record
            out.append((self.rank(key, raw), part, key, raw))
        self.clear()
        out.sort(key=lambda w: w[0])
        return [(part, key, raw) for _rank, part, key, raw in out]

    def clear(self) -> None:
        self.values.clear()
        self.raw.clear()
        self.dirty.clear()
        self.decoded.clear()


async def write_table(table: MutableMapping, writes: list[tuple[int | None, str, bytes | None]]) -> None:
    """Apply `writes` in order and wait until they are durable: a table with `write_in` (the
    Faust adapter) returns an awaitable per changelog record; plain dicts are durable at once."""
    write_in = getattr(table, "write_in", None)
    pending = []
    for part, key, raw in writes:
        if write_in is not None:
            pending.append(await write_in(part, key, raw))
        elif raw is None:
            table.pop(key, None)
        else:
            table[key] = raw
    await all_delivered(pending)


async def all_delivered(pending: list[Awaitable[Any]]) -> None:
    """Wait for every delivery of `pending`, in order; the first failure raises. Kafka settles
    a partition's records a produce batch at a time, so once the first future of a batch is
    done the rest are too and awaiting them costs nothing: this task wakes about once per
    batch, where asyncio.gather schedules a callback for every future (a batch of scrapes sends
    thousands of records)."""
    for delivery in pending:
        await delivery


def dead_letter(reason: str, topic: str, partition_: int, offset: int, key: bytes | None, value: Any, *,
                stage: str | None = None, error: str | None = None) -> bytes:
    """A stream stage's dead letter, in the DLQ contract's envelope (contracts/dlq.py): bounded
    whatever the original's size (its first 64 KiB, size and SHA-256), so writing it can never
    fail on Kafka's record limit and stop the worker. `stage` is "node" or "cluster" (by
    default from the topic); `error` the full text when `reason` is a short code. No
    dead-lettered time: the stage's outputs are deterministic (replays write the same bytes)."""
    if stage is None:
        stage = "cluster" if topic.endswith(".cluster-partials") else "node"
    if value is not None and not isinstance(value, (bytes, bytearray)):
        value = repr(value).encode("utf-8")
    return contract_dead_letter(stage=stage, reason=reason, error=reason if error is None else error, topic=topic,
                                partition=partition_, offset=offset, key=key, value=value)


def late_timestamp(reason: str, ts_ms: int) -> int | None:
    """The Kafka timestamp of a `.late` record: the scrape time when its window closed (a
    plausible time: within the partition's range); None (the producer's clock) for a time that
    was not believed. A broker refuses timestamps far ahead or negative, and the refusal would
    stop the worker on every restart."""
    return ts_ms if reason == partition.WINDOW_CLOSED else None


class Outbox:
    """Collects the sends of a batch and waits until Kafka acknowledged all of them."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.pending: list[Awaitable[Any]] = []

    async def put(self, topic: str, key: bytes | None, value: bytes, ts_ms: int | None,
                  partition_: int | None = None) -> None:
        self.pending.append(await self.send(topic, key, value, ts_ms, partition_))

    async def encoded(self, entries: list[tuple]) -> None:
        """Send (send order, topic, key, bytes, timestamp) entries (aggregate.node_outputs,
        cluster_outputs) in their send order."""
        entries.sort(key=itemgetter(0))
        send = self.send
        for _order, topic, key, value, ts_ms in entries:
            self.pending.append(await send(topic, key, value, ts_ms, None))  # `put`, inlined

    async def delivered(self) -> None:
        if self.pending:
            pending, self.pending = self.pending, []
            await all_delivered(pending)


def _is_node_key(key: str) -> bool:
    return key.startswith("node:")


def _node_rank(key: str, _raw: Any) -> int:
    # node states before the partition states: a partition state on the changelog implies
    # the node states of its batch are there too (one changelog partition keeps order)
    return 1 if key.startswith("partition:") else 0


def _cluster_rank(key: str, raw: Any) -> int:
    # new partials, then the member buckets (which list them), then the index (which lists
    # the buckets and marks windows closed), then the deletion of closed windows' partials
    # and buckets
    if raw is None:
        return 3
    if key.startswith("index:"):
        return 2
    return 1 if key.startswith("members:") else 0


class PartitionView:
    """The keys of one changelog partition of a StateCache as a mapping (the cluster index's
    member buckets)."""

    __slots__ = ("cache", "part")

    def __init__(self, cache: StateCache, part: int | None) -> None:
        self.cache, self.part = cache, part

    def get(self, key: str) -> Any:
        return self.cache.get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.cache.put(self.part, key, value)

    def __delitem__(self, key: str) -> None:
        self.cache.delete(self.part, key)


class NodeStage:
    """Agent logic on `<prefix>.samples` (+ idle ticks), one instance per worker.

    `on_sample` / `on_tick` process one event and persist it (`flush`) before returning.
    A batch driver calls `sample` / `tick` for each event of a batch, then `flush` once:
    the outputs of the whole batch are sent without waiting, their acknowledgements are
    awaited together, and only then is each changed state written (once per batch)."""

    def __init__(self, settings: StreamSettings, table: MutableMapping, send: Send,
                 clock: Callable[[], float] = time.monotonic,
                 trusted_clock_ms: Callable[[], int] | None = None) -> None:
        self.settings = settings
        self.table = table  # "node:<name>" -> node state, "partition:<n>" -> partition state
        # The clock a scrape time may not run ahead of by more than max_clock_skew: the worker's
        # wall clock live, the record's Kafka timestamp in a replay (streams/replay.py).
        self.trusted_clock_ms = trusted_clock_ms or (lambda: int(time.time() * 1000))
        self.rejected: dict[str, dict[str, int]] = {}  # node -> reason -> scrapes rejected
        self.send = send
        self.clock = clock
        self.topics = settings.topics
        self.cache = StateCache(table, _node_rank, bounded=_is_node_key)
        self.out = Outbox(send)
        self.last_event: dict[int, float] = {}  # wall clock of the last event per partition
        self._ticked: dict[int, float | None] = {}
        self.batch = 0  # batches flushed by this instance (named in the scrape trace)
        self.stats = {"scrapes": 0, "late": 0, "dlq": 0, "duplicates": 0, "replayed": 0, "state_too_large": 0,
                      partition.CLOCK_SKEW: 0, partition.TOO_OLD: 0}
        self.metrics = NO_METRICS  # the worker's /metrics (streams/selfmetrics.py)
        self.heap = heap.PROCESS_TRIMMER  # a batch's freed memory goes back to the OS now and then

    # -- events ----------------------------------------------------------------------

    async def on_sample(self, part: int, offset: int, key: bytes | None, value: bytes) -> None:
        await self.sample(part, offset, key, value)
        await self.flush()

    async def on_tick(self, part: int) -> None:
        await self.tick(part)
        await self.flush()

    async def flush(self) -> None:
        """Wait until every output of the batch is acknowledged, then write the changed
        states (the state saying "window closed" never precedes the window's outputs)."""
        try:
            await self.out.delivered()
        except BaseException:
            self.cache.clear()  # nothing of an unacknowledged batch is persisted
            raise
        await write_table(self.table, self.cache.writes())
        self.batch += 1
        self.heap.maybe_trim()

    def next_offset(self, part: int) -> int | None:
        """The offset after the last input event of `part` that the stage's state holds (None
        before any): the batch driver reads records the consumer skipped from there."""
        pstate = self.cache.get(f"partition:{part}")
        return None if pstate is None else pstate.get("in")

    def _consumed(self, pstate: dict, offset: int) -> None:
        # `in` is written with the partition state, after the node states of its batch: once
        # on the changelog, every event before it is in the state (or in its outputs).
        if offset >= pstate.get("in", 0):
            pstate["in"] = offset + 1

    def _trace(self, what: str, part: int, offset: int, node: str, ts: int) -> None:
        trace_log.debug("scrape %s@%d %s partition %d offset %d batch %d", node, ts, what, part, offset, self.batch)

    async def sample(self, part: int, offset: int, key: bytes | None, value: bytes) -> None:
        """One scrape of a batch (persisted by the next `flush`)."""
        self.last_event[part] = self.clock()
        out, cache = self.out, self.cache
        try:
            scrape = decode_scrape(value)  # the ScrapeRecord itself is built only if asked for
        except DecodeError as exc:
            self.stats["dlq"] += 1
            self.metrics.dead_lettered("malformed")
            await out.put(self.topics.dlq, dlq_key(key), dead_letter(
                "malformed", self.topics.samples, part, offset, key, value, stage="node", error=str(exc)), None)
            pkey = f"partition:{part}"
            pstate = cache.get(pkey)
            if pstate is None:
                pstate = partition.new_partition_state()
            self._consumed(pstate, offset)
            cache.put(part, pkey, pstate)
            return
        pkey = f"partition:{part}"
        nkey = f"node:{scrape.node}"
        pstate = cache.get(pkey)
        if pstate is None:
            pstate = partition.new_partition_state()
        self._consumed(pstate, offset)
        nstate = cache.get(nkey)
        replay = nstate is not None and offset <= nstate["off"]
        ts = scrape.scrape_ts_ms
        tracing = trace_log.isEnabledFor(logging.DEBUG)
        if pstate["idle"]:
            pstate["idle"] = False
            await self._marker(out, part, pstate, idle=False)
        if not replay:
            rejected = partition.reject_reason(ts, self.trusted_clock_ms(), self.settings)
            late = rejected or partition.late_reason(pstate, ts, self.settings)
            if late is not None:
                reason, detail = late
                self.stats["late"] += 1
                self.metrics.late(reason)
                if reason != partition.WINDOW_CLOSED:
                    self._reject(scrape.node, reason, detail, part, offset, pstate, nstate)
                late_record = late_scrape(reason, detail, self.topics.samples, part, offset, scrape.record)
                await out.put(self.topics.late, late_record.key, late_record.encode(), late_timestamp(reason, ts))
                if nstate is not None:
                    nstate["off"] = offset
                    cache.put(part, nkey, nstate)
                cache.put(part, pkey, pstate)
                if tracing:
                    self._trace("late", part, offset, scrape.node, ts)
                return
        partition.observe(pstate, ts, scrape.node, self.settings)
        due = partition.due_windows(pstate, self.settings)
        if due:
            await self._close(out, part, pstate, due, idle=False)
            nstate = cache.get(nkey)  # the close may have changed or dropped it
        if not replay:
            if nstate is None:
                nstate = node_state.new_state(scrape)
            if nstate["ts"] is not None and ts <= nstate["ts"]:
                self.stats["duplicates"] += 1
                node_state.count_duplicate(nstate, ts, self.settings)
                what = f"duplicate (node state at {nstate['ts']})"
            else:
                # a large scrape, or a node whose state is large already, could take the state
                # over what a changelog record may hold: checked, and undone if so
                checked = max(len(value), cache.stored_size(nkey)) >= statecodec.COMPRESS_FROM
                before = orjson.dumps(nstate) if checked else b""
                nstate["cluster"] = scrape.cluster
                node_state.apply_decoded(nstate, scrape, self.settings)
                what = "applied"
                if checked and not statecodec.fits(encoded := statecodec.encode(nstate)):
                    nstate = orjson.loads(before)
                    what = await self._state_too_large(part, offset, key, value, scrape.node, len(encoded))
                else:
                    self.stats["scrapes"] += 1
            nstate["off"] = offset
            cache.put(part, nkey, nstate)
        else:
            self.stats["replayed"] += 1
            what = f"replayed (node state at offset {nstate['off']})"
        if tracing:
            self._trace(what, part, offset, scrape.node, ts)
        cache.put(part, pkey, pstate)  # written only if its encoding changed

    async def _state_too_large(self, part: int, offset: int, key: bytes | None, value: bytes, node: str,
                               size: int) -> str:
        """The scrape would take its node's state over what a changelog record may hold: it goes
        to the DLQ (reason state_too_large) instead of into the state, which stays as it was."""
        self.stats["dlq"] += 1
        self.stats["state_too_large"] += 1
        self.metrics.dead_lettered("state_too_large")
        error = (f"node {node!r}: with this scrape its state would be {size} bytes encoded, over the "
                 f"{statecodec.MAX_VALUE_BYTES} bytes a changelog record may hold")
        log.error("scrape at %s[%d]@%d dead-lettered: %s", self.topics.samples, part, offset, error)
        await self.out.put(self.topics.dlq, dlq.dlq_key(key), dlq.dead_letter(
            stage="node", reason="state_too_large", error=error, topic=self.topics.samples, partition=part,
            offset=offset, key=key, value=value), None)
        return "dead-lettered (state_too_large)"

    def _reject(self, node: str, reason: str, detail: str, part: int, offset: int, pstate: dict,
                nstate: dict | None) -> None:
        """Count a scrape whose time was not believed: in the stage's stats, per node, and in
        the node's newest open windows (health `scrapes_rejected`) when the node is known."""
        self.stats[reason] += 1
        per_node = self.rejected.setdefault(node, {})
        n = per_node[reason] = per_node.get(reason, 0) + 1
        if n == 1 or n % 100 == 0:
            log.warning("scrape of node %r at partition %d offset %d rejected (%s, %d so far): %s; it goes "
                        "to %s", node, part, offset, reason, n, detail, self.topics.late)
        if nstate is None or pstate["max"] is None:
            return  # nothing open to count it in: .late and the stats hold it
        for size in self.settings.sizes_ms:
            start = partition.window_start(pstate["max"], size)
            if start >= pstate["next"].get(str(size), start) and str(size) in nstate["first"]:
                win = node_state.open_partial(nstate, size, start)
                win["rej"] = win.get("rej", 0) + 1

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

    async def tick(self, part: int) -> None:
        """An idle tick for `part` (in a batch): if it is still idle, close everything it has open."""
        if part not in self.idle_partitions(set(self.last_event) | {part}):
            return
        await self.close_idle(part)

    async def close_idle(self, part: int) -> None:
        """Declare `part` idle now, whatever the wall clock says (in a batch; persisted by the
        next `flush`): close every window it has open, up to the one holding its newest
        scrape, and tell the cluster stage. What a tick does after idle_timeout; a replay or
        a test calls it when its data ends. Nothing happens when the partition is idle already."""
        pkey = f"partition:{part}"
        pstate = self.cache.get(pkey)
        if pstate is None:
            pstate = partition.new_partition_state()
        if pstate["idle"]:
            return
        due = partition.due_windows(pstate, self.settings, idle=True)
        pstate["idle"] = True
        await self._close(self.out, part, pstate, due, idle=True)
        self.cache.put(part, pkey, pstate)
        log.info("partition %d idle for %.0f s: closed %d window(s)", part, self.settings.idle_timeout_s, len(due))

    async def finish(self) -> None:
        """End of data: close every partition's remaining windows as after an idle timeout,
        flushing after each partition."""
        for part in range(self.settings.partitions):
            await self.close_idle(part)
            await self.flush()

    # -- closing ---------------------------------------------------------------------

    async def _close(self, out: Outbox, part: int, pstate: dict, due: list[tuple[int, int]], idle: bool) -> None:
        # Node by node (each node's due windows in order), so that on a partition of many
        # nodes states can go back to bytes once closed (StateCache's bound): memory does not
        # grow with the node count. What is sent, and in which order, is as if window by window.
        records: list[tuple] = []
        partials: list[tuple[int, bytes, bytes, int]] = []  # (due window, key, value, timestamp)
        largest = max(self.settings.sizes_ms)
        for node in list(pstate["nodes"]):
            nkey = f"node:{node}"
            st = self.cache.get(nkey)
            if st is None:
                continue
            gone = False
            for i, (size, start) in enumerate(due):
                partial = node_state.close_window(st, size, start, self.settings)
                if partial is None:
                    continue
                records.extend(aggregate.node_outputs(partial, self.settings))
                partial.pop("slo", None)
                partial["src"] = part
                partial["type"] = "partial"
                # compressed when large, like the node state it comes from (which fits a record)
                partials.append((i, partial["cluster"].encode(), statecodec.encode_json(dumps(partial)), start + size))
                if partial["left"] and size == largest:
                    pstate["nodes"].remove(node)
                    gone = True
                    break
            # written by flush(), after everything sent here was acknowledged
            if gone:
                self.cache.delete(part, nkey)
            else:
                self.cache.put(part, nkey, st)  # back to bytes past MAX_DECODED_STATES
        for size, start in due:
            partition.mark_closed(pstate, size, start)
            self.metrics.window_closed("node", size, start)
            if trace_log.isEnabledFor(logging.DEBUG):
                trace_log.debug("window %d+%d s closed on partition %d (%s) batch %d", start, size // 1000, part,
                                "idle" if idle else "watermark", self.batch)
        await out.encoded(records)
        # window by window, nodes in order within one: the partials of a (window, cluster) in
        # as few messages as fit (streams/bundle.py)
        partials.sort(key=itemgetter(0, 1))
        topic = self.settings.cluster_partials_topic
        for (_i, key, ts_ms), group in groupby(partials, key=itemgetter(0, 1, 3)):
            for value in bundle.pack([p[2] for p in group], statecodec.MAX_VALUE_BYTES):
                await out.put(topic, key, value, ts_ms)
        await self._marker(out, part, pstate, idle=idle)

    async def _marker(self, out: Outbox, part: int, pstate: dict, idle: bool) -> None:
        marker = dumps({"type": "progress", "src": part, "through": partition.progress(pstate), "idle": idle})
        for q in range(self.settings.partitions):
            await out.put(self.settings.cluster_partials_topic, None, marker, None, q)


class ClusterStage:
    """Agent logic on `<prefix>.cluster-partials` (keyed by cluster).

    Like NodeStage: `on_message` processes and persists one message; a batch driver calls
    `message` per message and `flush` once per batch."""

    def __init__(self, settings: StreamSettings, table: MutableMapping, send: Send,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.table = table  # "index:<q>" -> index, "partial:..." -> node partial
        self.send = send
        self.clock = clock
        self.topics = settings.topics
        self.cache = StateCache(table, _cluster_rank)
        self.out = Outbox(send)
        self.started = clock()
        self.heard: dict[int, float] = {}
        self.stats = {"partials": 0, "late": 0, "dlq": 0, "windows": 0, "replayed": 0}
        self.metrics = NO_METRICS  # the worker's /metrics (streams/selfmetrics.py)
        self.heap = heap.PROCESS_TRIMMER

    def silent(self) -> list[int]:
        now = self.clock()
        return [src for src in range(self.settings.partitions)
                if now - self.heard.get(src, self.started) >= self.settings.cluster_timeout_s]

    async def on_message(self, q: int, offset: int, key: bytes | None, value: bytes) -> None:
        await self.message(q, offset, key, value)
        await self.flush()

    async def flush(self) -> None:
        """Wait for every output of the batch, then write the changed index and partials."""
        try:
            await self.out.delivered()
        except BaseException:
            self.cache.clear()
            raise
        await write_table(self.table, self.cache.writes())
        self.heap.maybe_trim()

    def next_offset(self, q: int) -> int | None:
        """The offset after the last partials message of `q` the state holds (None before any)."""
        index = self.cache.get(f"index:{q}")
        return None if index is None or "off" not in index else index["off"] + 1

    async def message(self, q: int, offset: int, key: bytes | None, value: bytes) -> None:
        """One message of a batch (persisted by the next `flush`)."""
        out, cache = self.out, self.cache
        ikey = f"index:{q}"
        index = cache.get(ikey)
        if index is None:
            index = cluster.new_index()
        if offset <= index.get("off", -1):
            self.stats["replayed"] += 1  # applied before a restart: its effects are in the state
            return
        index["off"] = offset
        try:
            raws = bundle.unpack(value) or [value]
            msgs = [statecodec.decode(raw) for raw in raws]
            kinds = [msg["type"] for msg in msgs]
            srcs = [int(msg["src"]) for msg in msgs]
            if len(msgs) > 1 and set(kinds) != {"partial"}:
                raise ValueError(f"a bundle of partials holds {sorted(set(kinds))!r}")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self.stats["dlq"] += 1
            self.metrics.dead_lettered("malformed")
            await out.put(self.topics.dlq, dlq_key(key), dead_letter(
                "malformed", self.settings.cluster_partials_topic, q, offset, key, value, stage="cluster",
                error=f"bad cluster partial: {exc!r}"), None)
            cache.put(q, ikey, index)
            return
        for raw, msg, kind, src in zip(raws, msgs, kinds, srcs):
            self.heard[src] = self.clock()
            if kind == "progress":
                cluster.apply_progress(index, src, msg["through"], msg["idle"])
            else:
                await self._partial(q, offset, key, index, src, raw, msg)
        due = cluster.due_windows(index, self.settings, self.silent())
        for name, size, start in due:
            nodes = cluster.take_window(index, name, size, start, PartitionView(cache, q))
            keys = [cluster.partial_key(name, size, start, n) for n in nodes]
            # keys in node order (take_window sorts the nodes): decoded one at a time
            partials = (statecodec.decode(raw) for raw in map(cache.get_bytes, keys) if raw is not None)
            merged = aggregate.merge_in_order(partials, self.settings)
            history = (cluster.roll_slo(index, name, start, merged, self.settings)
                       if size == self.settings.step_s * 1000 else None)
            await out.encoded(aggregate.cluster_outputs(name, size, start, merged, self.settings, history))
            for k in keys:
                cache.delete(q, k)  # written after the outputs were acknowledged
            self.stats["windows"] += 1
            self.metrics.window_closed("cluster", size, start)
        cache.put(q, ikey, index)

    async def _partial(self, q: int, offset: int, key: bytes | None, index: dict, src: int, raw: bytes,
                       msg: dict) -> None:
        """A node's partial (its own bytes `raw`, decoded `msg`) of message `offset`."""
        name, size, start, node = msg["cluster"], msg["size_ms"], msg["start_ms"], msg["node"]
        reason = cluster.late_reason(index, name, size, start)
        if reason is not None and cluster.reemitted(index, src, size, start):
            self.stats["replayed"] += 1
        elif reason is not None:
            self.stats["late"] += 1
            self.metrics.late(partition.WINDOW_CLOSED)
            await self.out.put(self.topics.late, key, late_partial(
                reason, self.settings.cluster_partials_topic, q, offset, msg).encode(), start + size)
        elif cluster.add_partial(index, name, size, start, node, PartitionView(self.cache, q)):
            self.stats["partials"] += 1
            self.cache.put(q, cluster.partial_key(name, size, start, node), raw)
