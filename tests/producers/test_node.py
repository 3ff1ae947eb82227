"""The producer's schedule and bookkeeping: scrapes start at their tick (never before) and are
stamped with their real start, the timeout runs from that start, skipped ticks are counted,
/healthz fails when a target's scrapes stop completing, and a record too large for Kafka
becomes an up = 0 record saying so."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from contracts.records import ScrapeRecord
from producers.node import (NodeProducer, NodeSettings, build_record, fit_record, health_status,
                            scrape_stamp_ms, ticks_missed, wait_for_tick)
from producers.scrape import ScrapeOutcome, TargetSettings
from producers.select import Selector
from tests.conftest import FIXTURES

NODE = NodeSettings(node="node-a", cluster="c1", interval_s=15.0)
BODY = (FIXTURES / "v1.28.0-iptables.txt").read_text()


class ListSink:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes, int | None]] = []

    def submit(self, key: bytes, value: bytes, timestamp_ms: int | None = None) -> None:
        self.records.append((key, value, timestamp_ms))


@pytest.mark.parametrize("started_ms, tick_s, stamp", [
    (1_700_000_015_004, 1_700_000_015.0, 1_700_000_015_004),  # the real start, a little after the tick
    (1_700_000_037_000, 1_700_000_015.0, 1_700_000_037_000),  # a stalled machine: 22 s late, stamped late
    (1_700_000_014_999, 1_700_000_015.0, 1_700_000_015_000),  # never before its tick
    (300, 3 * 0.1, 300),  # ticks that are not whole milliseconds in binary
])
def test_scrape_is_stamped_with_its_real_start(started_ms: int, tick_s: float, stamp: int) -> None:
    assert scrape_stamp_ms(started_ms, tick_s) == stamp


def test_wait_for_tick_loops_when_the_timer_wakes_early() -> None:
    now = [99.0]
    slept: list[float] = []

    async def early_sleep(seconds: float) -> None:  # wakes at 90 % of what was asked
        slept.append(seconds)
        now[0] += seconds * 0.9

    assert asyncio.run(wait_for_tick(100.0, lambda: now[0], threading.Event(), early_sleep))
    assert now[0] >= 100.0 and len(slept) > 10
    stop = threading.Event()
    stop.set()
    assert not asyncio.run(wait_for_tick(200.0, lambda: now[0], stop, early_sleep))


@pytest.mark.parametrize("tick, following, missed", [(15, 30, 0), (15, 45, 1), (15, 360, 22), (15, 15, 0)])
def test_ticks_missed(tick: float, following: float, missed: int) -> None:
    assert ticks_missed(tick, following, 15.0) == missed


@pytest.mark.parametrize("now, last, ok, text", [
    (1040.0, {"a": 1030.0, "b": 1035.0}, True, "ok"),
    (1040.0, {"a": None}, True, "ok"),  # started at 1000: 40 s <= 3 intervals of 15 s
    (1046.0, {"a": None}, False, "no scrape of a completed for 46.0 s (more than 3 intervals of 15 s)"),
    (1100.0, {"a": 1090.0, "b": 1040.0, "c": 1050.0}, False, "no scrape of b completed for 60.0 s"),
])
def test_health_fails_when_a_target_stops_completing(now: float, last: dict, ok: bool, text: str) -> None:
    healthy, reason = health_status(now, 1000.0, last, 15.0, 3)
    assert healthy is ok and reason.startswith(text)
    if len([t for t in last.values() if t is None or now - t > 45]) > 1:
        assert "1 other target(s) too" in reason


def test_a_record_too_large_for_kafka_is_published_as_up0_with_sizes() -> None:
    record, reason = build_record(NODE, "http://t/metrics", 15_000, ScrapeOutcome(BODY, 0.01, len(BODY), "ok"),
                                  Selector())
    encoded = record.encode()
    assert reason == "ok" and fit_record(record, encoded, len(encoded)) == (record, encoded, False)
    small, small_bytes, too_large = fit_record(record, encoded, len(encoded) - 1)
    assert too_large and small_bytes == small.encode() and len(small_bytes) < 2000
    assert small.up == 0 and small.samples == () and small.families == {}
    assert small.scrape_ts_ms == 15_000 and small.body_bytes == len(BODY)
    assert (f"{len(encoded)} bytes with {len(record.samples)} samples, more than the limit (--max-record-bytes) "
            f"of {len(encoded) - 1} bytes") in small.error


def test_oversized_scrape_is_counted_as_too_large_never_ok() -> None:
    sink = ListSink()
    producer = NodeProducer(NodeSettings(node="n", cluster="c", max_record_bytes=2000), [], Selector(), sink, "t")
    producer.publish("http://t/metrics", 15.0, ScrapeOutcome(BODY, 0.01, len(BODY), "ok", None, 15_003))
    (key, value, ts), = sink.records
    record = ScrapeRecord.decode(value)
    assert record.up == 0 and ts == record.scrape_ts_ms == 15_003 and "2000 bytes" in record.error
    c = producer.counters
    assert c.get("kpp_producer_scrapes_total", target="http://t/metrics", outcome="error", reason="too_large") == 1
    assert c.get("kpp_producer_scrapes_total", target="http://t/metrics", outcome="ok", reason="ok") == 0
    assert c.get("kpp_producer_up", target="http://t/metrics") == 0


def test_refused_by_kafka_gives_a_counted_up0_stand_in() -> None:
    producer = NodeProducer(NODE, [], Selector(), ListSink(), "t")
    record, _ = build_record(NODE, "http://t/metrics", 15_000, ScrapeOutcome(BODY, 0.01, len(BODY), "ok"), Selector())
    value = record.encode()
    stand_in = ScrapeRecord.decode(producer.refused_by_kafka(value, "MessageSizeTooLargeError"))
    assert stand_in.up == 0 and stand_in.scrape_ts_ms == 15_000 and stand_in.samples == ()
    assert f"{len(value)} bytes" in stand_in.error and "refused by Kafka" in stand_in.error
    assert producer.counters.get("kpp_producer_scrapes_total", target="http://t/metrics", outcome="error",
                                 reason="too_large") == 1
    assert producer.refused_by_kafka(b"not a record", "x") is None


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = BODY.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.integration
def test_a_late_scrape_is_stamped_late_and_its_timeout_runs_from_its_start() -> None:
    """The machine stalled: the scrape of the tick at 1000 s starts at 1022 s. It is stamped
    1022 s, and it succeeds: its timeout (1 s) runs from the request, not from the tick."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sink = ListSink()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    producer = NodeProducer(NodeSettings(node="n", cluster="c", interval_s=15.0), [TargetSettings(url=url, timeout_s=1.0)],
                            Selector(), sink, "t", clock=lambda: 1022.5)

    async def scrape_late() -> ScrapeRecord:
        try:
            return await producer.scrape_target(producer.scrapers[0], 1000.0)
        finally:
            await producer.scrapers[0].aclose()

    try:
        record = asyncio.run(scrape_late())
    finally:
        server.shutdown()
    assert record.up == 1, record.error
    assert record.scrape_ts_ms == 1_022_500 == sink.records[0][2]
