"""`kpp replay --from TIME [--to TIME]`: reprocess a time range of `<prefix>.samples` through
the stream logic (streams/replay.py) into the live derived topics or a separate namespace."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import sys
import time
from typing import IO

from contracts.errors import ConfigError
from kafka_io.connection import KafkaConnection
from kafka_io.reader import quiet_reader_logs
from runtime.options import add_to
from streams.replay import ReplayStats, out_prefix

DESCRIPTION = """\
Reprocess the raw scrapes of a time range through exactly the logic of `kpp stream`, in
this process, and publish the derived records (rates, quantiles, gauges, health, slo).

TIME is RFC 3339 (2026-01-02T15:04:05Z) or an age: `6h`, `90m`, `2d` (ago). argparse reads
a value starting with '-' as a flag, so a negative age must be attached: `--from=-6h`
(`--from 6h` means the same). `--to` defaults to now.

Output: without --namespace, into the live topics <prefix>.rates ... <prefix>.slo. That is
idempotent: with the same settings the records are byte-identical to those the live worker
published for the same windows (consumers see identical duplicates; VictoriaMetrics stores
them once). With --namespace NAME, into NAME.<prefix>.rates ... (and NAME.<prefix>.late /
.dlq), created if missing, so live consumers are not disturbed.

Which records: reading starts --warmup before --from (baselines, watermarks, missing nodes)
and stops at the first scrape stamped --to + allowed lateness; only records whose window
lies inside [from, to] are published (an SLO record counts as the smallest window ending
with it; its value still covers the whole SLO window).
Windows still open at the end of the data are closed as when the live worker's data stops.
Use the same stream settings as the live worker (the same flags, environment variables or
--config file as `kpp stream`); the partition count is taken from the samples topic.

Progress goes to stderr: a bar with rate and ETA on a terminal, a line every few seconds
otherwise; a summary at the end.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from streams.cli import OPTIONS  # the stream stage's own settings: replay must use the same

    parser = subparsers.add_parser(
        "replay", help="reprocess a time range of raw samples through the stream logic",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group("replay")
    group.add_argument("--from", dest="from_time", required=True, metavar="TIME",
                       help="start of the range: RFC 3339 or an age (6h, or --from=-6h)")
    group.add_argument("--to", dest="to_time", default="now", metavar="TIME",
                       help="end of the range: RFC 3339, an age, or now (default now)")
    group.add_argument("--namespace", metavar="NAME",
                       help="write to NAME.<prefix>.rates ... instead of the live derived topics")
    group.add_argument("--speed", type=_speed, metavar="X",
                       help="replay at X times real time, by scrape timestamps (default: as fast as possible)")
    group.add_argument("--warmup", type=_seconds, metavar="SECONDS",
                       help="seconds read before --from to rebuild state (default: the larger of "
                            "node-gone-after and slo-window, plus the largest window)")
    group.add_argument("--progress", choices=("auto", "bar", "lines", "off"), default="auto",
                       help="progress on stderr: bar on a terminal, lines otherwise (default auto)")
    parser.add_argument("--config", metavar="FILE", default=os.environ.get("KPP_STREAM_CONFIG"),
                        help="TOML file with stream settings, as for kpp stream (env KPP_STREAM_CONFIG)")
    add_to(parser, OPTIONS, "stream settings (as for kpp stream)")
    KafkaConnection.add_cli_arguments(parser)
    parser.set_defaults(func=run)


def _speed(text: str) -> float:
    value = float(text.rstrip("xX"))
    if not value > 0:
        raise argparse.ArgumentTypeError("speed must be a positive number")
    return value


def _seconds(text: str) -> float:
    value = float(text.rstrip("s"))
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def parse_time(text: str, flag: str, now: float | None = None) -> int:
    """RFC 3339, an age (`6h`, `-6h`) or `now` → Unix milliseconds."""
    from kpp.tail import parse_since

    now = time.time() if now is None else now
    if text.strip().lower() == "now":
        return int(now * 1000)
    try:
        return parse_since(text, now=now)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("--since", flag)) from None


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


