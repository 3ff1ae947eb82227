"""`kpp stream`: the Faust worker computing windowed rates, quantiles, gauges, health and the
network-programming SLI per node and per cluster."""

from __future__ import annotations

import argparse
import gc
import logging
import os

from contracts.errors import ConfigError
from kafka_io.connection import KafkaConnection
from runtime.options import Option, add_command, positive_float, resolve_command
from contracts.topics import DEFAULT_PREFIX
from streams.config import DEFAULT_QUANTILES, StreamSettings

log = logging.getLogger("kpp.stream")


def _window(text: str) -> int:
    value = float(text.rstrip("s"))
    if value <= 0 or value != int(value):
        raise ValueError("a window size is a positive whole number of seconds")
    return int(value)


def _quantile(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise ValueError("a quantile is between 0 and 1")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value < 65536:
        raise ValueError("not a TCP port")
    return value


def _listen(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if text and (not sep or not port.isdigit() or int(port) > 65535):
        raise ValueError("not HOST:PORT (empty: off)")
    return text


OPTIONS = (
    Option("window", "tumbling event-time window size in seconds, epoch-aligned; repeatable",
           [60, 300], "KPP_STREAM_WINDOWS", kind=_window, repeated=True, metavar="SECONDS"),
    Option("allowed_lateness", "seconds a scrape may arrive after newer ones of its partition "
           "(watermark = newest scrape time - this); later scrapes go to <prefix>.late",
           30.0, "KPP_STREAM_ALLOWED_LATENESS", kind=_non_negative, metavar="SECONDS"),
    Option("idle_timeout", "wall-clock seconds without any message on a partition after which its "
           "open windows close anyway (data really stopped)", 60.0, "KPP_STREAM_IDLE_TIMEOUT",
           kind=positive_float, metavar="SECONDS"),
    Option("quantile", "quantile of the duration histograms to publish; repeatable",
           list(DEFAULT_QUANTILES), "KPP_STREAM_QUANTILES", kind=_quantile, repeated=True, metavar="Q"),
    Option("slo_threshold", "network-programming latency SLO: the pooled p99 over the SLO window "
           "must not exceed this many seconds (Kubernetes defines no number)", 30.0,
           "KPP_STREAM_SLO_THRESHOLD", kind=positive_float, metavar="SECONDS"),
    Option("slo_window", "rolling span of the SLI in seconds (a multiple of the smallest window)", 300,
           "KPP_STREAM_SLO_WINDOW", kind=_window, metavar="SECONDS"),
    Option("stall_threshold", "a node is 'stalled' when a queued change has waited longer than this "
           "for a sync", 60.0, "KPP_STREAM_STALL_THRESHOLD", kind=positive_float, metavar="SECONDS"),
    Option("node_gone_after", "event-time seconds without a scrape after which a node leaves (one "
           "last 'left' health record); until then it is reported missing", 600.0,
           "KPP_STREAM_NODE_GONE_AFTER", kind=positive_float, metavar="SECONDS"),
    Option("cluster_timeout", "wall-clock seconds the cluster stage waits for a source partition "
           "it hears nothing from at all before closing cluster windows without it", 120.0,
           "KPP_STREAM_CLUSTER_TIMEOUT", kind=positive_float, metavar="SECONDS"),
    Option("max_clock_skew", "seconds a scrape time may be ahead of this worker's wall clock (a "
           "producer's clock running fast); later ones go to <prefix>.late as clock_skew instead of "
           "moving the watermark past every other node's scrapes. Keep it under the broker's "
           "message.timestamp.after.max.ms (1 h by default): outputs are stamped with window ends",
           300.0, "KPP_STREAM_MAX_CLOCK_SKEW", kind=_non_negative, metavar="SECONDS"),
    Option("topic_prefix", "prefix of the topic names (<prefix>.samples in; .rates .quantiles .gauges "
           ".health .slo .late .dlq out)", DEFAULT_PREFIX, "KPP_TOPIC_PREFIX", metavar="PREFIX"),
    Option("partitions", "partitions of <prefix>.samples; every topic and table of this stage uses "
           "the same count (co-partitioning)", 1, "KPP_STREAM_PARTITIONS", kind=int, metavar="N"),
    Option("listen", "HOST:PORT of the worker's own /metrics, /healthz and /readyz (empty: off). "
           "/healthz (liveness) is 200 while the event loop runs its 5-second heartbeat, idle or riding "
           "out a Kafka outage alike, and 503 once it has missed it for 120 s (a blocked loop: a restart "
           "helps); /readyz is 503 until the worker has started, then 200, also while it holds no "
           "partition (more workers than partitions). Several workers on one host need one address each: "
           "a worker that cannot bind warns and runs without them", "127.0.0.1:9813",
           "KPP_STREAM_LISTEN", kind=_listen, metavar="HOST:PORT"),
    Option("web_port", "port of Faust's web server on 127.0.0.1 (0 or unset: off)", None,
           "KPP_STREAM_WEB_PORT", kind=_port, metavar="PORT"),
    Option("data_dir", "worker data directory (default $KPP_STATE_DIR/streams)", None,
           "KPP_STREAM_DATA_DIR", metavar="DIR"),
    Option("trace_scrapes", "log one line per scrape event (logger kpp.stream.trace): partition, "
           "offset, batch and what became of it (applied, duplicate, replayed, late); for "
           "finding where a scrape went, not for production volume", False, "KPP_STREAM_TRACE_SCRAPES",
           flag_only=True),
)

DESCRIPTION = """\
Consume <prefix>.samples (one message per kube-proxy scrape, key = node) and publish, per
closed event-time window, per node and per cluster: counter rates (.rates), histogram
quantiles as Prometheus' histogram_quantile computes them (.quantiles), gauges (.gauges),
health (.health) and the network-programming SLI against the SLO threshold (.slo).

Windows are tumbling, epoch-aligned, keyed by scrape time, never by wall clock. A window
closes when its partition's watermark (newest scrape time - allowed lateness) passes its
end, or when the partition saw no message for the idle timeout. A cluster window closes
when every partition of the samples topic has closed it (see streams/cluster.py).
Scale out by starting more workers with the same topic prefix.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "stream", help="compute windowed rates, quantiles, health and the SLI (Faust worker)",
                         description=DESCRIPTION, options=OPTIONS, config_env="KPP_STREAM_CONFIG")
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> StreamSettings:
    values = resolve_command(OPTIONS, args)
    data_dir = values["data_dir"] or os.path.join(os.environ.get("KPP_STATE_DIR", ".kpp"), "streams",
                                                  values["topic_prefix"])
    try:
        return StreamSettings(
            topic_prefix=values["topic_prefix"], window_sizes_s=tuple(values["window"]),
            allowed_lateness_s=values["allowed_lateness"], idle_timeout_s=values["idle_timeout"],
            quantiles=tuple(values["quantile"]), slo_threshold_s=values["slo_threshold"],
            slo_window_s=values["slo_window"], stall_threshold_s=values["stall_threshold"],
            node_gone_after_s=values["node_gone_after"], cluster_timeout_s=values["cluster_timeout"],
            max_clock_skew_s=values["max_clock_skew"],
            partitions=values["partitions"], web_port=values["web_port"] or None, data_dir=data_dir,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def serve_metrics(listen: str, app, settings: StreamSettings, connection: KafkaConnection) -> None:
    """/metrics, /healthz, /readyz of the worker (streams/selfmetrics.py), and the group's lag."""
    from runtime.selfmetrics import serve
    from streams.app import app_id
    from streams.selfmetrics import LagReader

    metrics = app.self_metrics
    try:
        serve(listen, metrics.registry, metrics.health, metrics.ready)
    except ConfigError as exc:
        # another worker on this host holds the address: this one still does its work, so a
        # warning (several workers on one machine is how `kpp stream` scales out locally)
        log.warning("%s: running without /metrics, /healthz and /readyz (give each worker on a host its own "
                  "--listen)", exc)
        return
    LagReader(metrics, connection, app_id(settings), [settings.topics.samples, settings.ticks_topic,
                                                       settings.cluster_partials_topic]).start()


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    connection = KafkaConnection.from_sources(args)
    if resolve_command(OPTIONS, args)["trace_scrapes"]:
        logging.getLogger("kpp.stream.trace").setLevel(logging.DEBUG)

    import faust  # loaded only for this command

    from streams.app import create_app, ensure_topics

    connection.check()  # refused credentials: one clear error and exit, not a retry storm
    ensure_topics(settings, connection)
    app = create_app(settings, connection)
    listen = resolve_command(OPTIONS, args)["listen"]
    if listen:
        serve_metrics(listen, app, settings, connection)
    log.info("streaming %s on %s: windows %s s, lateness %g s, idle timeout %g s, %d partition(s)",
             settings.topics.samples, connection.describe(), list(settings.window_sizes_s),
             settings.allowed_lateness_s, settings.idle_timeout_s, settings.partitions)
    worker = faust.Worker(app, loglevel=logging.getLevelName(logging.getLogger().level), quiet=True,
                          override_logging=False)
    # Every scrape allocates thousands of short-lived objects; with the default thresholds the
    # cyclic collector keeps rescanning the long-lived node states (-15% CPU per scrape).
    # Freeze what start-up allocated and collect the young generation less often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    worker.execute_from_commandline()
    return 0
