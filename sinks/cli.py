"""`kpp sink`: consume the derived topics (and, with --raw, the raw samples) and write them
to VictoriaMetrics, a Prometheus remote-write receiver or an Influx line-protocol endpoint."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time

from runtime.config import vm_url
from contracts.errors import ConfigError
from kafka_io.connection import KafkaConnection, capture_client_failures
from runtime.options import Option, add_command, byte_size, positive_float, resolve_command
from contracts.topics import DEFAULT_PREFIX, Topics
from runtime.selfmetrics import Counters, serve
from sinks.loop import LoopSettings, SinkLoop
from sinks.series import parse_extra_labels
from sinks.sink import Backoff, BatchingSink, BatchLimits
from sinks.timerange import TimestampLimits, parse_duration_ms, vm_retention_ms
from sinks.writers import WRITERS, VictoriaMetricsWriter, Writer, WriterSettings

log = logging.getLogger("kpp.sink")


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def retention_setting(text: str) -> int | str | None:
    """`auto`, `none` (None) or a duration in milliseconds (`100y`, `31d`, `720h`)."""
    if text.strip().lower() in ("auto", "none"):
        return None if text.strip().lower() == "none" else "auto"
    return positive_duration_ms(text)


def positive_duration_ms(text: str) -> int:
    value = parse_duration_ms(text)
    if value <= 0:
        raise ValueError("must be a positive duration")
    return value


OPTIONS = (
    Option("to", "store protocol", "victoriametrics", "KPP_SINK_TO", choices=tuple(WRITERS)),
    Option("url", "store URL; a base URL gets the protocol's path (/api/v1/import/prometheus, "
           "/api/v1/write, /write); default for victoriametrics: $VM_URL or http://127.0.0.1:8428",
           None, "KPP_SINK_URL", metavar="URL"),
    Option("topics", "topics to consume; repeatable (default: the five derived topics of the prefix)", [],
           "KPP_SINK_TOPICS", repeated=True, metavar="TOPIC"),
    Option("raw", "also write the raw kube-proxy samples of <prefix>.samples", False, "KPP_SINK_RAW",
           flag_only=True),
    Option("topic_prefix", "prefix of the topic names", DEFAULT_PREFIX, "KPP_TOPIC_PREFIX", metavar="PREFIX"),
    Option("group", "Kafka consumer group (all sink processes of one store share it)", None,
           "KPP_SINK_GROUP", metavar="GROUP"),
    Option("dlq_topic", "dead-letter topic (default <prefix>.dlq)", None, "KPP_SINK_DLQ_TOPIC", metavar="TOPIC"),
    Option("label", "extra label NAME=VALUE on every series; repeatable", [], "KPP_SINK_LABELS",
           repeated=True, metavar="NAME=VALUE"),
    Option("header", "extra HTTP header NAME=VALUE on every write (e.g. Authorization); repeatable", [],
           "KPP_SINK_HEADERS", repeated=True, metavar="NAME=VALUE"),
    Option("batch_points", "flush when this many points are buffered", 20000, "KPP_SINK_BATCH_POINTS",
           kind=positive_int, metavar="N"),
    Option("batch_bytes", "flush when the encoded batch reaches this size", "4MiB", "KPP_SINK_BATCH_BYTES",
           kind=byte_size, metavar="SIZE"),
    Option("batch_interval", "flush at least this often (seconds)", 1.0, "KPP_SINK_BATCH_INTERVAL",
           kind=positive_float, metavar="SECONDS"),
    Option("timeout", "HTTP timeout of one write (seconds)", 10.0, "KPP_SINK_TIMEOUT", kind=positive_float,
           metavar="SECONDS"),
    Option("max_backoff", "longest wait between retries while the store is away (seconds)", 15.0,
           "KPP_SINK_MAX_BACKOFF", kind=positive_float, metavar="SECONDS"),
    Option("ca_file", "CA bundle for an https store", None, "KPP_SINK_CA_FILE", metavar="FILE"),
    Option("listen", "HOST:PORT of the sink's own /metrics, /healthz (liveness: 200 while the consume loop "
           "runs, also while the store is down and consumption paused) and /readyz (503 while the store is "
           "down) (empty: off)", "127.0.0.1:9812",
           "KPP_SINK_LISTEN", metavar="HOST:PORT"),
    Option("retention", "the store's retention period: a record older goes to the DLQ (the store would "
           "drop it without a word); auto: ask VictoriaMetrics (its /flags page), none: no limit", "auto",
           "KPP_SINK_RETENTION", kind=retention_setting, metavar="DURATION|auto|none"),
    Option("max_ahead", "a record more than this ahead of the sink's clock goes to the DLQ (VictoriaMetrics "
           "drops points over 2 days ahead of its own clock; the default leaves a day for clock skew)", "1d",
           "KPP_SINK_MAX_AHEAD", kind=positive_duration_ms, metavar="DURATION"),
)

DESCRIPTION = """\
Consume the derived topics (<prefix>.rates, .quantiles, .gauges, .health, .slo) in a consumer
group and write every value as a series kubeproxy:<metric>:<value> (timestamp = window end)
to the store. Offsets are committed only after the store acknowledged a batch; while the
store is away consumption pauses and writes are retried with backoff. Records the store
rejects for good, and records that cannot be decoded, go to <prefix>.dlq with the reason.
Run as many sink processes as partitions allow: they share the group.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "sink", help="write the derived topics to VictoriaMetrics, remote write or Influx",
                         description=DESCRIPTION, options=OPTIONS, config_env="KPP_SINK_CONFIG")
    parser.set_defaults(func=run)


