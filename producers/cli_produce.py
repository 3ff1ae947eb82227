"""`kpp produce`: the per-node producer (run as a DaemonSet)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from contracts.errors import ConfigError
from kafka_io.connection import KafkaConnection
from runtime.options import Option, add_command, byte_size, positive_float, resolve_command
from contracts.topics import DEFAULT_PREFIX, Topics
from producers.node import DEFAULT_MAX_RECORD_BYTES, NodeProducer, NodeSettings
from producers.parser import METRIC_TYPES
from producers.scrape import DEFAULT_TARGET, TargetSettings
from producers.secrets import parse_header_specs, redact_url, secret_literals_on_command_line
from producers.select import DEFAULT_ALLOW, Selector, SelectionRules, parse_label_pairs
from runtime.selfmetrics import Counters, serve

log = logging.getLogger("kpp.produce")
KAFKA_REQUEST_OVERHEAD_BYTES = 16 * 1024  # batch and request headers around the largest record


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


OPTIONS = (
    Option("target", "kube-proxy metrics URL to scrape; repeat for several", [DEFAULT_TARGET], "KPP_TARGETS",
           repeated=True, metavar="URL"),
    Option("node", "node name recorded with every scrape and used as the Kafka key",
           None, "NODE_NAME", metavar="NAME"),
    Option("cluster", "cluster name recorded with every scrape", "default", "KPP_CLUSTER", metavar="NAME"),
    Option("interval", "seconds between scrapes; scrapes happen at multiples of it", 15.0,
           "KPP_SCRAPE_INTERVAL", kind=positive_float, metavar="SECONDS"),
    Option("timeout", "seconds a scrape may take", 10.0, "KPP_SCRAPE_TIMEOUT", kind=positive_float,
           metavar="SECONDS"),
    Option("max_body_bytes", "largest body accepted (decompressed); larger is a counted error", "16MiB",
           "KPP_MAX_BODY_BYTES", kind=byte_size, metavar="SIZE"),
    Option("ca_file", "CA bundle for https targets", None, "KPP_CA_FILE", metavar="FILE"),
    Option("cert_file", "client certificate for https targets", None, "KPP_CERT_FILE", metavar="FILE"),
    Option("key_file", "client key for https targets", None, "KPP_KEY_FILE", metavar="FILE"),
    Option("insecure_skip_verify", "do not verify the target's certificate", False, "KPP_INSECURE_SKIP_VERIFY",
           flag_only=True),
    Option("bearer_token_file", "file with a bearer token, re-read when it changes (kube-rbac-proxy)",
           None, "KPP_BEARER_TOKEN_FILE", metavar="FILE"),
    Option("header", "extra request header: NAME=VALUE, NAME=@FILE (value read from FILE, re-read when it "
           "changes) or NAME=env:VAR (value from the environment); repeatable. Put secrets in a file or "
           "the environment: the command line is visible to every user of the node", [], "KPP_HEADERS",
           repeated=True, metavar="NAME=VALUE"),
    Option("unix_socket", "reach the target through this unix socket", None, "KPP_UNIX_SOCKET", metavar="PATH"),
    Option("allow_family", "regex of families to publish; repeatable", list(DEFAULT_ALLOW),
           "KPP_ALLOW_FAMILIES", repeated=True, metavar="REGEX"),
    Option("deny_family", "regex of families to leave out; repeatable", [], "KPP_DENY_FAMILIES",
           repeated=True, metavar="REGEX"),
    Option("type", f"metric types to publish; repeatable ({', '.join(sorted(METRIC_TYPES))})",
           sorted(METRIC_TYPES), "KPP_TYPES", repeated=True, metavar="TYPE"),
    Option("drop_label", "label to remove from every sample; repeatable", [], "KPP_DROP_LABELS",
           repeated=True, metavar="NAME"),
    Option("rename_label", "rename a label OLD=NEW; repeatable", [], "KPP_RENAME_LABELS", repeated=True,
           metavar="OLD=NEW"),
    Option("label", "static label NAME=VALUE added to every scrape; repeatable", [], "KPP_LABELS",
           repeated=True, metavar="NAME=VALUE"),
    Option("topic_prefix", "prefix of the topic names (<prefix>.samples)", DEFAULT_PREFIX, "KPP_TOPIC_PREFIX",
           metavar="PREFIX"),
    Option("compression", "Kafka compression (lz4/zstd need the extras of the same name)", "gzip",
           "KPP_COMPRESSION", choices=("gzip", "lz4", "zstd", "none")),
    Option("max_record_bytes", "largest encoded scrape record sent to Kafka; a larger one is published as "
           "up=0 with reason too_large (keep it within the topic's max.message.bytes)", str(DEFAULT_MAX_RECORD_BYTES),
           "KPP_MAX_RECORD_BYTES", kind=byte_size, metavar="SIZE"),
    Option("unhealthy_after", "intervals without a completed scrape of a target before /healthz answers 503", 3,
           "KPP_UNHEALTHY_AFTER", kind=positive_int, metavar="N"),
    Option("spool_dir", "on-disk spool that holds scrapes while Kafka is away "
           "(default $KPP_STATE_DIR/spool/<node>)", None, "KPP_SPOOL_DIR", metavar="DIR"),
    Option("spool_max_bytes", "spool cap; past it the oldest scrapes are dropped and counted", "256MiB",
           "KPP_SPOOL_MAX_BYTES", kind=byte_size, metavar="SIZE"),
    Option("listen", "HOST:PORT of the producer's own /metrics, /healthz and /readyz (both: every target's "
           "scrapes complete) (empty: off)", "127.0.0.1:9811",
           "KPP_LISTEN", metavar="HOST:PORT"),
    Option("once", "scrape once, deliver, and exit (for cron jobs and checks)", False, None, flag_only=True),
)

DESCRIPTION = """\
Scrape kube-proxy's /metrics on this node every interval, keep the kubeproxy_* families,
and publish one message per scrape to <prefix>.samples (key = node name). Scrapes first go
to an on-disk spool, so nothing is lost while Kafka is away; SIGTERM delivers what it can
and the next start resumes the spool.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "produce", help="scrape kube-proxy on this node and publish every scrape to Kafka",
                         description=DESCRIPTION, options=OPTIONS, config_env="KPP_PRODUCE_CONFIG")
    parser.set_defaults(func=run)