class Progress:
    """A bar with rate and ETA on a terminal; a plain line every `every_s` otherwise."""

    def __init__(self, out: IO[str], mode: str, every_s: float = 5.0) -> None:
        if mode == "auto":
            mode = "bar" if out.isatty() else "lines"
        self.out, self.mode = out, mode
        self.every_s = 0.2 if mode == "bar" else every_s
        self.next = time.monotonic() + (0.2 if mode == "bar" else every_s)
        self.drawn = False

    def __call__(self, stats: ReplayStats, total: int) -> None:
        now = time.monotonic()
        if self.mode == "off" or now < self.next:
            return
        self.next = now + self.every_s
        self.draw(stats, total)

    def draw(self, stats: ReplayStats, total: int) -> None:
        done, rate = stats.records_in, stats.rate
        share = done / total if total else 1.0
        eta = (total - done) / rate if rate > 0 else 0.0
        if self.mode == "bar":
            width = 30
            filled = int(width * min(1.0, share))
            self.out.write(f"\rreplay [{'#' * filled}{'.' * (width - filled)}] {share:6.1%} {done}/{total} "
                           f"{rate:,.0f} rec/s ETA {_clock(eta)} · out {stats.records_out} · at {_iso(stats.last_ts_ms)}"
                           "\x1b[K")
            self.drawn = True
        else:
            self.out.write(f"replay: {done}/{total} records ({share:.0%}), {rate:,.0f} records/s, ETA {_clock(eta)}, "
                           f"{stats.records_out} derived records out, scrape time {_iso(stats.last_ts_ms)}\n")
        self.out.flush()

    def end(self, stats: ReplayStats, total: int) -> None:
        if self.mode == "bar":
            self.draw(stats, total)
            self.out.write("\n")
            self.out.flush()


def run(args: argparse.Namespace) -> int:
    from streams.cli import settings_from
    from streams.replay import replay_kafka

    settings = settings_from(args)
    # The stages log the idle close of every partition; at the end of a replay that is noise.
    logging.getLogger("kpp.stream").setLevel(max(logging.WARNING, logging.getLogger().level))
    connection = KafkaConnection.from_sources(args)
    now = time.time()
    from_ms = parse_time(args.from_time, "--from", now)
    to_ms = parse_time(args.to_time, "--to", now)
    if to_ms <= from_ms:
        raise ConfigError(f"--to ({_iso(to_ms)}) must be after --from ({_iso(from_ms)})")
    warmup_s = args.warmup if args.warmup is not None else (max(settings.node_gone_after_s, settings.slo_window_s)
                                                               + max(settings.window_sizes_s))
    target = out_prefix(settings.topic_prefix, args.namespace)
    quiet_reader_logs(args)
    connection.check(topics=[settings.topics.samples])  # one line within --kafka-timeout, not a 30 s stall
    print(f"kpp replay: {settings.topics.samples} windows in [{_iso(from_ms)}, {_iso(to_ms)}] "
          f"(warm-up {warmup_s:g} s) → {target}.{{rates,quantiles,gauges,health,slo}}"
          f"{' at ' + format(args.speed, 'g') + 'x' if args.speed else ''}", file=sys.stderr)
    progress = Progress(sys.stderr, args.progress)
    totals: list[int] = [0]

    def on_progress(stats: ReplayStats, total: int) -> None:
        totals[0] = total
        progress(stats, total)

    stats = replay_kafka(connection, settings, from_ms=from_ms, to_ms=to_ms, warmup_ms=int(warmup_s * 1000),
                         namespace=args.namespace, speed=args.speed, progress=on_progress)
    if args.progress != "off":
        progress.end(stats, totals[0] or stats.records_in)
    print(f"kpp replay: done: {stats.summary()}", file=sys.stderr)
    return 0