def build(values: dict, connection: KafkaConnection, counters: Counters) -> SinkLoop:
    writer_class = WRITERS[values["to"]]
    url = values["url"] or (vm_url() if values["to"] == "victoriametrics" else None)
    if not url:
        raise ConfigError(f"--to {values['to']} needs --url (or KPP_SINK_URL)")
    headers = {}
    for pair in values["header"]:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--header {pair!r} is not NAME=VALUE")
        headers[name.strip()] = value
    writer = writer_class(WriterSettings(url=url, timeout_s=values["timeout"], headers=headers,
                                         verify=values["ca_file"] or True))
    topics = Topics(values["topic_prefix"])
    names = list(values["topics"] or topics.derived())
    raw_topic = None
    if values["raw"]:
        raw_topic = topics.samples
        if raw_topic not in names:
            names.append(raw_topic)
    limits = BatchLimits(max_points=values["batch_points"], max_bytes=values["batch_bytes"],
                         max_age_s=values["batch_interval"])
    settings = LoopSettings(
        timestamps=TimestampLimits(retention_ms=store_retention(values["retention"], writer),
                                   max_ahead_ms=values["max_ahead"]),
        topics=tuple(names), group_id=values["group"] or f"kpp-sink-{values['to']}",
        dlq_topic=values["dlq_topic"] or topics.dlq, raw_topic=raw_topic,
        extra_labels=parse_extra_labels(values["label"]),
        client_id=f"kpp-sink-{socket.gethostname()}-{os.getpid()}",
    )
    return SinkLoop(connection, writer, BatchingSink(writer, limits), settings, counters,
                    Backoff(cap_s=values["max_backoff"]))


def store_retention(setting: int | str | None, writer: Writer) -> int | None:
    """The retention to check records against: the one given, or (auto) the one VictoriaMetrics
    states on its /flags page; None when unknown (then nothing is checked against it)."""
    if setting != "auto":
        return setting  # type: ignore[return-value]
    if not isinstance(writer, VictoriaMetricsWriter):
        return None
    page = writer.flags_page()
    retention = vm_retention_ms(page) if page is not None else None
    if retention is None:
        log.warning("cannot learn the store's retention from %s/flags: records older than it would be "
                    "dropped by the store without a trace; set --retention", writer.base_url)
    return retention


def run(args: argparse.Namespace) -> int:
    # The sink's consumer is aiokafka's: its records are kept back like kafka-python's (a
    # reconnect storm during an outage, a transient "coordinator not available" at a fresh
    # broker); the cause of a failed connection is still taken from them.
    capture_client_failures("aiokafka", show_below_critical=getattr(args, "log_level", None) == "DEBUG")
    values = resolve_command(OPTIONS, args)
    connection = KafkaConnection.from_sources(args)
    counters = Counters()
    loop = build(values, connection, counters)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = None
    if values["listen"]:
        server = serve(values["listen"], counters, lambda: _health(loop), lambda: _ready(loop))
    retention = loop.settings.timestamps.retention_ms
    # one start line (the retention in it): an operator reads the whole set-up at once
    log.info("sink %s → %s: topics %s, group %s, Kafka %s, %s", values["to"], loop.writer.url,
             ", ".join(loop.settings.topics), loop.settings.group_id, connection.describe(),
             "no retention check" if retention is None
             else f"store retention {retention / 86_400_000:.0f} days (older records go to the DLQ)")
    try:
        connection.check()  # refused credentials: one clear error and exit
        loop.run(stop)
    finally:
        loop.writer.close()
        if server is not None:
            server.shutdown()
    return 0


#: /healthz fails when the consume loop has not come round for this long (stuck: a restart helps).
STALL_AFTER_S = 300.0


def sink_liveness(now: float, loop_at: float | None, store_down: bool,
                  stall_after_s: float = STALL_AFTER_S) -> tuple[bool, str]:
    """Alive while the consume loop comes round, also while the store is down: then the sink is
    paused and loses nothing, which is its job (a restart would not bring the store back)."""
    if loop_at is None:
        return True, "starting"
    quiet = now - loop_at
    if quiet > stall_after_s:
        return False, f"consume loop stuck: it has not come round for {quiet:.0f} s"
    return True, "ok: store unavailable, consumption paused" if store_down else "ok"


def sink_readiness(store_down: bool, last_flush_age_s: float | None) -> tuple[bool, str]:
    """Ready while the store takes writes."""
    if store_down:
        return False, "store unavailable: consumption paused"
    return True, "ok" + (f": last flush {last_flush_age_s:.0f} s ago" if last_flush_age_s is not None else "")


def _health(loop: SinkLoop) -> tuple[bool, str]:
    return sink_liveness(time.monotonic(), loop.loop_at, loop.store_down)


def _ready(loop: SinkLoop) -> tuple[bool, str]:
    last = loop.last_flush_wall
    return sink_readiness(loop.store_down, None if last is None else time.time() - last)
