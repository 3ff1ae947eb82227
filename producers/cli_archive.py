"""`kpp archive` (raw samples → hourly gzip JSON-lines files) and `kpp import FILE...`
(archives, Prometheus text with timestamps, /api/v1/export → `<prefix>.samples`)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from kafka_io.connection import KafkaConnection
from kafka_io.reader import quiet_reader_logs
from runtime.options import Option, add_command, byte_size, positive_float, resolve_command
from contracts.topics import DEFAULT_PREFIX, Topics
from producers.importer import DEFAULT_MAX_LINE_BYTES

log = logging.getLogger("kpp.archive")

ARCHIVE_OPTIONS = (
    Option("dir", "archive directory (index.json and one folder per day and hour)", "kpp-archive",
           "KPP_ARCHIVE_DIR", metavar="DIR"),
    Option("topic_prefix", "prefix of the topic names (reads <prefix>.samples)", DEFAULT_PREFIX,
           "KPP_TOPIC_PREFIX", metavar="PREFIX"),
    Option("group", "consumer group whose committed offsets say what is archived "
           "(default kpp-archive.<prefix>)", None, "KPP_ARCHIVE_GROUP", metavar="GROUP"),
    Option("grace", "scrape-time seconds after the end of an hour before its files are closed "
           "(later scrapes of that hour get a file of their own)", 300.0, "KPP_ARCHIVE_GRACE",
           kind=positive_float, metavar="SECONDS"),
    Option("idle_close", "wall-clock seconds without a message after which a file is closed",
           300.0, "KPP_ARCHIVE_IDLE_CLOSE", kind=positive_float, metavar="SECONDS"),
    Option("until_now", "archive what the topic holds now, close every file and exit", False, None,
           flag_only=True),
)

ARCHIVE_DESCRIPTION = """\
Archive the raw scrapes of <prefix>.samples into gzip-compressed JSON-lines files, one per
hour (scrape time) and partition: DIR/YYYY-MM-DD/HH/<topic>-p<partition>-o<first offset>.jsonl.gz,
each line {"partition", "offset", "timestamp_ms", "key", "value"}. DIR/index.json lists every
file with its hour, partition, offset range, record count and min/max scrape time.

Runs until SIGTERM/SIGINT (or, with --until-now, until it has archived what the topic holds
when it starts). Offsets are committed only after the files holding them are fsync'ed and
listed in index.json; after a crash it resumes without losing or duplicating records.
Run one archiver per archive directory. `kpp import DIR` publishes an archive again.
"""

IMPORT_DESCRIPTION = """\
Publish historical samples to <prefix>.samples with their original scrape times (message
timestamp = scrape_ts_ms, key = node), for `kpp stream` or `kpp replay` to derive.

FILE may be: an archive directory of `kpp archive`, its index.json, or one of its
.jsonl.gz files (the original messages are published again, per source partition in
offset order); a Prometheus text file whose samples carry timestamps; or the JSON lines of
VictoriaMetrics' / Prometheus' /api/v1/export. gzip-compressed inputs are read too. Text and
export samples are grouped into one scrape record per (node, timestamp); the node is --node,
else the `node` label, else `instance` without its port; the cluster is --cluster, else the
`cluster` label, else `default`. The identity labels (node, cluster, instance, job) are
removed from the samples; only kubeproxy_* families are kept.

Importing the same data twice does not double-count: the stream stage skips a scrape whose
scrape time is not newer than the last one it processed for that node (counted as a
duplicate in the node's health record, or routed to <prefix>.late when its window has
already closed). To re-derive imported history, import into a fresh topic prefix, or run
`kpp replay` over the range.