def settings_from(args: argparse.Namespace) -> dict:
    values = resolve_command(OPTIONS, args)
    values["node"] = values["node"] or socket.gethostname()
    return values


def run(args: argparse.Namespace) -> int:
    values = settings_from(args)
    node = NodeSettings(node=values["node"], cluster=values["cluster"], interval_s=values["interval"],
                        labels=parse_label_pairs(values["label"], "--label"),
                        max_record_bytes=values["max_record_bytes"], unhealthy_after=values["unhealthy_after"])
    headers = parse_header_specs(values["header"])
    for name in secret_literals_on_command_line(getattr(args, "header", None)):
        log.warning("--header %s is given with its value on the command line, where every user of the node can "
                    "read it (ps); use --header %s=@FILE or %s=env:VAR", name, name, name)
    targets = [
        TargetSettings(url=url, timeout_s=values["timeout"], max_body_bytes=values["max_body_bytes"],
                       ca_file=values["ca_file"], cert_file=values["cert_file"], key_file=values["key_file"],
                       insecure_skip_verify=values["insecure_skip_verify"],
                       bearer_token_file=values["bearer_token_file"], headers=headers.literal,
                       header_files=headers.files, unix_socket=values["unix_socket"])
        for url in values["target"]
    ]
    rules = SelectionRules(
        allow_families=tuple(values["allow_family"]), deny_families=tuple(values["deny_family"]),
        types=frozenset(values["type"]), drop_labels=frozenset(values["drop_label"]),
        rename_labels=parse_label_pairs(values["rename_label"], "--rename-label"),
    )
    connection = KafkaConnection.from_sources(args)
    topic = Topics(values["topic_prefix"]).samples
    spool_dir = Path(values["spool_dir"] or Path(os.environ.get("KPP_STATE_DIR", ".kpp")) / "spool" / node.node)

    from producers.publish import Publisher  # kafka-python loads only for this command
    from producers.spool import Spool

    counters = Counters()
    spool = Spool(spool_dir, max_bytes=values["spool_max_bytes"])
    publisher = Publisher(connection, topic, spool, compression_type=values["compression"],
                          client_id=f"kpp-producer-{node.node}",
                          max_request_bytes=node.max_record_bytes + KAFKA_REQUEST_OVERHEAD_BYTES)
    producer = NodeProducer(node, targets, Selector(rules), publisher, topic, counters)
    publisher.replace_too_large = producer.refused_by_kafka
    _export_publisher_stats(counters, publisher)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = None
    if values["listen"]:
        server = serve(values["listen"], counters, lambda: _health(producer, publisher))
    log.info("producing node %s (cluster %s): %s every %g s to %s on %s; spool %s",
             node.node, node.cluster, ", ".join(redact_url(t.url) for t in targets), node.interval_s, topic,
             connection.describe(), spool_dir)
    publisher.start()
    try:
        producer.run(stop, once=values["once"])
    finally:
        log.info("stopping: delivering spooled scrapes (up to 10 s)")
        publisher.stop(timeout=10.0)
        producer.close()
        if server is not None:
            server.shutdown()
        stats = publisher.stats
        log.info("stopped: %d scrape(s) delivered, %d still spooled, %d dropped",
                 stats.sent, stats.spool_depth, stats.dropped)
    if values["once"] and publisher.stats.spool_depth:
        raise ConfigError(f"{publisher.stats.spool_depth} scrape(s) could not be delivered to Kafka "
                          f"({publisher.stats.last_error}); they stay in {spool_dir}")
    return 0


def _export_publisher_stats(counters: Counters, publisher) -> None:
    counters.describe("kpp_producer_publish_latency_seconds", "histogram",
                      "Spool append to Kafka acknowledgement, per record.")
    publisher.observe_latency = lambda seconds: counters.observe("kpp_producer_publish_latency_seconds", seconds)
    counters.register(PublisherCollector(publisher))


class PublisherCollector(Collector):
    """The publisher's own counts (producers/publish.py keeps them), read at scrape time."""

    def __init__(self, publisher) -> None:
        self.publisher = publisher

    def collect(self):
        stats = self.publisher.stats
        yield CounterMetricFamily("kpp_producer_published", "Scrapes Kafka acknowledged.", value=stats.sent)
        yield CounterMetricFamily("kpp_producer_publish_errors", "Failed Kafka sends (retried).",
                                  value=stats.send_errors)
        yield GaugeMetricFamily("kpp_producer_spool_depth", "Scrapes in the spool, not yet acknowledged.",
                                value=stats.spool_depth)
        yield CounterMetricFamily("kpp_producer_spool_dropped", "Scrapes dropped because the spool was full.",
                                  value=stats.dropped)
        yield GaugeMetricFamily("kpp_producer_kafka_connected", "1 while Kafka accepts our sends.",
                                value=1 if stats.connected else 0)


def _health(producer: NodeProducer, publisher) -> tuple[bool, str]:
    ok, text = producer.health()
    return ok, f"{text}: spool depth {publisher.stats.spool_depth}" if ok else text
