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
from kafka_io.connection import KafkaConnection
from kafka_io.reader import BEGINNING, END, FOLLOW, At, Start, SyncRangeReader, quiet_reader_logs
from runtime.terminal import excerpt, printable
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


class Unshowable(Exception):
    """A decoded record whose content cannot be shown (`str()` says why): skipped and counted."""


def format_window_end(ms: int) -> str:
    """UTC time of a window end; outside the years a datetime holds (1..9999), the raw
    milliseconds, so an absurd timestamp is visible rather than fatal."""
    try:
        return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, ValueError, OSError):
        raw = f"ms={ms}"
        return raw if len(raw) <= 19 else f"ms={ms:.6e}"  # 19: the width of the column


def check_showable(record: DerivedRecord) -> None:
    """Unshowable unless the record's text fields are text, as its contract says (decoding
    checks the structure, not every type)."""
    if not isinstance(record.metric, str):
        raise Unshowable(f"metric is {type(record.metric).__name__}, not a string")
    if not isinstance(record.cluster, str):
        raise Unshowable(f"cluster is {type(record.cluster).__name__}, not a string")
    if record.node is not None and not isinstance(record.node, str):
        raise Unshowable(f"node is {type(record.node).__name__}, not a string")
    for name, value in record.labels.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise Unshowable(f"label {excerpt(str(name), 40)!r}: a name or value that is not a string")


def table_cells(record: DerivedRecord) -> tuple[str, ...]:
    """The table row of a record, every text escaped (`printable`)."""
    check_showable(record)
    labels = ",".join(f"{k}={v}" for k, v in sorted(record.labels.items()))
    metric = record.metric + (f"{{{labels}}}" if labels else "")
    values = " ".join(f"{k}={format_value(v)}" for k, v in sorted(record.values.items()))
    who = record.node if record.scope == "node" else record.cluster
    return (format_window_end(record.window_end_ms), f"{record.window_size_s}s", record.scope,
            printable(who or ""), printable(metric), printable(values))


def _json_escape(char: str) -> str:
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # outside the BMP: a UTF-16 surrogate pair, as JSON spells it
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_line(record: DerivedRecord) -> bytes:
    """One JSON line of a record. orjson escapes C0 controls but writes DEL, C1 controls and
    other non-printable characters raw; they are \\u-escaped here (only strings can hold them,
    so the JSON means the same) so that a terminal never receives them."""
    check_showable(record)
    try:
        text = dumps(record.to_json()).decode("utf-8")
    except TypeError as exc:  # orjson.JSONEncodeError: e.g. an integer beyond 64 bits
        raise Unshowable(f"not representable as JSON: {exc}") from None
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _json_escape(c) for c in text)
    return text.encode("utf-8") + b"\n"


class TableWriter:
    HEADER = ("WINDOW END (UTC)", "SIZE", "SCOPE", "NODE/CLUSTER", "METRIC", "VALUES")
    WIDTHS = (19, 5, 7, 20, 52)

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.rows = 0

    def row(self, cells: tuple[str, ...]) -> None:
        # a cut cell ends in "…", so that a truncated name or number is not taken for a whole one
        fixed = "  ".join((cell if len(cell) <= w else cell[: w - 1] + "…").ljust(w)
                          for cell, w in zip(cells, self.WIDTHS))
        self.out.write(f"{fixed}  {cells[-1]}\n")

    def write(self, record: DerivedRecord) -> None:
        """Raises Unshowable (nothing written) for a record it cannot show."""
        cells = table_cells(record)
        if self.rows % 40 == 0:
            self.row(self.HEADER)
        self.rows += 1
        self.row(cells)
        self.out.flush()


def start_of(args: argparse.Namespace) -> Start:
    """Where --from-beginning / --since / neither start reading."""
    if args.from_beginning:
        return BEGINNING
    if args.since:
        return At(parse_since(args.since))
    return END


def run(args: argparse.Namespace) -> int:
    connection = KafkaConnection.from_sources(args)
    topics = Topics(args.topic_prefix) if args.topic_prefix else Topics.from_env()
    topic = resolve_topic(args.topic, topics)
    fmt = args.format or ("table" if sys.stdout.isatty() else "json")
    start = start_of(args)  # a bad --since is refused before Kafka is asked anything
    quiet_reader_logs(args)
    connection.check(topics=[topic])  # unreachable, refused, missing topic: one line within --kafka-timeout
    with SyncRangeReader(connection, topic, start=start, stop=FOLLOW, client_id="kpp-tail") as reader:
        return follow(reader, args, fmt)


def follow(reader: SyncRangeReader, args: argparse.Namespace, fmt: str) -> int:
    """Print records until --max-records or --idle-exit. A record that does not decode or
    cannot be shown is skipped with one stderr line naming where it is, counted, and the counts
    end the run: a record's content never ends the command."""
    table = TableWriter(sys.stdout) if fmt == "table" else None
    shown = bad = unshowable = 0
    last_record = time.monotonic()
    try:
        while True:
            for message in reader.read(0.5):
                last_record = time.monotonic()
                where = f"{message.topic}/{message.partition}@{message.offset}"
                try:
                    record = DerivedRecord.decode(message.value)
                except DecodeError as exc:
                    bad += 1
                    print(f"kpp tail: skipping undecodable record at {where}: {excerpt(str(exc), 200)}",
                          file=sys.stderr)
                    continue
                if args.node and record.node != args.node:
                    continue
                if args.metric and not (isinstance(record.metric, str) and args.metric in record.metric):
                    continue
                try:
                    if table is not None:
                        table.write(record)
                    else:
                        line = json_line(record)
                        sys.stdout.buffer.write(line)
                        sys.stdout.flush()
                except Unshowable as exc:
                    unshowable += 1
                    print(f"kpp tail: skipping record at {where} that cannot be shown: {exc}", file=sys.stderr)
                    continue
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
        if unshowable:
            print(f"kpp tail: {unshowable} record(s) that cannot be shown skipped", file=sys.stderr)
