"""The producer of one node: every interval, scrape each target, parse, select and publish
one `ScrapeRecord` per scrape. Framework-free; the CLI wires it up.

Each target runs on its own schedule in one asyncio loop, so a slow target delays nobody
else. A scrape starts at its tick (never before: a timer may wake early) and is stamped with
the wall clock at its real start, as Prometheus does; its timeout runs from that start.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Awaitable, Callable, Mapping, Protocol

from contracts.records import ScrapeRecord
from producers.parser import ParseError, parse_families
from producers.scrape import ScrapeOutcome, Scraper, TargetSettings
from producers.select import Selector
from runtime.selfmetrics import Counters

log = logging.getLogger("kpp.produce")

# The largest encoded record handed to Kafka: under the producer's max request size and the
# topic's max.message.bytes (both about 1 MiB by default), with room for the batch overhead.
DEFAULT_MAX_RECORD_BYTES = 1_000_000
STOP_POLL_S = 0.1  # how often sleeping loops look at the stop event


class Sink(Protocol):
    """Where records go: the Kafka publisher (with its spool) in production."""

    def submit(self, key: bytes, value: bytes, timestamp_ms: int | None = None) -> None: ...


@dataclass(frozen=True, kw_only=True)
class NodeSettings:
    node: str
    cluster: str
    interval_s: float = 15.0
    labels: Mapping[str, str] = field(default_factory=dict)
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    unhealthy_after: int = 3  # intervals without a completed scrape of a target: /healthz fails


def next_tick(now_s: float, interval_s: float) -> float:
    """The next multiple of the interval after `now_s`: every producer of a cluster scrapes
    at the same instants, so scrape timestamps line up across nodes and windows."""
    return (math.floor(now_s / interval_s) + 1) * interval_s


def scrape_stamp_ms(started_ms: int, tick_s: float) -> int:
    """The scrape's timestamp: its real start, never earlier than its tick."""
    return max(started_ms, round(tick_s * 1000))


def ticks_missed(tick_s: float, following_tick_s: float, interval_s: float) -> int:
    """Ticks between the one just scraped and the next one to scrape."""
    return max(0, round((following_tick_s - tick_s) / interval_s) - 1)


