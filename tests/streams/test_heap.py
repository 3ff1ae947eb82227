"""Giving the C heap's free memory back (streams/heap.py): when the stages trim, and that a
trim returns freed memory to the OS."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from streams import heap
from streams.config import StreamSettings
from streams.stages import ClusterStage, NodeStage
from tests.streams.reference import run_reference
from tests.streams.simdata import scrape_records


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_trims_only_once_the_interval_passed_since_the_last_trim():
    calls = []
    clock = FakeClock()
    trimmer = heap.HeapTrimmer(lambda: calls.append(clock.now), clock=clock, interval_s=10.0)
    assert not trimmer.maybe_trim()  # the interval counts from creation
    clock.now += 9.9
    assert not trimmer.maybe_trim()
    clock.now += 0.1
    assert trimmer.maybe_trim()
    clock.now += 5
    assert not trimmer.maybe_trim()
    clock.now += 5
    assert trimmer.maybe_trim()
    assert calls == [110.0, 120.0] and trimmer.trims == 2


def test_without_malloc_trim_nothing_is_called():
    clock = FakeClock()
    trimmer = heap.HeapTrimmer(None, clock=clock, interval_s=0.0)
    clock.now += 1
    assert not trimmer.maybe_trim() and trimmer.trims == 0


def test_both_stages_ask_the_process_trimmer_after_each_flush(monkeypatch):
    asked = []

    class Counting:
        def maybe_trim(self) -> bool:
            asked.append(1)
            return False

    monkeypatch.setattr(heap, "PROCESS_TRIMMER", Counting())
    settings = StreamSettings(topic_prefix="h", partitions=1)
    records = scrape_records(nodes=3, minutes=3, version="1.28")
    run_reference(settings, [(r.key, r.encode()) for r in records], batch=4)
    assert NodeStage(settings, {}, None).heap is heap.PROCESS_TRIMMER
    assert ClusterStage(settings, {}, None).heap is heap.PROCESS_TRIMMER
    # one ask per flush of either stage: at least one per batch of the node stage
    assert len(asked) >= len(records) // 4


@pytest.mark.skipif(heap.libc_malloc_trim() is None, reason="the C library has no malloc_trim")
def test_a_trim_returns_memory_freed_below_live_values_to_the_os():
    # a fresh interpreter: ~100 MB of state-sized values freed with every 20th kept, as a batch
    # over many nodes leaves the heap; the kept ones pin the heap's top, so free() returns little
    script = textwrap.dedent("""
        from streams import heap
        def rss_mib():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096 / 2**20
        kept, freed = [], []
        for i in range(8000):
            (kept if i % 20 == 0 else freed).append(bytes(13_500) + bytes([i % 256]))
        freed.clear()
        before = rss_mib()
        assert heap.HeapTrimmer(heap.libc_malloc_trim(), interval_s=0.0).maybe_trim()
        print(before, rss_mib(), len(kept))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    before, after, _kept = (float(x) for x in out.stdout.split())
    assert before - after > 50, (before, after)
