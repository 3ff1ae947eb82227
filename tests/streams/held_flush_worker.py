"""`kpp stream` whose node stage is slow to write its states: every flush holds for
KPP_TEST_HOLD_S seconds between the batch's acknowledged outputs and its state writes. Run
as `python held_flush_worker.py <kpp arguments>`.

A stop (SIGTERM) then almost surely finds a batch in the middle of its flush, which on a busy
machine happens by chance: Faust waits for the batch in flight, then the agent takes the
next buffered batch, and is cancelled while flushing it."""

from __future__ import annotations

import asyncio
import os
import sys

from kpp.cli import main
from streams.stages import NodeStage

HOLD_S = float(os.environ.get("KPP_TEST_HOLD_S", "1.5"))
_flush = NodeStage.flush
_batches = 0


async def held_flush(self: NodeStage) -> None:
    global _batches
    if self.out.pending or self.cache.dirty:
        _batches += 1
        await self.out.delivered()
        print(f"HOLDING FLUSH of batch {_batches} ({len(self.cache.dirty)} state(s) unwritten)", flush=True)
        await asyncio.sleep(HOLD_S)
        print(f"WRITING STATES of batch {_batches}", flush=True)
    await _flush(self)


NodeStage.flush = held_flush

if __name__ == "__main__":
    sys.exit(main())