Bad input stops the import (exit 2) with one line naming the file and line. History stays
inside its archive: an index.json entry that is an absolute path, holds `..`, leads out of
the archive directory through a symbolic link, is missing or is not a regular file refuses
the whole index before any file is read or anything published. A line longer than
--max-line-bytes, a truncated or corrupt gzip file, or a line that does not parse stops the
import where it is found; what was published before it is delivered and counted in the
message, and running the same import again once the file is fixed or removed is safe
(scrapes already processed are skipped downstream). It stops rather than skipping the file
because the stream stage drops scrapes older than what it already processed for a node: a
file imported after later data would stay a hole. Error messages quote at most a short,
escaped excerpt of an input line, never a refused file.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "archive", help="archive raw samples to hourly gzip JSON-lines files",
                         description=ARCHIVE_DESCRIPTION, options=ARCHIVE_OPTIONS,
                         config_env="KPP_ARCHIVE_CONFIG")
    parser.set_defaults(func=run_archive)

    imp = subparsers.add_parser("import", help="publish archived or exported samples to <prefix>.samples",
                                description=IMPORT_DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("files", nargs="+", metavar="FILE", help="archive directory, index.json, .jsonl.gz, "
                     "Prometheus text with timestamps, or /api/v1/export JSON lines")
    imp.add_argument("--node", help="node name of every sample of text/export inputs")
    imp.add_argument("--cluster", help="cluster name of every sample of text/export inputs")
    imp.add_argument("--topic-prefix", default=None,
                     help=f"prefix of the topic names (env KPP_TOPIC_PREFIX, default {DEFAULT_PREFIX})")
    imp.add_argument("--partitions", type=int, default=1,
                     help="partitions of <prefix>.samples if import has to create it (default 1)")
    imp.add_argument("--compression", choices=("gzip", "none"), default="gzip", help="Kafka compression")
    imp.add_argument("--max-line-bytes", type=byte_size, default=DEFAULT_MAX_LINE_BYTES, metavar="SIZE",
                     help="longest input line accepted (after gzip is undone), e.g. 64MiB; a longer line "
                     "stops the import without being read into memory (default 16MiB)")
    KafkaConnection.add_cli_arguments(imp)
    imp.set_defaults(func=run_import)


def run_archive(args: argparse.Namespace) -> int:
    from producers.archive import Archiver

    values = resolve_command(ARCHIVE_OPTIONS, args)
    connection = KafkaConnection.from_sources(args)
    topics = Topics(values["topic_prefix"])
    quiet_reader_logs(args)
    connection.check(topics=[topics.samples])  # unreachable, refused, missing topic: one line, exit 3/4
    archiver = Archiver(connection, topics.samples, values["dir"],
                        group_id=values["group"] or f"kpp-archive.{values['topic_prefix']}",
                        grace_s=values["grace"], idle_close_s=values["idle_close"])
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    log.info("archiving %s from %s into %s%s", topics.samples, connection.describe(), values["dir"],
             " (until now)" if values["until_now"] else "")
    stats = archiver.run(stop, until_now=values["until_now"])
    print(f"kpp archive: {stats.records} records archived in {stats.files} file(s), "
          f"{stats.skipped} already archived skipped; index {os.path.join(values['dir'], 'index.json')}",
          file=sys.stderr)
    return 0


def run_import(args: argparse.Namespace) -> int:
    from producers.importer import Identity, import_files

    connection = KafkaConnection.from_sources(args)
    topics = Topics(args.topic_prefix) if args.topic_prefix else Topics.from_env()
    identity = Identity(node=args.node, cluster=args.cluster,
                        default_cluster=os.environ.get("KPP_CLUSTER") or "default")
    stats = import_files(connection, topics.samples, args.files, identity, partitions=args.partitions,
                         compression=None if args.compression == "none" else args.compression,
                         max_line_bytes=args.max_line_bytes)
    formats = ", ".join(f"{k} {v}" for k, v in sorted(stats.by_format.items())) or "nothing"
    print(f"kpp import: {stats.messages} messages published to {topics.samples} ({formats}); "
          f"{stats.duplicates_skipped} duplicate archive lines skipped; scrape times "
          f"{stats.min_ts}..{stats.max_ts}", file=sys.stderr)
    return 0
