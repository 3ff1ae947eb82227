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
import io
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import orjson

from contracts.codec import DecodeError, float_from_json
from contracts.errors import ConfigError
from contracts.kafka import KafkaConnection
from contracts.records import Sample, ScrapeRecord
from producers.archive import INDEX, line_value
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

def _open_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def sniff(data: bytes) -> str:
    """'archive', 'export' or 'text'."""
    for line in io.BytesIO(data):
        line = line.strip()
        if not line:
            continue
        if line.startswith(b"{"):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise ConfigError("a JSON line that is not valid JSON") from None
            if isinstance(obj, dict) and "metric" in obj and "values" in obj and "timestamps" in obj:
                return "export"
            if isinstance(obj, dict) and "offset" in obj and "partition" in obj:
                return "archive"
            raise ConfigError("JSON lines that are neither a kpp archive nor an /api/v1/export")
        return "text"
    return "text"


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
            index = orjson.loads(path.read_bytes())
            out.extend(path.parent / entry["file"] for entry in index.get("files", []))
        else:
            if not path.exists():
                raise ConfigError(f"{path} does not exist")
            out.append(path)
    return out


def _archive_lines(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rb") if path.read_bytes()[:2] == b"\x1f\x8b" else open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise ConfigError(f"{path}:{n}: not valid JSON") from None


def archive_messages(paths: list[Path], stats: ImportStats) -> Iterator[Message]:
    """All archived messages: per source partition merged by offset (files of different hours
    interleave in offsets), partitions interleaved by timestamp; duplicates dropped."""
    per_partition: dict[int, list[Iterator[tuple[int, dict]]]] = defaultdict(list)
    for path in paths:
        first = next(_archive_lines(path), None)
        if first is None:
            continue
        per_partition[int(first["partition"])].append(((obj["offset"], obj) for obj in _archive_lines(path)))

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
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    except ParseError as exc:
        raise ConfigError(f"{where}:{exc.line_number}: {exc.reason}") from None
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


def export_records(data: bytes, where: str, identity: Identity) -> list[ScrapeRecord]:
    groups: dict[tuple[str, str, int], list[Sample]] = defaultdict(list)
    labels_of: dict[str, set[str]] = defaultdict(set)
    for n, line in enumerate(io.BytesIO(data), 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
            metric = dict(obj["metric"])
            values, stamps = obj["values"], obj["timestamps"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f"{where}:{n}: not an /api/v1/export line") from None
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
                continue
            if math.isnan(v):
                continue  # staleness markers
            groups[(node, cluster, int(ts))].append(Sample(name, labels, v, None))
    family_of, types = infer_families(labels_of, labels_of)
    for samples in groups.values():
        samples.sort(key=lambda s: (s.name, sorted(s.labels.items())))
    return records_from_groups(groups, family_of, types, "vm-export")


def messages(paths: Iterable[str], identity: Identity, stats: ImportStats) -> Iterator[tuple[str, Message]]:
    """(format, message) for every input, archives first merged, then the others file by file."""
    files = expand(paths)
    archives, others = [], []
    for path in files:
        data = _open_bytes(path)
        kind = sniff(data)
        (archives if kind == "archive" else others).append((path, kind, data if kind != "archive" else None))
    if archives:
        for msg in archive_messages([p for p, _k, _d in archives], stats):
            yield "archive", msg
    for path, kind, data in others:
        records = (export_records if kind == "export" else text_records)(data, str(path), identity)
        log.info("%s: %s, %d scrape records", path, kind, len(records))
        for r in records:
            yield kind, Message(r.key, r.encode(), r.scrape_ts_ms)


# -- publishing ----------------------------------------------------------------------------------

def ensure_topic(connection: KafkaConnection, topic: str, partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**connection.kafka_python_kwargs(), client_id="kpp-import-setup")
    try:
        if topic not in set(admin.list_topics()):
            try:
                # Kafka deletes by message timestamp: history older than retention.ms (7 days by
                # default) would be gone at the next retention check.
                admin.create_topics([NewTopic(topic, partitions, 1, topic_configs={"retention.ms": "-1"})])
                log.info("created %s with %d partition(s)", topic, partitions)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def import_files(connection: KafkaConnection, topic: str, paths: Iterable[str], identity: Identity, *,
                 partitions: int = 1, compression: str | None = "gzip") -> ImportStats:
    from kafka import KafkaProducer

    stats = ImportStats()
    ensure_topic(connection, topic, partitions)
    producer = KafkaProducer(**connection.kafka_python_kwargs(), linger_ms=20, batch_size=1 << 20,
                             max_request_size=8 << 20, compression_type=compression, client_id="kpp-import")
    errors: list[BaseException] = []
    try:
        for fmt, msg in messages(paths, identity, stats):
            if errors:
                break
            producer.send(topic, key=msg.key, value=msg.value, timestamp_ms=msg.timestamp_ms).add_errback(errors.append)
            stats.count(fmt, msg.timestamp_ms)
        producer.flush(120)
    finally:
        producer.close(30)
    if errors:
        raise ConfigError(f"import: {len(errors)} message(s) could not be published: {errors[0]!r}")
    return stats

