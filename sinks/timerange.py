"""The timestamps a store keeps, so that the sink dead-letters a point the store would drop
instead of counting it written.

VictoriaMetrics (checked on 1.79 by writing and reading back) answers 204 to every point and
silently drops those older than its `-retentionPeriod` and those more than 2 days ahead of its
clock; its Prometheus-text import also reads a timestamp below 1e10 as seconds (a point at
1970-01-01T00:01:00Z, 60000 ms, is stored at 1971-11-25), so nothing before EARLIEST_MS can be
written where it belongs. A record with a timestamp outside the accepted range goes to the DLQ
as `timestamp_too_old` or `timestamp_too_far_ahead`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

DAY_MS = 86_400_000
EARLIEST_MS = 10_000_000_000  # 1970-04-26T17:46:40Z: smaller Prometheus-text timestamps are read as seconds
TOO_OLD = "timestamp_too_old"
TOO_FAR_AHEAD = "timestamp_too_far_ahead"

# VictoriaMetrics' -retentionPeriod: a number of months (31 days each) or a number with a unit.
_VM_UNITS_MS = {"": 31 * DAY_MS, "h": 3_600_000, "d": DAY_MS, "w": 7 * DAY_MS, "y": 365 * DAY_MS}
_VM_RETENTION = re.compile(r"""^-retentionPeriod="?([0-9.]+)([hdwy]?)"?\s*$""", re.MULTILINE)
_DURATION = re.compile(r"^([0-9.]+)\s*(ms|s|m|h|d|w|y)$")
_DURATION_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": DAY_MS, "w": 7 * DAY_MS,
                      "y": 365 * DAY_MS}


def parse_duration_ms(text: str) -> int:
    """`90s`, `36h`, `2d`, `1w`, `100y` → milliseconds; raises ValueError."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration (a number with ms, s, m, h, d, w or y)")
    return int(float(match[1]) * _DURATION_UNITS_MS[match[2]])


def vm_retention_ms(flags_page: str) -> int | None:
    """The retention a VictoriaMetrics `/flags` page states (`-retentionPeriod="100y"`), or
    None when it states none (not a VictoriaMetrics single-node, or a page we do not know)."""
    match = _VM_RETENTION.search(flags_page)
    if not match:
        return None
    return int(float(match[1]) * _VM_UNITS_MS[match[2]])


@dataclass(kw_only=True)
class TimestampLimits:
    """The accepted range [now − retention, now + max_ahead], never before EARLIEST_MS.
    `refresh(now_ms)` moves it (once per poll: a point's fate does not need millisecond
    precision); `lo` and `hi` are read on the hot path."""

    retention_ms: int | None = None  # None: the store keeps everything
    max_ahead_ms: int = DAY_MS
    lo: int = field(default=EARLIEST_MS, init=False)
    hi: int = field(default=2**63 - 1, init=False)

    def refresh(self, now_ms: int) -> None:
        self.lo = EARLIEST_MS if self.retention_ms is None else max(EARLIEST_MS, now_ms - self.retention_ms)
        self.hi = now_ms + self.max_ahead_ms

    def violation(self, timestamp_ms: int) -> tuple[str, str] | None:
        """(reason, error) when the store would not keep a point at `timestamp_ms`, else None."""
        if timestamp_ms < self.lo:
            limit = "before 1970-04-26 (read as seconds by the store)" if self.lo == EARLIEST_MS else \
                f"older than the store's retention ({self.retention_ms} ms: earliest kept {self.lo})"
            return TOO_OLD, f"timestamp {timestamp_ms} ms is {limit}: the store would drop it"
        if timestamp_ms > self.hi:
            return TOO_FAR_AHEAD, (f"timestamp {timestamp_ms} ms is more than {self.max_ahead_ms} ms ahead "
                                   f"(latest accepted {self.hi}): the store would drop it")
        return None
