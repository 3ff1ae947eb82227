"""A deterministic model of what a kill -9 can leave behind, to test the stages' crash safety
without a broker and at every possible crash point.

What Faust + Kafka guarantee, and what the model keeps:
* a table write goes to the table's changelog; the changelog is written in order, so a crash
  keeps a prefix of the writes (`journal[:crash_at]`);
* the stages await the delivery of their outputs before the state writes that depend on
  them, so every output sent before the crash is kept;
* input offsets are committed only after the changelog writes of the committed events were
  flushed: after the restart each input partition resumes from some offset at or before the
  first event whose processing had not finished (how far before is random here);
* a restarted worker starts with tables rebuilt from the changelog and nothing else.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from streams.config import StreamSettings
from streams.stages import ClusterStage, NodeStage
from tests.streams.reference import FakeClock, partition_of, recording_send


class Crash(Exception):
    """Raised by a table write when the crash point is reached (the write is lost)."""


class JournalTable(dict):
    """A dict table that records every write, as Faust's changelog would."""

    def __init__(self, name: str, journal: list, crash_at: int | None) -> None:
        super().__init__()
        self.name, self.journal, self.crash_at = name, journal, crash_at

    def _write(self, key, value) -> None:
        if self.crash_at is not None and len(self.journal) >= self.crash_at:
            raise Crash()
        self.journal.append((self.name, key, value))

    def __setitem__(self, key, value) -> None:
        self._write(key, value)
        super().__setitem__(key, value)

    def pop(self, key, default=None):
        if key in self:
            self._write(key, None)
        return super().pop(key, default)


def restore(journal: list, name: str) -> dict:
    table: dict = {}
    for table_name, key, value in journal:
        if table_name != name:
            continue
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return table


def run_with_crash(settings: StreamSettings, messages: list[tuple[bytes | None, bytes]], crash_at: int | None,
                   *, seed: int = 0, max_rewind: int = 5, batch: int = 1) -> tuple[list, int]:
    """Run `messages` through the stages, flushing each stage every `batch` events of it (as
    the agents do); crash at the `crash_at`-th table write (None: never), restart as
    described above and run to the end. Returns (everything sent except the
    cluster-partials, number of table writes of the run)."""
    return asyncio.run(_run(settings, messages, crash_at, seed, max_rewind, batch))


async def _run(settings, messages, crash_at, seed, max_rewind, batch):
    rng = random.Random(seed)
    sent: list[tuple[str, bytes | None, bytes]] = []
    samples: dict[int, list] = defaultdict(list)
    for key, value in messages:
        samples[partition_of(key, settings.partitions) if key is not None else 0].append((key, value))
    partials: dict[int, list] = defaultdict(list)  # the cluster-partials topic, kept across the crash

    send = recording_send(settings, sent, partials)

    journal: list = []
    node_pos: dict[int, int] = defaultdict(int)  # next offset to process, per input partition
    cluster_pos: dict[int, int] = defaultdict(int)
    # offsets up to which everything was flushed: what a commit may cover
    node_done: dict[int, int] = defaultdict(int)
    cluster_done: dict[int, int] = defaultdict(int)
    crashed = False

    def start(tables):
        clock = FakeClock()
        return NodeStage(settings, tables[0], send, clock=clock), ClusterStage(settings, tables[1], send, clock=clock), clock

    tables = (JournalTable("node", journal, crash_at), JournalTable("cluster", journal, crash_at))
    node, cluster, clock = start(tables)
    unflushed = {"n": 0, "c": 0}

    async def flush(kind: str) -> None:
        if kind == "n":
            await node.flush()
            node_done.update(node_pos)
        else:
            await cluster.flush()
            cluster_done.update(cluster_pos)
        unflushed[kind] = 0

    async def step() -> bool:
        """Process one message of a partition chosen at random; False when all are consumed."""
        choices = [("n", p) for p in sorted(samples) if node_pos[p] < len(samples[p])]
        choices += [("c", q) for q in sorted(partials) if cluster_pos[q] < len(partials[q])]
        if not choices:
            for kind in ("n", "c"):
                if unflushed[kind]:
                    await flush(kind)
                    return True
            return False
        kind, p = rng.choice(choices)
        if kind == "n":
            key, value = samples[p][node_pos[p]]
            await node.sample(p, node_pos[p], key, value)
            node_pos[p] += 1
        else:
            key, value = partials[p][cluster_pos[p]]
            await cluster.message(p, cluster_pos[p], key, value)
            cluster_pos[p] += 1
        unflushed[kind] += 1
        if unflushed[kind] >= batch:
            await flush(kind)
        return True

    async def finish() -> None:
        while await step():
            pass
        for p in range(settings.partitions):
            await node.close_idle(p)
            await flush("n")
        while await step():
            pass

    try:
        await finish()
    except Crash:
        crashed = True
    writes = len(journal)
    if crashed:
        # Restart: tables from the changelog prefix, inputs from a committed offset at or before
        # the first unfinished event of each partition.
        restored = (JournalTable("node", journal, None), JournalTable("cluster", journal, None))
        dict.update(restored[0], restore(journal, "node"))
        dict.update(restored[1], restore(journal, "cluster"))
        for pos, done in ((node_pos, node_done), (cluster_pos, cluster_done)):
            for p in list(pos):
                pos[p] = max(0, done[p] - rng.randint(0, max_rewind))
        unflushed.update(n=0, c=0)
        node, cluster, clock = start(restored)
        await finish()
    return sent, writes
