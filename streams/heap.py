"""Give the C heap's free memory back to the operating system now and then.

A batch over many nodes decodes thousands of node states (StateCache holds at most 500 at
once, but each is decoded, changed and encoded again), and a window close builds every node's
records and partials: hundreds of MB allocated and freed within a batch. glibc's malloc keeps
what was freed in the middle of its heap (only the top is returned, and the top usually holds a
state value written since): a run of 5,000 nodes held ~100 MiB of free C heap at its end
(bench/profile_streams.py --rss prints the split), and trimming every 10 s took its RSS from 453
to 382 MiB. `malloc_trim(0)` returns the free pages
(madvise) wherever they are. It walks the heap (~15 ms for ~200 MB, more when it frees a lot),
and pages it returned are faulted in again when reused, so it runs at most every
`interval_s`, not after every batch.

Where the C library has no malloc_trim (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from typing import Callable

#: Seconds between two trims at most: <1% of a core at ~50 ms a trim.
TRIM_INTERVAL_S = 10.0


def libc_malloc_trim() -> Callable[[], object] | None:
    """glibc's `malloc_trim(0)` as a callable, or None where the C library has none."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class HeapTrimmer:
    """Calls `trim` when `due()` is asked and `interval_s` passed since the last call (or since
    creation): the stages ask after each flush."""

    __slots__ = ("trim", "clock", "interval_s", "last", "trims")

    def __init__(self, trim: Callable[[], object] | None, clock: Callable[[], float] = time.monotonic,
                 interval_s: float = TRIM_INTERVAL_S) -> None:
        self.trim = trim
        self.clock = clock
        self.interval_s = interval_s
        self.last = clock()
        self.trims = 0

    def maybe_trim(self) -> bool:
        """Trim if the interval passed; True when it did."""
        if self.trim is None:
            return False
        now = self.clock()
        if now - self.last < self.interval_s:
            return False
        self.trim()
        self.last = self.clock()
        self.trims += 1
        return True


#: The process's trimmer, shared by its stages (the heap is the process's).
PROCESS_TRIMMER = HeapTrimmer(libc_malloc_trim())
