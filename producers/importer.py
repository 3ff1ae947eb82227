"""`kpp import FILE...`: publish historical samples to `<prefix>.samples`, stamped with their
original scrape times (key = node), so that `kpp stream` or `kpp replay` derive them.

Accepted inputs (recognised by content; gzip is undone first):

* archives written by `kpp archive`: an archive directory, its `index.json`, or single
  `.jsonl.gz` files. The original message bytes, keys and timestamps are published again;
  per source partition in offset order, partitions interleaved by timestamp; a message seen
  twice in one import (overlapping files) is published once.
* Prometheus text exposition with timestamps (what `promtool tsdb dump-openmetrics`-like
  tools and federation dumps give): samples are grouped by timestamp into one ScrapeRecord per
  (node, timestamp). Node and cluster come from `--node` / `--cluster`, else from the `node`
  / `cluster` labels, else from `instance` (its `:port` dropped).
* VictoriaMetrics / Prometheus `/api/v1/export` JSON lines
  (`{"metric": {...}, "values": [...], "timestamps": [...]}`), grouped the same way.

For text and export inputs the labels that identify the node (`node`, `cluster`,
`instance`, `job`) are removed from the samples, only `kubeproxy_*` families are kept (as
`kpp produce` does), and family types come from TYPE lines or, without them, from the names
(`_bucket` with `le` → histogram, known kube-proxy gauges, `_total` → counter, else gauge).

Importing the same data twice does not double-count downstream: the stream stage skips a
scrape whose scrape_ts_ms is not newer than the last one it processed for that node (it is
counted as a duplicate in the node's health record, or goes to `<prefix>.late` when its
window has already closed).
"""

from __future__ import annotations

import gzip
import heapq
import logging
import math
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterable, Iterator, NamedTuple

import orjson

from contracts.codec import DecodeError, float_from_json
from contracts.errors import ConfigError
from kafka_io.connection import KafkaConnection
from kafka_io.admin import TopicSpec, ensure_topics
from contracts.records import Sample, ScrapeRecord
from runtime.terminal import excerpt
from producers.archive import INDEX, line_problem, line_value
from producers.parser import ParseError, ParseResult, parse_families
from producers.select import Selector

log = logging.getLogger("kpp.import")

IDENTITY_LABELS = frozenset({"node", "cluster", "instance", "job"})
# kube-proxy families whose names do not tell their type (gauges despite `_total`).
KNOWN_GAUGES = frozenset({
    "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
    "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
    "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
    "kubeproxy_sync_proxy_rules_service_changes_pending",
    "kubeproxy_sync_proxy_rules_iptables_total",
    "kubeproxy_sync_proxy_rules_iptables_last",
    "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
})


class Message(NamedTuple):
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


@dataclass
class ImportStats:
    messages: int = 0
    by_format: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    duplicates_skipped: int = 0
    min_ts: int | None = None
    max_ts: int | None = None

    def count(self, fmt: str, ts: int) -> None:
        self.messages += 1
        self.by_format[fmt] += 1
        self.min_ts = ts if self.min_ts is None else min(self.min_ts, ts)
        self.max_ts = ts if self.max_ts is None else max(self.max_ts, ts)


# -- reading ------------------------------------------------------------------------------------

# A VictoriaMetrics export line holds a whole series of the range (a month of 15 s points is
# about 5 MB); an archive line one Kafka message. Longer lines are damage or an attack.
DEFAULT_MAX_LINE_BYTES = 16 << 20
GZIP_MAGIC = b"\x1f\x8b"


class LineTooLong(Exception):
    """A line longer than the cap; `line_number` is 1-based."""

    def __init__(self, line_number: int) -> None:
        super().__init__(line_number)
        self.line_number = line_number


