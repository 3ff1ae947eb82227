"""The producer of one node: every interval, scrape each target, parse, select and publish
one `ScrapeRecord` per scrape. Framework-free; the CLI wires it up."""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol

from contracts.records import ScrapeRecord
from producers.parser import ParseError, parse_families
from producers.scrape import ScrapeOutcome, Scraper, TargetSettings
from producers.select import Selector
from contracts.selfmetrics import Counters

log = logging.getLogger("kpp.produce")


class Sink(Protocol):
    """Where records go: the Kafka publisher (with its spool) in production."""

    def submit(self, key: bytes, value: bytes, timestamp_ms: int | None = None) -> None: ...


@dataclass(frozen=True, kw_only=True)
class NodeSettings:
    node: str
    cluster: str
    interval_s: float = 15.0
    labels: Mapping[str, str] = field(default_factory=dict)


def next_tick(now_s: float, interval_s: float) -> float:
    """The next multiple of the interval after `now_s`: every producer of a cluster scrapes
    at the same instants, so scrape timestamps line up across nodes and windows."""
    return (math.floor(now_s / interval_s) + 1) * interval_s


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
        self.scrapers = [Scraper(t) for t in targets]
        self.counters = counters or Counters()
        self.clock = clock
        self._last_reason: dict[str, str] = {}
        self._last_kube_proxy: dict[str, bool] = {}
        self.last_scrape_wall: float | None = None
        _describe(self.counters)

    def scrape_all(self, scrape_ts_ms: int) -> list[ScrapeRecord]:
        records = []
        for scraper in self.scrapers:
            target = scraper.settings.url
            outcome = scraper.scrape()
            record, reason = build_record(self.node, target, scrape_ts_ms, outcome, self.selector)
            self.sink.submit(record.key, record.encode(), scrape_ts_ms)
            self._account(target, record, reason)
            records.append(record)
        self.last_scrape_wall = self.clock()
        return records

    def _account(self, target: str, record: ScrapeRecord, reason: str) -> None:
        c = self.counters
        c.inc("kpp_producer_scrapes_total", target=target, outcome="ok" if record.up else "error", reason=reason)
        c.inc("kpp_producer_scrape_bytes_total", record.body_bytes, target=target)
        c.set("kpp_producer_scrape_duration_seconds", record.scrape_duration_s, target=target)
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
        interval = self.node.interval_s
        while not stop.is_set():
            tick = next_tick(self.clock(), interval)
            if stop.wait(max(0.0, tick - self.clock())):
                return
            self.scrape_all(int(round(tick * 1000)))
            late = self.clock() - tick
            if late > interval:
                missed = int(late // interval)
                self.counters.inc("kpp_producer_missed_ticks_total", missed)
                log.warning("scraping took %.1f s, longer than the %.0f s interval: %d tick(s) skipped",
                            late, interval, missed)
            if once:
                return

    def close(self) -> None:
        for scraper in self.scrapers:
            scraper.close()


def _describe(c: Counters) -> None:
    c.describe("kpp_producer_scrapes_total", "counter", "Scrapes by target, outcome and reason.")
    c.describe("kpp_producer_scrape_bytes_total", "counter", "Body bytes read from targets.")
    c.describe("kpp_producer_scrape_duration_seconds", "gauge", "Duration of the last scrape.")
    c.describe("kpp_producer_up", "gauge", "1 when the last scrape of the target succeeded.")
    c.describe("kpp_producer_samples_published_total", "counter", "Selected samples handed to Kafka.")
    c.describe("kpp_producer_parse_errors_total", "counter", "Scrapes whose body was not valid text format.")
    c.describe("kpp_producer_kube_proxy_metrics", "gauge", "1 when the target serves kubeproxy_* families.")
    c.describe("kpp_producer_missed_ticks_total", "counter", "Scrape ticks skipped because scraping overran.")
