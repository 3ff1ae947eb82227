"""`kpp tail TOPIC`: follow a derived topic in a terminal (aligned table) or a pipe (JSON lines)."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from typing import IO

from contracts.codec import DecodeError, dumps
from contracts.derived import KINDS, DerivedRecord
from contracts.errors import ConfigError
from contracts.kafka import KafkaConnection
from contracts.topics import DEFAULT_PREFIX, Topics

_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tail", help="follow a derived topic as a table or JSON lines",
        description="Follow a derived topic (rates, quantiles, gauges, health, slo — or a full topic name). "
                    "The table format is aligned for terminals; json prints one record per line for pipes.",
    )
    parser.add_argument("topic", help=f"one of {', '.join(KINDS)}, or a full topic name")
    parser.add_argument("--node", help="only records of this node")
    parser.add_argument("--metric", help="only records whose metric contains this text")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at the oldest retained record")
    start.add_argument("--since", metavar="TIME",
                       help="start at records written since TIME: RFC 3339 (2026-01-02T15:04:05Z) or an age (10m, 2h, 1d)")
    parser.add_argument("--format", choices=("table", "json"), default=None,
                        help="default: table on a terminal, json otherwise")
    parser.add_argument("--topic-prefix", default=None, help=f"topic prefix (env KPP_TOPIC_PREFIX, default {DEFAULT_PREFIX})")
    parser.add_argument("--max-records", type=int, default=0, help="stop after this many records (default: follow)")
    parser.add_argument("--idle-exit", type=float, default=0.0,
                        help="stop after this many seconds without a record (default: follow forever)")
    KafkaConnection.add_cli_arguments(parser)
    parser.set_defaults(func=run)


def parse_since(text: str, now: float | None = None) -> int:
    """RFC 3339 or a relative duration (`-10m`, `2h`) → Unix milliseconds."""
    now = time.time() if now is None else now
    match = _RELATIVE.match(text.strip())
    if match:
        return int((now - float(match.group(1)) * _UNIT_SECONDS[match.group(2)]) * 1000)
    try:
        parsed = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since {text!r} is neither RFC 3339 (2026-01-02T15:04:05Z) nor relative (-10m)") from None
    if parsed.tzinfo is None:
        raise ConfigError(f"--since {text!r} needs a time zone (add Z for UTC)")
    return int(parsed.timestamp() * 1000)


def resolve_topic(name: str, topics: Topics) -> str:
    return getattr(topics, name) if name in KINDS else name


def format_value(value: float | None) -> str:
    if value is None:
        return "-"
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    return f"{value:.6g}"


class TableWriter:
    HEADER = ("WINDOW END (UTC)", "SIZE", "SCOPE", "NODE/CLUSTER", "METRIC", "VALUES")
    WIDTHS = (19, 5, 7, 20, 52)

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.rows = 0

    def row(self, cells: tuple[str, ...]) -> None:
        fixed = "  ".join(cell[:w].ljust(w) for cell, w in zip(cells, self.WIDTHS))
        self.out.write(f"{fixed}  {cells[-1]}\n")

    def write(self, record: DerivedRecord) -> None:
        if self.rows % 40 == 0:
            self.row(self.HEADER)
        self.rows += 1
        end = dt.datetime.fromtimestamp(record.window_end_ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        labels = ",".join(f"{k}={v}" for k, v in sorted(record.labels.items()))
        metric = record.metric + (f"{{{labels}}}" if labels else "")
        values = " ".join(f"{k}={format_value(v)}" for k, v in sorted(record.values.items()))
        who = record.node if record.scope == "node" else record.cluster
        self.row((end, f"{record.window_size_s}s", record.scope, who or "", metric, values))
        self.out.flush()


def run(args: argparse.Namespace) -> int:
    from kafka import KafkaConsumer, TopicPartition

    connection = KafkaConnection.from_sources(args)
    topics = Topics(args.topic_prefix) if args.topic_prefix else Topics.from_env()
    topic = resolve_topic(args.topic, topics)
    fmt = args.format or ("table" if sys.stdout.isatty() else "json")
    consumer = KafkaConsumer(**connection.kafka_python_kwargs(), group_id=None, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ConfigError(f"topic {topic!r} does not exist (yet) on {connection.describe()}")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if args.from_beginning:
            consumer.seek_to_beginning(*assigned)
        elif args.since:
            since_ms = parse_since(args.since)
            offsets = consumer.offsets_for_times({tp: since_ms for tp in assigned})
            ends = consumer.end_offsets(assigned)
            for tp in assigned:
                found = offsets.get(tp)
                consumer.seek(tp, found.offset if found is not None else ends[tp])
        else:
            consumer.seek_to_end(*assigned)
        return follow(consumer, args, fmt)
    finally:
        consumer.close()


def follow(consumer, args: argparse.Namespace, fmt: str) -> int:  # noqa: ANN001 (kafka-python has no types)
    table = TableWriter(sys.stdout) if fmt == "table" else None
    shown = bad = 0
    last_record = time.monotonic()
    try:
        while True:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                for message in records:
                    last_record = time.monotonic()
                    try:
                        record = DerivedRecord.decode(message.value)
                    except DecodeError as exc:
                        bad += 1
                        print(f"kpp tail: skipping undecodable record at {message.topic}/{message.partition}"
                              f"@{message.offset}: {exc}", file=sys.stderr)
                        continue
                    if args.node and record.node != args.node:
                        continue
                    if args.metric and args.metric not in record.metric:
                        continue
                    if table is not None:
                        table.write(record)
                    else:
                        sys.stdout.buffer.write(dumps(record.to_json()) + b"\n")
                        sys.stdout.flush()
                    shown += 1
                    if args.max_records and shown >= args.max_records:
                        return 0
            if args.idle_exit and time.monotonic() - last_record >= args.idle_exit:
                return 0
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if bad:
            print(f"kpp tail: {bad} undecodable record(s) skipped", file=sys.stderr)
