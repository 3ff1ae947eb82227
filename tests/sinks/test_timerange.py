"""The store's accepted timestamp range (pure), and how the sink's decode step uses it: a record
outside goes to the DLQ with the reason and its points count as dropped, by the fast path and
the contract path alike."""

from __future__ import annotations

import pytest

from contracts.derived import DerivedRecord
from kafka_io.connection import KafkaConnection
from sinks.loop import LoopSettings, SinkLoop
from sinks.sink import BatchingSink
from sinks.timerange import (
    DAY_MS, EARLIEST_MS, TOO_FAR_AHEAD, TOO_OLD, TimestampLimits, parse_duration_ms, vm_retention_ms,
)
from sinks.writers import WRITERS, WriterSettings

NOW = 1_800_000_000_000


@pytest.mark.parametrize("text, ms", [("90s", 90_000), ("36h", 36 * 3_600_000), ("2d", 2 * DAY_MS),
                                      ("1w", 7 * DAY_MS), ("100y", 100 * 365 * DAY_MS), ("1.5d", 36 * 3_600_000)])
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("bad", ["", "2", "d", "2 days", "-1d"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration_ms(bad)


@pytest.mark.parametrize("page, ms", [
    ('-loggerLevel="WARN"\n-retentionPeriod="100y"\n-search.latencyOffset="0s"\n', 100 * 365 * DAY_MS),
    ('-retentionPeriod="1"\n', 31 * DAY_MS),  # no unit: months of 31 days
    ('-retentionPeriod="12"\n', 12 * 31 * DAY_MS),
    ('-retentionPeriod="2w"\n', 14 * DAY_MS),
    ('-retentionPeriod="36h"\n', 36 * 3_600_000),
    ('-httpListenAddr=":8480"\n', None),  # vminsert: no retention of its own
    ("<html>not found</html>", None),
])
def test_retention_from_the_vm_flags_page(page: str, ms: int | None) -> None:
    assert vm_retention_ms(page) == ms


def test_the_accepted_range() -> None:
    limits = TimestampLimits(retention_ms=31 * DAY_MS, max_ahead_ms=DAY_MS)
    limits.refresh(NOW)
    assert limits.violation(NOW) is None
    assert limits.violation(NOW - 31 * DAY_MS) is None and limits.violation(NOW + DAY_MS) is None
    assert limits.violation(NOW - 31 * DAY_MS - 1)[0] == TOO_OLD
    assert limits.violation(NOW + DAY_MS + 1)[0] == TOO_FAR_AHEAD
    unlimited = TimestampLimits()
    unlimited.refresh(NOW)
    assert unlimited.violation(EARLIEST_MS) is None
    reason, error = unlimited.violation(EARLIEST_MS - 1)
    assert reason == TOO_OLD and "1970-04-26" in error


def record(end_ms: int) -> DerivedRecord:
    return DerivedRecord(kind="gauges", scope="node", cluster="c", node="n", window_start_ms=end_ms - 60_000,
                         window_end_ms=end_ms, metric="m", values={"last": 1.0, "max": 2.0, "min": None})


@pytest.mark.parametrize("to", list(WRITERS))
@pytest.mark.parametrize("end_ms, reason", [(NOW, None), (NOW + 2 * DAY_MS, TOO_FAR_AHEAD),
                                            (4_102_444_800_000, TOO_FAR_AHEAD), (60_000, TOO_OLD),
                                            (NOW - 40 * DAY_MS, TOO_OLD)])
def test_a_record_outside_the_range_is_dead_lettered_and_its_points_counted_dropped(
        to: str, end_ms: int, reason: str | None) -> None:
    writer = WRITERS[to](WriterSettings(url="http://127.0.0.1:1"))
    limits = TimestampLimits(retention_ms=31 * DAY_MS)
    loop = SinkLoop(KafkaConnection(bootstrap="127.0.0.1:1"), writer, BatchingSink(writer),
                    LoopSettings(topics=("t",), group_id="g", dlq_topic="d", timestamps=limits))
    limits.refresh(NOW)  # the loop refreshes it once per poll
    value = record(end_ms).encode()
    item = loop.to_item("t", 0, 1, b"n", value)
    assert item == loop._contract_item("t", 0, 1, b"n", value)  # fast path and contract path agree
    assert item.dlq_reason == reason
    if reason is None:
        assert item.points == 2 and item.dropped == 0 and item.fragment
    else:
        assert item.points == 0 and item.dropped == 2 and item.fragment == b""
        assert str(end_ms) in item.dlq_error
