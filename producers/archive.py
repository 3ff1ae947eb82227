"""`kpp archive`: raw samples (`<prefix>.samples`) to gzip-compressed JSON-lines files, one
per hour (by message timestamp = scrape time) and partition, listed in `index.json`.

Layout under the archive directory:

    index.json
    2026-01-02/15/kube-proxy.samples-p0-o1200.jsonl.gz     # hour 15:00Z, partition 0, first offset 1200

Each line is one Kafka message:

    {"partition": 0, "offset": 1200, "timestamp_ms": 1767366000000, "key": "node-007",
     "value": {<the ScrapeRecord JSON as published>}}

(a value that is not JSON is kept as "value": null plus "value_base64"). `index.json`:

    {"format": "kpp-archive/v1",
     "files": [{"file": "2026-01-02/15/...jsonl.gz", "topic": ..., "partition": 0,
                "hour": "2026-01-02T15:00:00Z", "hour_start_ms": ..., "first_offset": 1200,
                "last_offset": 1439, "records": 240, "min_scrape_ts_ms": ..., "max_scrape_ts_ms": ...,
                "bytes": 81234}, ...]}

Durability and commits (at-least-once into files, exactly-once in the index): a file is
written as `<name>.part`, fsync'ed, renamed, the directory fsync'ed; then index.json is
replaced atomically (write, fsync, rename); only then are offsets committed (manual commits,
group `kpp-archive.<prefix>`). The committed offset of a partition is the first offset of its
oldest still-open file. After a crash, messages are read again from there, and a message
that an indexed file of its (partition, hour) already covers (first ≤ offset ≤ last: a file
receives every message of its hour between its first and last offset) is skipped, so nothing
is archived twice and nothing is lost; `.part` files of the crashed run are removed.

A file is closed when its partition's newest scrape time passed the end of its hour by
`grace` (late scrapes of that hour still go to it until then), after `idle_close` seconds
without a message for it, and at exit. Later stragglers of a closed hour get a file of their
own. One archiver per archive directory and topic.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from contracts.errors import ConfigError
from kafka_io.connection import KafkaConnection

log = logging.getLogger("kpp.archive")

INDEX = "index.json"
FORMAT = "kpp-archive/v1"
HOUR_MS = 3_600_000


def hour_label(hour_start_ms: int) -> str:
    return dt.datetime.fromtimestamp(hour_start_ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:00:00Z")


def archive_line(partition: int, offset: int, timestamp_ms: int, key: bytes | None, value: bytes | None) -> tuple[bytes, int | None]:
    """One archive line and the scrape time found in the value (None when not a scrape)."""
    obj: dict[str, Any] = {"partition": partition, "offset": offset, "timestamp_ms": timestamp_ms,
                           "key": None if key is None else key.decode("utf-8", "replace")}
    scrape_ts = None
    try:
        parsed = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        parsed = None
        obj["value_base64"] = base64.b64encode(value).decode("ascii")
    obj["value"] = parsed
    if isinstance(parsed, dict) and isinstance(parsed.get("scrape_ts_ms"), int):
        scrape_ts = parsed["scrape_ts_ms"]
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE), scrape_ts


def line_problem(obj: Any) -> str | None:
    """What keeps a parsed line from being an archive line `line_value` can publish; None if
    nothing does."""
    if not isinstance(obj, dict):
        return "not a JSON object"
    for name in ("partition", "offset", "timestamp_ms"):
        if not isinstance(obj.get(name), int) or isinstance(obj.get(name), bool):
            return f"{name} is not an integer"
    if obj.get("key") is not None and not isinstance(obj["key"], str):
        return "key is neither a string nor null"
    encoded = obj.get("value_base64")
    if encoded is not None:
        try:
            base64.b64decode(encoded, validate=True)
        except (TypeError, ValueError):  # binascii.Error is a ValueError
            return "value_base64 is not base64"
    return None


def line_value(obj: dict) -> bytes | None:
    """The message value an archive line holds, as bytes to publish (sorted-key JSON, which is
    what every stage of this project writes, so the bytes are the original ones)."""
    if obj.get("value_base64") is not None:
        return base64.b64decode(obj["value_base64"])
    if obj.get("value") is None:
        return None
    return orjson.dumps(obj["value"], option=orjson.OPT_SORT_KEYS)


# -- index -------------------------------------------------------------------------------

class Index:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / INDEX
        self.files: list[dict] = []
        if self.path.exists():
            try:
                data = orjson.loads(self.path.read_bytes())
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{self.path} is not valid JSON: {exc}") from None
            if data.get("format") != FORMAT:
                raise ConfigError(f"{self.path} is not a {FORMAT} index")
            self.files = list(data.get("files", []))
        self._covered: dict[tuple[str, int, int], list[tuple[int, int]]] = {}
        for entry in self.files:
            self._remember(entry)

    def _remember(self, entry: dict) -> None:
        key = (entry["topic"], entry["partition"], entry["hour_start_ms"])
        self._covered.setdefault(key, []).append((entry["first_offset"], entry["last_offset"]))

    def covers(self, topic: str, partition: int, hour_start_ms: int, offset: int) -> bool:
        return any(a <= offset <= b for a, b in self._covered.get((topic, partition, hour_start_ms), ()))

    def add(self, entry: dict) -> None:
        self.files.append(entry)
        self._remember(entry)

    def save(self) -> None:
        self.files.sort(key=lambda e: (e["topic"], e["hour_start_ms"], e["partition"], e["first_offset"]))
        data = orjson.dumps({"format": FORMAT, "files": self.files}, option=orjson.OPT_INDENT_2)
        tmp = self.path.with_name(INDEX + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.root)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- one open file --------------------------------------------------------------------------

@dataclass
class Segment:
    topic: str
    partition: int
    hour_start_ms: int
    first_offset: int
    path: Path
    last_offset: int = -1
    records: int = 0
    min_ts: int | None = None
    max_ts: int | None = None
    last_write: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.part = self.path.with_name(self.path.name + ".part")
        self.raw = open(self.part, "wb")
        self.gz = gzip.GzipFile(fileobj=self.raw, mode="wb", mtime=0, compresslevel=6)

    def write(self, offset: int, line: bytes, scrape_ts: int) -> None:
        self.gz.write(line)
        self.last_offset = offset
        self.records += 1
        self.min_ts = scrape_ts if self.min_ts is None else min(self.min_ts, scrape_ts)
        self.max_ts = scrape_ts if self.max_ts is None else max(self.max_ts, scrape_ts)
        self.last_write = time.monotonic()

    def close(self, root: Path) -> dict:
        """Durably in place; returns its index entry."""
        self.gz.close()
        self.raw.flush()
        os.fsync(self.raw.fileno())
        self.raw.close()
        os.replace(self.part, self.path)
        _fsync_dir(self.path.parent)
        return {"file": self.path.relative_to(root).as_posix(), "topic": self.topic, "partition": self.partition,
                "hour": hour_label(self.hour_start_ms), "hour_start_ms": self.hour_start_ms,
                "first_offset": self.first_offset, "last_offset": self.last_offset, "records": self.records,
                "min_scrape_ts_ms": self.min_ts, "max_scrape_ts_ms": self.max_ts,
                "bytes": self.path.stat().st_size}


# -- the archiver ---------------------------------------------------------------------------

@dataclass
class ArchiveStats:
    records: int = 0
    skipped: int = 0  # already in an indexed file (re-read after a restart)
    files: int = 0


class Archiver:
    def __init__(self, connection: KafkaConnection, topic: str, directory: str | os.PathLike, *,
                 group_id: str, grace_s: float = 300.0, idle_close_s: float = 300.0) -> None:
        self.connection = connection
        self.topic = topic
        self.root = Path(directory)
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.rglob("*.jsonl.gz.part"):
            stale.unlink()  # a crashed run's open files: their messages were not committed
        self.index = Index(self.root)
        self.group_id = group_id
        self.grace_ms = int(grace_s * 1000)
        self.idle_close_s = idle_close_s
        self.open: dict[tuple[int, int], Segment] = {}  # (partition, hour start) -> file
        self.max_ts: dict[int, int] = {}
        self.stats = ArchiveStats()

    def _path(self, partition: int, hour_start_ms: int, offset: int) -> Path:
        day, hour = hour_label(hour_start_ms)[:10], hour_label(hour_start_ms)[11:13]
        return self.root / day / hour / f"{self.topic}-p{partition}-o{offset}.jsonl.gz"

    def add(self, partition: int, offset: int, timestamp_ms: int, key: bytes | None, value: bytes | None) -> None:
        line, scrape_ts = archive_line(partition, offset, timestamp_ms, key, value)
        ts = timestamp_ms if timestamp_ms is not None and timestamp_ms >= 0 else (scrape_ts or 0)
        hour = ts - ts % HOUR_MS
        if self.index.covers(self.topic, partition, hour, offset):
            self.stats.skipped += 1
            return
        seg = self.open.get((partition, hour))
        if seg is None:
            seg = self.open[(partition, hour)] = Segment(self.topic, partition, hour, offset,
                                                         self._path(partition, hour, offset))
        seg.write(offset, line, scrape_ts if scrape_ts is not None else ts)
        self.stats.records += 1
        if ts > self.max_ts.get(partition, -1):
            self.max_ts[partition] = ts

    def due(self, everything: bool = False) -> list[tuple[int, int]]:
        now = time.monotonic()
        return [k for k, seg in self.open.items()
                if everything or self.max_ts.get(seg.partition, 0) >= seg.hour_start_ms + HOUR_MS + self.grace_ms
                or now - seg.last_write >= self.idle_close_s]

    def close(self, keys: list[tuple[int, int]]) -> None:
        if not keys:
            return
        for k in sorted(keys):
            seg = self.open.pop(k)
            entry = seg.close(self.root)
            self.index.add(entry)
            self.stats.files += 1
            log.info("archived %s: %d records, offsets %d..%d", entry["file"], entry["records"],
                     entry["first_offset"], entry["last_offset"])
        self.index.save()

    def commit_offsets(self, positions: dict[int, int]) -> dict[int, int]:
        """Per partition: the first offset not yet durably archived."""
        out = {}
        for p, pos in positions.items():
            firsts = [seg.first_offset for (q, _h), seg in self.open.items() if q == p]
            out[p] = min(firsts) if firsts else pos
        return out

    def run(self, stop: threading.Event | None = None, *, until_now: bool = False,
            on_progress: Callable[[ArchiveStats], None] | None = None) -> ArchiveStats:
        from kafka_io.reader import COMMITTED, END, FOLLOW, SyncRangeReader

        stop = stop or threading.Event()
        topic = self.topic
        # resumes from the group's commits (from the beginning without any); --until-now stops
        # at the end offsets of the start
        with SyncRangeReader(self.connection, topic, start=COMMITTED, stop=END if until_now else FOLLOW,
                             group_id=self.group_id, client_id="kpp-archive") as reader:
            partitions = sorted(p for _t, p in reader.ranges)
            committed_at: dict[int, int] = {}
            last_check = time.monotonic()
            while not stop.is_set():
                for m in reader.read(0.5):
                    self.add(m.partition, m.offset, m.timestamp_ms, m.key, m.value)
                finished = reader.done
                if finished or time.monotonic() - last_check >= 1.0:
                    last_check = time.monotonic()
                    self.close(self.due(everything=finished))
                    offsets = self.commit_offsets({p: reader.position(topic, p) for p in partitions})
                    changed = {p: o for p, o in offsets.items() if committed_at.get(p) != o}
                    if changed:
                        reader.commit({(topic, p): o for p, o in changed.items()})
                        committed_at.update(changed)
                    if on_progress:
                        on_progress(self.stats)
                if finished:
                    break
            # stopping (SIGTERM) or finished: what is open is closed and committed too
            positions = {p: reader.position(topic, p) for p in partitions}  # never past the range's end
            self.close(list(self.open))
            reader.commit({(topic, p): o for p, o in self.commit_offsets(positions).items()})
        return self.stats