async def wait_for_tick(tick_s: float, clock: Callable[[], float], stop: threading.Event,
                        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> bool:
    """Sleep until the wall clock reaches `tick_s`, looping because timers may wake early.
    False when `stop` was set first."""
    while not stop.is_set():
        left = tick_s - clock()
        if left <= 0:
            return True
        await sleep(min(left, STOP_POLL_S))
    return False


def health_status(now_s: float, started_s: float, last_completed: Mapping[str, float | None],
                  interval_s: float, unhealthy_after: int) -> tuple[bool, str]:
    """Unhealthy when some target has had no completed scrape (whatever its outcome) for more
    than `unhealthy_after` intervals: the producer is stuck, or its scrapes never end."""
    limit = unhealthy_after * interval_s
    ages = {t: now_s - (last if last is not None else started_s) for t, last in last_completed.items()}
    stale = {t: age for t, age in ages.items() if age > limit}
    if not stale:
        return True, "ok"
    worst = max(stale, key=stale.__getitem__)
    others = f"; {len(stale) - 1} other target(s) too" if len(stale) > 1 else ""
    return False, (f"no scrape of {worst} completed for {stale[worst]:.1f} s "
                   f"(more than {unhealthy_after} intervals of {interval_s:g} s){others}")


def too_large_record(record: ScrapeRecord, encoded_bytes: int, limit: int, why: str) -> ScrapeRecord:
    """What is published instead of a record Kafka cannot take: the scrape, up = 0, no samples."""
    return replace(record, up=0, samples=(), families={},
                   error=f"record too large for Kafka: {encoded_bytes} bytes with {len(record.samples)} samples, "
                         f"{why} {limit} bytes; the body was {record.body_bytes} bytes")


def fit_record(record: ScrapeRecord, encoded: bytes, limit: int) -> tuple[ScrapeRecord, bytes, bool]:
    """The record and its bytes, or their up = 0 stand-in (and True) when over `limit`."""
    if len(encoded) <= limit:
        return record, encoded, False
    small = too_large_record(record, len(encoded), limit, "more than the limit (--max-record-bytes) of")
    return small, small.encode(), True


def build_record(
    node: NodeSettings, target: str, scrape_ts_ms: int, outcome: ScrapeOutcome, selector: Selector,
) -> tuple[ScrapeRecord, str]:
    """One scrape's record and its outcome reason (`ok`, `parse`, or the scrape's reason)."""
    common = dict(node=node.node, cluster=node.cluster, target=target, scrape_ts_ms=scrape_ts_ms,
                  scrape_duration_s=round(outcome.duration_s, 6), body_bytes=outcome.body_bytes,
                  labels=dict(node.labels))
    if outcome.body is None:
        return ScrapeRecord(up=0, error=outcome.error, **common), outcome.reason
    try:
        parsed = parse_families(outcome.body)
    except ParseError as exc:
        # A broken line fails the whole scrape, as in Prometheus (up = 0).
        return ScrapeRecord(up=0, error=f"parse error: {exc}", **common), "parse"
    selection = selector.select(parsed)
    record = ScrapeRecord(up=1, samples=selection.samples, families=selection.families,
                          kube_proxy_metrics=selection.kube_proxy_metrics, **common)
    return record, "ok"


class NodeProducer:
    def __init__(
        self, node: NodeSettings, targets: list[TargetSettings], selector: Selector, sink: Sink,
        topic: str, counters: Counters | None = None, clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.selector = selector
        self.sink = sink
        self.topic = topic
        self.scrapers = [Scraper(t, clock=clock) for t in targets]
        self.counters = counters or Counters()
        self.clock = clock
        self.started = clock()
        self.last_completed: dict[str, float | None] = {s.target: None for s in self.scrapers}
        self._last_reason: dict[str, str] = {}
        self._last_kube_proxy: dict[str, bool] = {}
        self._in_flight: set[str] = set()
        _describe(self.counters)

    def health(self) -> tuple[bool, str]:
        return health_status(self.clock(), self.started, self.last_completed, self.node.interval_s,
                             self.node.unhealthy_after)

    async def scrape_target(self, scraper: Scraper, tick_s: float) -> ScrapeRecord:
        """Scrape one target now (its tick has come) and hand the record to the sink."""
        self._in_flight.add(scraper.target)
        try:
            outcome = await scraper.fetch()
        finally:
            self._in_flight.discard(scraper.target)
        # Parsing a large body takes a while: off the event loop, so other targets' reads go on.
        return await asyncio.to_thread(self.publish, scraper.target, tick_s, outcome)

    def publish(self, target: str, tick_s: float, outcome: ScrapeOutcome) -> ScrapeRecord:
        """Build the scrape's record (stamped with its real start), hand it to the sink, count it."""
        started_ms = outcome.started_ms if outcome.started_ms is not None else int(self.clock() * 1000)
        stamp = scrape_stamp_ms(started_ms, tick_s)
        record, reason = build_record(self.node, target, stamp, outcome, self.selector)
        record, encoded, too_large = fit_record(record, record.encode(), self.node.max_record_bytes)
        if too_large:
            reason = "too_large"
        self.sink.submit(record.key, encoded, stamp)
        self._account(target, record, reason)
        self.last_completed[target] = self.clock()
        return record

    def refused_by_kafka(self, value: bytes, why: str) -> bytes | None:
        """The stand-in for a record Kafka refused as too large (the publisher asks): up = 0,
        reason `too_large`, counted. None when the value is not a scrape record."""
        try:
            record = ScrapeRecord.decode(value)
        except Exception:  # noqa: BLE001 - not a scrape record: the publisher drops it with an error
            return None
        small = too_large_record(record, len(value), self.node.max_record_bytes,
                                 f"refused by Kafka ({why}); the producer's limit is")
        self.counters.inc("kpp_producer_scrapes_total", target=record.target, outcome="error", reason="too_large")
        self.counters.set("kpp_producer_up", 0, target=record.target)
        log.warning("Kafka refused the %d-byte record of %s at %d as too large (%s); publishing it with up=0 "
                    "and reason too_large instead (raise the topic's max.message.bytes or lower --max-record-bytes)",
                    len(value), record.target, record.scrape_ts_ms, why)
        return small.encode()

    def _account(self, target: str, record: ScrapeRecord, reason: str) -> None:
        c = self.counters
        c.inc("kpp_producer_scrapes_total", target=target, outcome="ok" if record.up else "error", reason=reason)
        c.inc("kpp_producer_scrape_bytes_total", record.body_bytes, target=target)
        c.observe("kpp_producer_scrape_duration_seconds", record.scrape_duration_s, target=target)
        c.set("kpp_producer_up", record.up, target=target)
        c.inc("kpp_producer_samples_published_total", len(record.samples), target=target)
        if reason == "parse":
            c.inc("kpp_producer_parse_errors_total", target=target)
        # Log on change, not every scrape: a broken target must not become a log storm.
        previous = self._last_reason.get(target)
        if reason != previous:
            if reason == "ok":
                if previous is not None:
                    log.info("target %s is back (node %s)", target, self.node.node)
            else:
                log.warning("scrape of %s failed (%s): %s — counted in kpp_producer_scrapes_total; "
                            "logged again only when the reason changes", target, reason, record.error)
            self._last_reason[target] = reason
        if record.up:
            was = self._last_kube_proxy.get(target)
            if record.kube_proxy_metrics != was:
                if not record.kube_proxy_metrics:
                    log.warning("target %s serves no kubeproxy_* metrics (userspace mode, or not kube-proxy?); "
                                "publishing scrapes with kube_proxy_metrics=false", target)
                elif was is False:
                    log.info("target %s serves kubeproxy_* metrics again", target)
                self._last_kube_proxy[target] = record.kube_proxy_metrics
            c.set("kpp_producer_kube_proxy_metrics", 1 if record.kube_proxy_metrics else 0, target=target)

    def run(self, stop: threading.Event, *, once: bool = False) -> None:
        """Scrape every target on its own schedule until `stop` is set (or once each). A
        scrape still in flight when `stop` is set is abandoned: it observed nothing yet."""
        asyncio.run(self._run(stop, once))

    async def _run(self, stop: threading.Event, once: bool) -> None:
        loops = [asyncio.create_task(self._target_loop(s, stop, once)) for s in self.scrapers]
        try:
            pending = set(loops)
            while pending and not stop.is_set():
                done, pending = await asyncio.wait(pending, timeout=STOP_POLL_S, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()  # a bug in one target's loop ends the producer, never silently
        finally:
            if self._in_flight:
                log.info("stopping: abandoning the scrape(s) in flight of %s", ", ".join(sorted(self._in_flight)))
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            for scraper in self.scrapers:
                await scraper.aclose()

    async def _target_loop(self, scraper: Scraper, stop: threading.Event, once: bool) -> None:
        interval = self.node.interval_s
        tick = next_tick(self.clock(), interval)
        while await wait_for_tick(tick, self.clock, stop):
            await self.scrape_target(scraper, tick)
            if once:
                return
            following = next_tick(self.clock(), interval)
            missed = ticks_missed(tick, following, interval)
            if missed:
                self.counters.inc("kpp_producer_missed_ticks_total", missed, target=scraper.target)
                log.warning("scraping %s ended %.1f s after its tick, past the %g s interval: %d tick(s) skipped",
                            scraper.target, self.clock() - tick, interval, missed)
            tick = following

    def close(self) -> None:
        """Nothing to release: the scrapers close their connections when `run()` ends."""


def _describe(c: Counters) -> None:
    c.describe("kpp_producer_scrapes_total", "counter", "Scrapes by target, outcome and reason.",
               ("target", "outcome", "reason"))
    c.describe("kpp_producer_scrape_bytes_total", "counter", "Body bytes read from targets.", ("target",))
    c.describe("kpp_producer_scrape_duration_seconds", "histogram", "Duration of scrapes, by target.", ("target",))
    c.describe("kpp_producer_up", "gauge", "1 when the last scrape of the target succeeded.", ("target",))
    c.describe("kpp_producer_samples_published_total", "counter", "Selected samples handed to Kafka.", ("target",))
    c.describe("kpp_producer_parse_errors_total", "counter", "Scrapes whose body was not valid text format.",
               ("target",))
    c.describe("kpp_producer_kube_proxy_metrics", "gauge", "1 when the target serves kubeproxy_* families.",
               ("target",))
    c.describe("kpp_producer_missed_ticks_total", "counter", "Scrape ticks skipped because scraping overran.",
               ("target",))