def bounded_lines(stream: BinaryIO, max_line_bytes: int) -> Iterator[bytes]:
    """The lines of `stream`, newline kept. Holds at most one line of `max_line_bytes` (newline
    not counted) plus the stream's buffer: a longer line raises `LineTooLong` as soon as
    `max_line_bytes + 1` bytes of it are read, the rest is never read."""
    number = 0
    while True:
        line = stream.readline(max_line_bytes + 1)
        if not line:
            return
        number += 1
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            raise LineTooLong(number)
        yield line


def file_lines(path: Path, max_line_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a file, gzip undone. A line over the cap, a truncated or corrupt
    gzip stream or a read error is a ConfigError naming the file and the line."""
    number = 0
    try:
        with open(path, "rb") as raw:
            compressed = raw.peek(2)[:2] == GZIP_MAGIC
            stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw  # type: ignore[assignment]
            for number, line in enumerate(bounded_lines(stream, max_line_bytes), 1):
                yield number, line
    except LineTooLong as exc:
        raise ConfigError(f"{path}:{exc.line_number}: line longer than {max_line_bytes} bytes "
                          "(--max-line-bytes); not read further") from None
    except EOFError:
        raise ConfigError(f"{path}: truncated gzip: the file ends before the end of its compressed "
                          f"stream, after line {number}") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise ConfigError(f"{path}: corrupt gzip after line {number}: {excerpt(str(exc))}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read after line {number}: {exc.strerror or exc}") from None


def sniff_line(line: bytes, where: str) -> str:
    """'archive', 'export' or 'text', from the first non-blank line of a file."""
    if not line.lstrip().startswith(b"{"):
        return "text"
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{where}: a JSON line that is not valid JSON ({exc})") from None
    if isinstance(obj, dict) and "metric" in obj and "values" in obj and "timestamps" in obj:
        return "export"
    if isinstance(obj, dict) and "offset" in obj and "partition" in obj:
        return "archive"
    raise ConfigError(f"{where}: JSON lines that are neither a kpp archive nor an /api/v1/export")


def sniff_file(path: Path, max_line_bytes: int) -> str:
    for number, line in file_lines(path, max_line_bytes):
        if line.strip():
            return sniff_line(line, f"{path}:{number}")
    return "text"


class RefusedEntry(Exception):
    """An index entry that names no file of its archive; `str()` says why."""


def archive_member(root: Path, name: object) -> Path:
    """The file an index entry names, which must be a regular file inside the archive directory
    `root`: no absolute path, no `..`, no symbolic link leading out. Only looks at names and
    links, never opens anything, so a refused file is never read."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise RefusedEntry("not a file name")
    if PurePosixPath(name).is_absolute():
        raise RefusedEntry("an absolute path")
    if ".." in PurePosixPath(name).parts:
        raise RefusedEntry("a path with '..'")
    resolved = (root / name).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise RefusedEntry("a symbolic link out of the archive")
    if not resolved.exists():
        raise RefusedEntry("missing")
    if not resolved.is_file():
        raise RefusedEntry("not a regular file")
    return resolved


def index_files(index_path: Path) -> list[Path]:
    """The files an archive's index.json lists, every entry checked by `archive_member` first:
    one bad entry refuses the whole index, before any file is read."""
    try:
        index = orjson.loads(index_path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{index_path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{index_path}: cannot read: {exc.strerror or exc}") from None
    entries = index.get("files", []) if isinstance(index, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f"{index_path}: not a kpp archive index (no list of files)")
    root = index_path.parent
    files: list[Path] = []
    refused: list[str] = []
    for n, entry in enumerate(entries, 1):
        name = entry.get("file") if isinstance(entry, dict) else None
        try:
            files.append(archive_member(root, name))
        except RefusedEntry as why:
            shown = repr(excerpt(name)) if isinstance(name, str) else f"entry {n}"
            refused.append(f"{shown} ({why})")
    if refused:
        listed = "; ".join(refused[:5]) + (f"; and {len(refused) - 5} more" if len(refused) > 5 else "")
        raise ConfigError(f"{index_path}: {len(refused)} of {len(entries)} entries refused, nothing imported "
                          f"(an index may only name regular files inside its archive directory): {listed}")
    return files


def expand(paths: Iterable[str]) -> list[Path]:
    """Archive directories and index.json files become the files they list."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            path = path / INDEX
        if path.name == INDEX:
            if not path.exists():
                raise ConfigError(f"{path} does not exist (an archive directory holds {INDEX})")
            out.extend(index_files(path))
        else:
            if not path.exists():
                raise ConfigError(f"{path} does not exist")
            if not path.is_file():  # a pipe would be half consumed by finding its kind
                raise ConfigError(f"{path} is not a regular file (save a pipe's output to a file first)")
            out.append(path)
    return out


def plan(paths: Iterable[str], max_line_bytes: int) -> list[tuple[Path, str]]:
    """Every input file with its kind, found before anything is published: a refused index
    entry or an unreadable first line stops the import with nothing sent."""
    return [(path, sniff_file(path, max_line_bytes)) for path in expand(paths)]


def _archive_lines(path: Path, max_line_bytes: int) -> Iterator[dict]:
    for n, line in file_lines(path, max_line_bytes):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{n}: not valid JSON ({exc})") from None
        problem = line_problem(obj)
        if problem:
            raise ConfigError(f"{path}:{n}: not a kpp archive line: {problem}")
        yield obj


def archive_messages(paths: list[Path], stats: ImportStats,
                     max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[Message]:
    """All archived messages: per source partition merged by offset (files of different hours
    interleave in offsets), partitions interleaved by timestamp; duplicates dropped."""
    per_partition: dict[int, list[Iterator[tuple[int, dict]]]] = defaultdict(list)
    for path in paths:
        first = next(_archive_lines(path, max_line_bytes), None)
        if first is None:
            continue
        per_partition[int(first["partition"])].append(
            ((obj["offset"], obj) for obj in _archive_lines(path, max_line_bytes)))

    def partition_stream(files: list) -> Iterator[dict]:
        last = -1
        for offset, obj in heapq.merge(*files, key=lambda pair: pair[0]):
            if offset <= last:
                stats.duplicates_skipped += 1
                continue
            last = offset
            yield obj

    streams = {p: partition_stream(files) for p, files in per_partition.items()}
    heap = []
    for p, it in streams.items():
        obj = next(it, None)
        if obj is not None:
            heap.append((obj["timestamp_ms"], p, obj, it))
    heapq.heapify(heap)
    while heap:
        ts, p, obj, it = heap[0]
        key = obj.get("key")
        yield Message(None if key is None else key.encode("utf-8"), line_value(obj), ts)
        nxt = next(it, None)
        if nxt is None:
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (nxt["timestamp_ms"], p, nxt, it))


# -- text and export → scrape records -------------------------------------------------------------

def infer_families(names: Iterable[str], labels_of: dict[str, set[str]]) -> tuple[dict[str, str], dict[str, str]]:
    """(family_of, types) for sample names without TYPE lines."""
    names = set(names)
    family_of: dict[str, str] = {}
    types: dict[str, str] = {}
    hist = {n[: -len("_bucket")] for n in names if n.endswith("_bucket") and "le" in labels_of.get(n, ())}
    for name in names:
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[: -len(suffix)] in hist:
                family_of[name] = name[: -len(suffix)]
                types[family_of[name]] = "histogram"
                break
        else:
            family_of[name] = name
            types[name] = ("gauge" if name in KNOWN_GAUGES else
                           "counter" if name.endswith("_total") else "gauge")
    return family_of, types


@dataclass(frozen=True)
class Identity:
    node: str | None = None
    cluster: str | None = None
    default_cluster: str = "default"

    def of(self, labels: dict[str, str], where: str) -> tuple[str, str]:
        node = self.node or labels.get("node")
        if not node and labels.get("instance"):
            instance = labels["instance"]
            node = instance.rsplit(":", 1)[0] if instance.rsplit(":", 1)[-1].isdigit() else instance
        if not node:
            raise ConfigError(f"{where}: no node name: pass --node, or the series need a node or instance label")
        return node, self.cluster or labels.get("cluster") or self.default_cluster


def _strip(labels: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in labels.items() if k not in IDENTITY_LABELS}


def records_from_groups(groups: dict[tuple[str, str, int], list[Sample]], family_of: dict[str, str],
                        types: dict[str, str], source: str) -> list[ScrapeRecord]:
    selector = Selector()
    out = []
    for (node, cluster, ts), samples in groups.items():
        parsed = ParseResult(samples=samples, types=types, helps={}, family_of=family_of)
        selection = selector.select(parsed)
        if not selection.samples:
            continue
        out.append(ScrapeRecord(node=node, cluster=cluster, target=f"import:{source}", scrape_ts_ms=ts, up=1,
                                scrape_duration_s=0.0, body_bytes=0, samples=selection.samples,
                                families=selection.families, kube_proxy_metrics=selection.kube_proxy_metrics))
    out.sort(key=lambda r: (r.scrape_ts_ms, r.node))
    return out


def text_records(data: bytes, where: str, identity: Identity) -> list[ScrapeRecord]:
    try:
        parsed = parse_families(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{where}:{line}: not UTF-8 text") from None
    except ParseError as exc:  # the reason may quote the line: short and escaped
        raise ConfigError(f"{where}:{exc.line_number}: {excerpt(exc.reason, 160)}") from None
    groups: dict[tuple[str, str, int], list[Sample]] = defaultdict(list)
    family_of = dict(parsed.family_of)
    types = dict(parsed.types)
    untyped = [s.name for s in parsed.samples if parsed.family_type(s.name) == "untyped"]
    if untyped:
        labels_of: dict[str, set[str]] = defaultdict(set)
        for s in parsed.samples:
            labels_of[s.name].update(s.labels)
        f2, t2 = infer_families(untyped, labels_of)
        family_of.update(f2)
        types.update({k: v for k, v in t2.items() if k not in types})
    for s in parsed.samples:
        if s.timestamp_ms is None:
            raise ConfigError(f"{where}: sample {s.name} has no timestamp (import needs timestamped samples)")
        node, cluster = identity.of(s.labels, where)
        groups[(node, cluster, s.timestamp_ms)].append(Sample(s.name, _strip(s.labels), s.value, None))
    return records_from_groups(groups, family_of, types, "prometheus-text")


def export_series(line: bytes) -> tuple[dict[str, str], list, list[int]]:
    """(metric labels, values, timestamps) of one /api/v1/export line; ValueError says what is
    wrong with it."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict) or not all(k in obj for k in ("metric", "values", "timestamps")):
        raise ValueError("not an /api/v1/export line (needs metric, values and timestamps)")
    metric, values, stamps = obj["metric"], obj["values"], obj["timestamps"]
    if not isinstance(metric, dict) or not all(isinstance(v, str) for v in metric.values()):
        raise ValueError("metric is not an object of string labels")
    if not isinstance(values, list) or not isinstance(stamps, list) or len(values) != len(stamps):
        raise ValueError("values and timestamps are not two lists of the same length")
    if not all(isinstance(ts, int) and not isinstance(ts, bool) for ts in stamps):
        raise ValueError("a timestamp that is not an integer")
    return metric, values, stamps


def export_records(lines: Iterable[tuple[int, bytes]], where: str, identity: Identity) -> list[ScrapeRecord]:
    """Scrape records from numbered /api/v1/export lines (see `file_lines`)."""
    groups: dict[tuple[str, str, int], list[Sample]] = defaultdict(list)
    labels_of: dict[str, set[str]] = defaultdict(set)
    for n, line in lines:
        if not line.strip():
            continue
        try:
            metric, values, stamps = export_series(line)
        except ValueError as exc:
            raise ConfigError(f"{where}:{n}: {exc}") from None
        metric = dict(metric)
        name = metric.pop("__name__", None)
        if not name:
            raise ConfigError(f"{where}:{n}: series without __name__")
        node, cluster = identity.of(metric, f"{where}:{n}")
        labels = _strip(metric)
        labels_of[name].update(labels)
        for value, ts in zip(values, stamps):
            try:
                v = float_from_json(value)
            except DecodeError:
                raise ConfigError(f"{where}:{n}: a value that is not a number: {excerpt(repr(value), 40)}") from None
            if math.isnan(v):
                continue  # staleness markers
            groups[(node, cluster, ts)].append(Sample(name, labels, v, None))
    family_of, types = infer_families(labels_of, labels_of)
    for samples in groups.values():
        samples.sort(key=lambda s: (s.name, sorted(s.labels.items())))
    return records_from_groups(groups, family_of, types, "vm-export")


def messages(planned: list[tuple[Path, str]], identity: Identity, stats: ImportStats,
             max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[tuple[str, Message]]:
    """(format, message) for every planned input, archives first merged, then the others file
    by file."""
    archives = [path for path, kind in planned if kind == "archive"]
    if archives:
        for msg in archive_messages(archives, stats, max_line_bytes):
            yield "archive", msg
    for path, kind in planned:
        if kind == "archive":
            continue
        lines = file_lines(path, max_line_bytes)
        if kind == "export":
            records = export_records(lines, str(path), identity)
        else:  # the text parser takes a whole file (its lines are capped all the same)
            records = text_records(b"".join(line for _n, line in lines), str(path), identity)
        log.info("%s: %s, %d scrape records", path, kind, len(records))
        for r in records:
            yield kind, Message(r.key, r.encode(), r.scrape_ts_ms)


# -- publishing ----------------------------------------------------------------------------------

def ensure_topic(connection: KafkaConnection, topic: str, partitions: int) -> None:
    # Kafka deletes by message timestamp: history older than retention.ms (7 days by default)
    # would be gone at the next retention check.
    spec = TopicSpec(topic, partitions, {"retention.ms": "-1"})
    if ensure_topics(connection, [spec], client_id="kpp-import-setup").created:
        log.info("created %s with %d partition(s)", topic, partitions)


def import_files(connection: KafkaConnection, topic: str, paths: Iterable[str], identity: Identity, *,
                 partitions: int = 1, compression: str | None = "gzip",
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> ImportStats:
    """Publish every input. A bad input (refused index entry, line over the cap, truncated
    gzip, a line that does not parse) stops the import with a ConfigError naming file and
    line: found while planning, nothing is published; found later, what was sent before it is
    delivered and counted in the message. Re-running the fixed import is safe: scrapes already
    processed are skipped downstream."""
    from kafka_io.publish import kafka_python_producer

    planned = plan(paths, max_line_bytes)
    stats = ImportStats()
    connection.check()  # unreachable or refused: one line within --kafka-timeout, nothing published
    ensure_topic(connection, topic, partitions)
    producer = kafka_python_producer(connection, client_id="kpp-import", linger_ms=20, batch_size=1 << 20,
                                     max_request_size=8 << 20, compression_type=compression)
    errors: list[BaseException] = []
    bad_input: ConfigError | None = None
    try:
        try:
            for fmt, msg in messages(planned, identity, stats, max_line_bytes):
                if errors:
                    break
                producer.send(topic, key=msg.key, value=msg.value,
                              timestamp_ms=msg.timestamp_ms).add_errback(errors.append)
                stats.count(fmt, msg.timestamp_ms)
        except ConfigError as exc:
            bad_input = exc  # stop here, but deliver what was sent before it
        producer.flush(120)
    finally:
        producer.close(30)
    if errors:
        raise ConfigError(f"import: {len(errors)} message(s) could not be published: {errors[0]!r}")
    if bad_input is not None:
        raise ConfigError(f"{bad_input}; import stopped there after publishing {stats.messages} message(s) "
                          f"to {topic} (fix or remove the file and run the same import again: scrapes "
                          "already processed are skipped downstream)")
    return stats
